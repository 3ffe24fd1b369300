"""The postprocessing step family `postpro.<NAME>`: every stage of one set, each with its own manifest."""

from __future__ import annotations

from containers.postpro.run import run_postpro
from containers.runtime.progress import ProgressFile, install_tqdm_progress
from containers.runtime.stepping import StepSettings
from containers.runtime.threads import cap_threads_runtime
from tasks.core import atomic
from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.phy.curation import require_curated
from tasks.steps.postpro_stages import PostproSet


def run_family(step: str, sorting: SortingDir, settings: StepSettings) -> None:
    """`python -m containers postpro.<NAME> <sorting_dir>`: thread caps, progress, stale stages."""
    n_jobs = settings.n_jobs
    pset = PostproSet(sorting, step.split(".", 1)[1])
    if not sorting.opts.exists() or not sorting.segments.exists():
        raise UserError(f"{sorting.root}: no opts.yaml/segments.htsv; run `wisc-sort sort` first")
    require_curated(sorting.sorter_output, settings.allow_uncurated)  # the gate, again
    sorting.pipeline.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_tmp(pset.folder)
    progress = ProgressFile(sorting.progress(step), f"postprocessing {pset.name}")
    install_tqdm_progress(progress)
    cap_threads_runtime(n_jobs)
    job_kwargs = {"n_jobs": n_jobs, "chunk_duration": "1s", "progress_bar": True}
    progress.update(0.0, "starting", force=True)
    run_postpro(pset, n_jobs, progress, job_kwargs, settings.environment)
    progress.update(100.0, "done", force=True)
