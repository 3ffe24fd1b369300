"""Runs one step inside the step program: progress, thread caps, outputs, then the manifest last."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from containers.runtime.progress import ProgressFile, install_tqdm_progress
from containers.runtime.threads import cap_threads_runtime
from tasks.core import atomic
from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.core.manifest import now, write_manifest
from tasks.inputs.segments import kept_hours
from tasks.steps.registry import PREPRO_STEPS, STEPS, expected, load_inputs


@dataclass
class StepContext:
    sorting: SortingDir
    opts: dict
    n_jobs: int
    progress: ProgressFile
    extra: dict = field(default_factory=dict)  # what the step wants recorded in its manifest

    @property
    def job_kwargs(self) -> dict:
        # One worker process per job; each worker's BLAS/numba get one thread (SpikeInterface's default).
        return {"n_jobs": self.n_jobs, "chunk_duration": "1s", "progress_bar": True}


StepFunction = Callable[[StepContext], None]


# Step -> the module holding its function (imported alone: each import costs ~0.8 s of a step's start).
STEP_MODULES = {
    **{name: "containers.steps.prepro" for name in PREPRO_STEPS},
    "recording_dat": "containers.steps.recording_dat",
    "sort": "containers.sorters.run",
    "postpro": "containers.postpro.run",  # `postpro.<NAME>`: every stage of one postprocessing set
}


def step_function(step: str) -> StepFunction:
    """Imported lazily: after thread caps and the progress hook are in place."""
    import importlib

    module = importlib.import_module(STEP_MODULES[step])
    functions = getattr(module, "STEP_FUNCTIONS", None) or {step: getattr(module, step)}
    return functions[step]


def run_step(step: str, sorting_dir: Path, n_jobs: int) -> None:
    if step.startswith("postpro."):
        from containers.postpro.run import run_postpro_step

        return run_postpro_step(step, sorting_dir, n_jobs)
    sorting = SortingDir(Path(sorting_dir).resolve())
    if step not in STEPS:
        raise UserError(f"unknown step {step!r}; known steps: {', '.join(STEPS)}")
    if not sorting.opts.exists() or not sorting.segments.exists():
        raise UserError(
            f"{sorting.root}: no opts.yaml/segments.htsv; run `wisc-sort sort` to set up the sorting"
        )
    exp = expected(sorting, step, os.environ.get("WISC_ENVIRONMENT", ""))
    opts, _ = load_inputs(sorting)
    sorting.pipeline.mkdir(parents=True, exist_ok=True)
    for rel in STEPS[step].outputs:
        atomic.remove_stale_tmp(sorting.path(rel).parent)
    hours = kept_hours(sorting.segments)
    label = "sorting" if step == "sort" else step  # "peaks: 41% of 23.4 h", "sorting: batch 812/2400"
    progress = ProgressFile(sorting.progress(step), label, hours=hours, counts=step == "sort")
    install_tqdm_progress(progress)  # before spikeinterface is imported by the step functions
    function = step_function(step)
    cap_threads_runtime(n_jobs)
    ctx = StepContext(sorting, opts, n_jobs, progress)
    started = now()
    progress.update(0.0, "starting", force=True)
    function(ctx)
    progress.update(100.0, "done", force=True)
    # What the Luigi task handed over (GPU lease time, units): recorded so the order of events can be checked.
    handed = {k[5:].lower(): v for k, v in os.environ.items() if k.startswith("WISC_LEASE_")}
    devices = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if os.environ.get("WISC_IMAGE"):  # name@id of the image this ran in (docker executor)
        devices["image"] = os.environ["WISC_IMAGE"]
    write_manifest(sorting, exp, started, {"n_jobs": n_jobs, **handed, **devices, **ctx.extra})
