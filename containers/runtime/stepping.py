"""Runs one step inside the step program: progress, thread caps, outputs, then the manifest last."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from containers.runtime.progress import ProgressFile, install_tqdm_progress
from containers.runtime.threads import cap_threads_runtime
from containers.runtime.trace import Trace
from tasks.core import atomic
from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.core.manifest import now, write_manifest
from tasks.inputs.segments import kept_hours
from tasks.steps.registry import FAMILIES, STEPS, expected, load_inputs, step_module


@dataclass(frozen=True)
class StepSettings:
    """What the planning layer resolved on the host and passed as flags (python -m containers --help)."""

    n_jobs: int = 1
    disk_reserve_bytes: int = 0
    allow_uncurated: bool = False
    environment: str = ""  # what the signature pins (docker:<image id>); "" accepts any environment
    records: dict[str, str] = field(default_factory=dict)  # handed over by the Luigi task: into the manifest
    device: str = "cpu"  # where the engine computes (cpu, cuda:N)


@dataclass
class StepContext:
    sorting: SortingDir
    opts: dict
    settings: StepSettings
    progress: ProgressFile
    extra: dict = field(default_factory=dict)  # what the step wants recorded in its manifest
    engine: str = "spikeinterface"  # who computes the chain this step reads (set by containers.steps.common)

    @property
    def n_jobs(self) -> int:
        return self.settings.n_jobs

    @property
    def job_kwargs(self) -> dict:
        # One worker process per job; each worker's BLAS/numba get one thread (SpikeInterface's default).
        # The engine's recording computes with n_jobs torch threads in this process: one SpikeInterface job.
        n_jobs = 1 if self.engine == "torch" else self.n_jobs
        return {"n_jobs": n_jobs, "chunk_duration": "1s", "progress_bar": True}


def _module(step: str):
    """Imported lazily, alone (each import costs ~0.8 s of a step's start), after the progress hook."""
    return importlib.import_module(step_module(step))


def run_step(step: str, sorting_dir: Path, settings: StepSettings) -> None:
    sorting = SortingDir(Path(sorting_dir).resolve())
    if step.split(".", 1)[0] in FAMILIES and "." in step:
        return _module(step).run_family(step, sorting, settings)  # e.g. postpro.<NAME>: stages of its own
    if step not in STEPS:
        raise UserError(f"unknown step {step!r}; known steps: {', '.join(STEPS)}")
    if not sorting.opts.exists() or not sorting.segments.exists():
        raise UserError(
            f"{sorting.root}: no opts.yaml/segments.htsv; run `wisc-sort sort` to set up the sorting"
        )
    exp = expected(sorting, step, settings.environment)
    opts, _ = load_inputs(sorting)
    sorting.pipeline.mkdir(parents=True, exist_ok=True)
    for rel in STEPS[step].outputs:
        atomic.remove_stale_tmp(sorting.path(rel).parent)
    hours = kept_hours(sorting.segments)
    label = "sorting" if step == "sort" else step  # "peaks: 41% of 23.4 h", "sorting: batch 812/2400"
    progress = ProgressFile(sorting.progress(step), label, hours=hours, counts=step == "sort")
    install_tqdm_progress(progress)  # before spikeinterface is imported by the step module
    module = _module(step)
    cap_threads_runtime(settings.n_jobs)
    ctx = StepContext(sorting, opts, settings, progress)
    started = now()
    clock = Trace.start()
    progress.update(0.0, "starting", force=True)
    failure = sorting.failure(step)
    try:
        module.run(ctx)
    except BaseException as err:  # the attempt's trace, for the report's timeline; the error goes on
        atomic.write_json(
            failure,
            {
                "step": step,
                "started": started,
                "finished": now(),
                "error": f"{type(err).__name__}: {err}",
                "trace": clock.record(1, settings.device),
            },
        )
        raise
    failure.unlink(missing_ok=True)
    progress.update(100.0, "done", force=True)
    # What the Luigi task handed over (GPU lease time, units, image): so the order of events can be checked.
    devices = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    trace = {"trace": clock.record(0, settings.device)}
    write_manifest(
        sorting,
        exp,
        started,
        {"n_jobs": settings.n_jobs, **settings.records, **devices, **ctx.extra, **trace},
    )
