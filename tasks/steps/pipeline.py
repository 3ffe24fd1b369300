"""The Luigi DAG: one small task per step; targets are the sorting directory's files, checked by manifest."""

from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path

import luigi
import yaml

from tasks.core import atomic, manifest
from tasks.core.errors import UserError, warn
from tasks.core.layout import SortingDir
from tasks.core.manifest import is_complete, supersede
from tasks.execution.executors import StepFailed, get_executor, step_flags, step_lock
from tasks.execution.gpu import GpuTaskMixin, engine_device, gpu_units
from tasks.inputs.raw_check import check_unchanged
from tasks.inputs.resolve import Target, resolve
from tasks.inputs.segments import kept_hours as segments_kept_hours
from tasks.settings import load_paths
from tasks.steps.registry import CURATION_FILES, STEPS, load_inputs, prepro_steps
from tasks.steps.setup import prepare_sorting


@lru_cache(maxsize=64)
def _sorting_dir(projects_file: Path, stamp: int, target: Target) -> SortingDir:
    from tasks.inputs.resolve import sorting_dir

    return sorting_dir(load_paths(projects_file=projects_file), target)


class StepTarget(luigi.Target):
    """A file of the sorting directory that exists for Luigi only while its step's manifest is current."""

    def __init__(self, sorting: SortingDir, step: str, relative: str, environment: str | None = None) -> None:
        self.sorting, self.step, self.relative, self.environment = sorting, step, relative, environment
        self.path = str(sorting.path(relative))

    def exists(self) -> bool:
        return is_complete(self.sorting, self.step, self.environment)


@lru_cache(maxsize=256)
def _kept_hours(path: Path, stamp: int) -> float:
    return segments_kept_hours(path) or 0.0


def kept_hours(sorting: SortingDir) -> float:
    """Hours of the sorted recording, from segments.htsv (cached: Luigi asks on every scheduling pass)."""
    if not sorting.segments.exists():
        return 0.0
    return _kept_hours(sorting.segments, sorting.segments.stat().st_mtime_ns)


def check_curation(sorting: SortingDir, discard: bool) -> None:
    """A rerun sort would leave phy's labels beside clusters they do not describe: refuse, unless told."""
    found = [name for name in CURATION_FILES if (sorting.sorter_output / name).exists()]
    if not found:
        return
    if not discard:
        why = "options or inputs changed"
        if manifest.status(sorting, "sort") == "partial":  # damaged outputs: said, never silently reused
            why = f"outputs are damaged ({manifest.describe_partial(sorting, 'sort')})"
        raise UserError(
            f"{sorting.sorter_output}: holds phy curation ({', '.join(found)}) of a sort whose {why}; "
            "move it away, or rerun with --discard-curation to move it into si_output.bak/"
        )
    backup = sorting.root / "si_output.bak" / f"curation-{atomic.backup_stamp()}"
    backup.mkdir(parents=True, exist_ok=True)
    for name in found:
        shutil.move(sorting.sorter_output / name, backup / name)


class SortingTask(luigi.Task):
    """Parameters shared by every task of one sorting: project, experiment, alias, subject, probe."""

    project = luigi.Parameter(description="project holding the sorting (e.g. shared_ssd)")
    experiment = luigi.Parameter()
    alias = luigi.Parameter(default="full")
    subject = luigi.Parameter()
    probe = luigi.Parameter()
    opts = luigi.OptionalPathParameter(
        default=None,
        significant=False,
        description="options file for a first run (the sorting's copy rules after)",
    )
    n_jobs = luigi.IntParameter(default=1, significant=False)
    executor = luigi.Parameter(default="local", significant=False)
    # Disabled after one failure: with keep_alive, luigi's default (999999999 retries every 15 min)
    # would keep a worker waiting forever on a step that needs the user (bad input, curation).
    retry_count = 1

    @property
    def target(self) -> Target:
        return Target(self.project, self.experiment, self.alias, self.subject, self.probe)

    @property
    def sorting(self) -> SortingDir:
        paths = load_paths()
        stamp = paths.projects_file.stat().st_mtime_ns if paths.projects_file.exists() else 0
        return _sorting_dir(paths.projects_file, stamp, self.target)

    def options(self) -> dict:
        """The sorting's opts.yaml, or the first-run options file before setup has run."""
        if self.sorting.opts.exists() and self.sorting.segments.exists():
            return load_inputs(self.sorting)[0]  # cached: Luigi asks on every scheduling pass
        source = self.sorting.opts if self.sorting.opts.exists() else self.opts
        if source is None or not Path(source).exists():
            return {}
        return yaml.safe_load(Path(source).read_text()) or {}

    def shared(self) -> dict:
        return {name: getattr(self, name) for name, _ in SortingTask.get_params()}


class SetupSorting(SortingTask):
    """opts.yaml, exclusions.htsv and segments.htsv: written before anything is computed."""

    def output(self):
        return [luigi.LocalTarget(str(p)) for p in (self.sorting.opts, self.sorting.segments)]

    def run(self):
        prepare_sorting(resolve(load_paths(), self.target), self.opts)


RAW_PHASES = ("prepro", "write")  # the steps that read the raw files


class StepTask(GpuTaskMixin, SortingTask):
    """Runs `python -m containers <step>` through the executor; complete only when the manifest says so.

    CPU units: n_jobs. GPU units: an engine step whose chain runs on CUDA takes 1 (through the same lease and
    lock as the sort, so the scheduler's arithmetic holds); the sort takes its sorter's units.
    """

    step: str = ""
    resources_per_job = {"cpu": 1}

    @property
    def resources(self) -> dict[str, int]:
        cpu = {name: units * self.n_jobs for name, units in self.resources_per_job.items()}
        return get_executor(self.executor).luigi_resources({**cpu, **super().resources})

    def gpu_units_needed(self) -> int:
        return 1 if STEPS[self.step].engine and engine_device(self.options()) == "cuda" else 0

    def requires(self):
        upstream = STEPS[self.step].upstream(self.options())
        return [
            SetupSorting(**self.shared()) if u == "segments" else task_class(u)(**self.shared())
            for u in upstream
        ]

    def output(self):
        environment = get_executor(self.executor).environment(self.step, self.sorting)
        return {
            rel: StepTarget(self.sorting, self.step, rel, environment) for rel in STEPS[self.step].outputs
        }

    def _progress(self, percent: float, message: str) -> None:
        self.set_progress_percentage(round(percent))
        self.set_status_message(message)

    def run(self):
        self.run_leased()

    def run_leased(self, what: str = "computing", always: bool = False) -> None:
        """Execute with the GPU units this step takes, the device handed as flags. No units: no lease, unless
        `always` (the sort records its 0-unit lease)."""
        if not self.gpu_units_needed() and not always:
            self.execute(device="cpu")
            return
        if get_executor(self.executor).schedules_gpus:  # SLURM grants the units: no lease on this host
            units = self.gpu_units_needed()
            records = {"lease_gpu_units": str(units), "lease_at": manifest.now()}
            self.execute(records=records, device="cuda:0" if units else "cpu", gpu_units=units)
            return
        with self.gpu_lease() as lease:
            records = {"lease_gpu_units": str(lease.units), "lease_at": manifest.now()}
            if lease.device_id is not None:
                self.set_status_message(f"{what} on GPU {lease.device_id} ({lease.units} units)")
            # Only the leased device is visible to the step (inside docker too): it is cuda:0 there.
            device = "cuda:0" if lease.device_id is not None else "cpu"
            self.execute(extra_env=lease.env(), records=records, device=device)

    def execute(
        self,
        extra_env: dict[str, str] | None = None,
        records: dict[str, str] | None = None,
        device: str = "cpu",
        gpu_units: int = 0,
    ) -> None:
        """Run the step program with the host's settings as flags; `records` go into its manifest;
        `gpu_units` for an executor that asks its own scheduler for them (SLURM)."""
        sorting = self.sorting
        if self.set_tracking_url is not None:  # the web view's "track progress" button opens the log
            self.set_tracking_url(sorting.log(self.step).as_uri())
        # Held from the look at old outputs to the manifest: another process running this step is never
        # disturbed (its outputs are not moved away under it) and the step never runs twice at once.
        with step_lock(sorting, self.step):
            self._supersede_and_run(sorting, extra_env, records, device, gpu_units)

    def _supersede_and_run(
        self,
        sorting: SortingDir,
        extra_env: dict[str, str] | None,
        records: dict[str, str] | None,
        device: str,
        units: int,
    ) -> None:
        if STEPS[self.step].phase in RAW_PHASES:  # `luigi --module` skips wisc-sort's setup check
            check_unchanged(sorting)
        state = manifest.status(sorting, self.step)
        detail = manifest.describe_partial(sorting, self.step) if state == "partial" else ""
        backup = supersede(sorting, self.step)
        if backup is not None:
            what = f"partial outputs of an interrupted run ({detail})" if detail else f"{state} outputs"
            warn(f"{self.step} of {sorting.root}: {what} moved to {backup}; rerunning")
            self.set_status_message(f"{what} moved to {backup}")
        try:
            get_executor(self.executor).run(
                self.step,
                sorting,
                self.n_jobs,
                on_progress=self._progress,
                extra_env=extra_env,
                flags=step_flags(records=records, device=device),
                gpu_units=units,
            )
        except StepFailed:
            # Partial outputs are moved aside, never deleted: the next run starts clean.
            supersede(sorting, self.step)
            raise
        if not is_complete(sorting, self.step):
            state = manifest.status(sorting, self.step)
            raise RuntimeError(
                f"step {self.step} exited 0 but its outputs are {state}; log: {sorting.log(self.step)}"
            )
        if self.set_tracking_url is not None and sorting.report.exists():  # done: the page of the sorting
            self.set_tracking_url(sorting.report.as_uri())

    def on_failure(self, exception):
        """Short, for the scheduler's web view: what failed, why, where the log is."""
        text = " ".join(str(exception).split())[:400]
        log = self.sorting.log(self.step)
        where = "" if "log:" in text or not log.exists() else f"; log: {log}"
        return f"{self.step} failed for {self.sorting.root}: {type(exception).__name__}: {text}{where}"


class DiskWriteTask(StepTask):
    """CPU and disk only (recording.dat): the GPU is not held while hours of preprocessing are written."""

    @property
    def resources(self) -> dict[str, int]:
        # One big sequential write per drive at a time (an undeclared resource has limit 1).
        return {**super().resources, "disk_write": 1}


class SortTask(StepTask):
    """The sorter on recording.dat; takes GPU units by recording class, and a device from the host lock."""

    discard_curation = luigi.BoolParameter(
        default=False, significant=False, description="rerun a stale sort even though phy curation exists"
    )

    def gpu_units_needed(self) -> int:
        sorter = (self.options().get("sorting") or {}).get("sorter_name", "")
        return gpu_units(sorter, kept_hours(self.sorting))

    def run(self):
        check_curation(self.sorting, self.discard_curation)
        self.run_leased("sorting", always=True)  # a CPU sorter's manifest says it held 0 units too


BASES: dict[str, type[StepTask]] = {"cpu": StepTask, "disk_write": DiskWriteTask, "gpu": SortTask}


def task_class(step: str) -> type[StepTask]:
    """The Luigi task of a registered step, made from its declaration once (named as the registry says)."""
    if step not in TASKS:
        spec = STEPS[step]
        cls = type(
            spec.task_name, (BASES[spec.kind],), {"step": step, "__doc__": spec.description.capitalize()}
        )
        cls.__module__ = __name__
        globals()[cls.__name__] = cls  # importable by name: pickling, `luigi --module tasks.dag <Task>`
        TASKS[step] = cls
    return TASKS[step]


TASKS: dict[str, type[StepTask]] = {}
for _name in list(STEPS):
    task_class(_name)
Sort = TASKS["sort"]


class Preprocess(SortingTask, luigi.WrapperTask):
    """Everything before the sort (`--prepro-only`): peaks, motion, cleaning, the plot, the probe."""

    def requires(self):
        return [task_class(step)(**self.shared()) for step in prepro_steps(self.options())]


class Pipeline(SortingTask, luigi.WrapperTask):
    """Everything of a sorting as far as the pipeline goes: preprocessing, recording.dat, the sort."""

    discard_curation = Sort.discard_curation

    def requires(self):
        return [Preprocess(**self.shared()), Sort(**self.shared(), discard_curation=self.discard_curation)]
