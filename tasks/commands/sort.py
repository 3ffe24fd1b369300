"""Drives `wisc-sort sort` and `demo`: set up each sorting, print what will be sorted, build the DAG."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path

import luigi
import luigi.configuration
import yaml

from tasks.core.layout import SortingDir
from tasks.execution.executors import get_executor
from tasks.execution.gpu import gpu_resource_name, setting, visible_devices
from tasks.execution.scheduler import client_scheduler_url
from tasks.inputs.resolve import Resolved, Target, resolve
from tasks.inputs.segments import format_summary
from tasks.settings import Paths, export_paths
from tasks.steps.pipeline import Pipeline, Preprocess
from tasks.steps.registry import STEPS
from tasks.steps.setup import prepare_sorting

OPTS_DIR = Path(__file__).resolve().parents[1] / "opts"


def print_plan(item: Resolved, note: str = "") -> None:
    """The lab's check block: raw recording summary, first file, segment table."""
    print(f"== {item.target.subject} {item.target.probe}: {item.sorting.root}{note}")
    print(format_summary(item.segments))


def set_missing(section: str, values: dict[str, object]) -> list[tuple[str, str]]:
    """Set the options luigi.cfg leaves unset; returns what was added, so a caller can take it back."""
    config = luigi.configuration.get_config()
    if not config.has_section(section):
        config.add_section(section)
    added = []
    for name, value in values.items():
        if not config.has_option(section, name):
            config.set(section, name, str(value))
            added.append((section, name))
    return added


def ensure_local_resources() -> list[tuple[str, str]]:
    """With --local-scheduler the client's [resources] are the limits; an undeclared one has limit 1."""
    return set_missing(
        "resources",
        {
            "cpu": os.cpu_count() or 1,
            "disk_write": 1,
            gpu_resource_name(): int(setting("gpu_capacity")) * len(visible_devices()),
        },
    )


def build(tasks: list[luigi.Task], args: argparse.Namespace) -> bool:
    """Run the DAG; each failure is reported as one line (the step's log has the details)."""
    failures: list[str] = []

    @luigi.Task.event_handler(luigi.Event.FAILURE)
    def _collect(task: luigi.Task, exception: BaseException) -> None:
        failures.append(f"{task.task_family} failed: {exception}")

    # Without keep_alive a worker whose sort waits for GPU units exits at once (LUIGI.md).
    added = set_missing("worker", {"keep_alive": "true"})
    kwargs: dict = {"workers": args.workers, "detailed_summary": True, "log_level": "CRITICAL"}
    scheduler_url = client_scheduler_url(args)
    if scheduler_url:
        kwargs["scheduler_url"] = scheduler_url
        reenable_for_rerun(scheduler_url, tasks)
    else:
        added += ensure_local_resources()
        kwargs["local_scheduler"] = True
    try:
        result = luigi.build(tasks, **kwargs)
    finally:
        luigi.Task.remove_event_handler(luigi.Event.FAILURE, _collect)
        for section, name in added:  # this run's defaults, not the process's: later runs read luigi.cfg again
            luigi.configuration.get_config().remove_option(section, name)
    print(result.summary_text)
    for line in failures:
        print(f"wisc-sort: error: {' '.join(line.split())}", file=sys.stderr)
    return result.status in (luigi.LuigiStatusCode.SUCCESS, luigi.LuigiStatusCode.SUCCESS_WITH_RETRY)


def reenable_for_rerun(scheduler_url: str, tasks: list[luigi.Task]) -> None:
    """luigid disables a failed task (retry_count = 1) for a day; running the command again is a new try."""
    from tasks.execution.scheduler import reenable_disabled

    try:
        ids = reenable_disabled(scheduler_url, tasks)
    except OSError:
        return  # luigid unreachable: luigi.build reports it
    if ids:
        print(f"re-enabled {len(ids)} task(s) that failed in an earlier run: {', '.join(ids)}")


def executor_name(args: argparse.Namespace) -> str:
    return args.executor or luigi.configuration.get_config().get("wisc", "executor", "local")


def options_in_force(sorting: SortingDir, opts_file: Path | None, replace: bool) -> dict:
    """The options a run will use: the sorting's opts.yaml, or the file given for a first run or a replace."""
    source = opts_file if (replace or not sorting.opts.exists()) else sorting.opts
    if source is None or not Path(source).exists():
        return {}  # prepare_sorting names the missing file
    return yaml.safe_load(Path(source).read_text()) or {}


def run_sortings(paths: Paths, targets: list[Target], args: argparse.Namespace) -> int:
    resolved = [resolve(paths, t) for t in targets]  # every input checked before anything is written
    executor = executor_name(args)
    steps = [s for s in STEPS if s != "sort"] if args.prepro_only else list(STEPS)
    in_force = [options_in_force(item.sorting, args.opts, args.replace_opts) for item in resolved]
    get_executor(executor).check(steps, in_force)  # the engine up, the images there
    roots = []
    for item in resolved:
        report = prepare_sorting(item, args.opts, args.replace_opts, args.refresh_segments)
        print_plan(item, " (new)" if report.created else "")
        for message in report.messages:
            print(message)
        roots.append(item.sorting)
    common = {"n_jobs": args.n_jobs, "executor": executor}
    if not args.prepro_only:
        common["discard_curation"] = args.discard_curation
    root_task = Preprocess if args.prepro_only else Pipeline
    tasks = [
        root_task(
            **asdict(t),
            **common,
        )
        for t in targets
    ]
    ok = build(tasks, args)
    for sorting in roots:
        plot = sorting.preprocessing / "motion_summary.png"
        if plot.exists():
            print(f"motion summary: {plot}")
    return 0 if ok else 1


def run_demo(args: argparse.Namespace) -> int:
    """Generate (or reuse) the demo world, then run the pipeline on it as a user would."""
    from containers.demo import world as demo_world
    from tasks.settings import load_paths

    folder = args.folder.resolve()
    if args.overwrite or not (folder / demo_world.MARKER).exists():
        print(f"writing the demo world ({args.duration:.0f} s of 384-channel NP1.0 data) to {folder} ...")
        demo_world.write_demo_world(folder, duration_s=args.duration, overwrite=args.overwrite)
    else:
        print(f"reusing the demo world in {folder} (--overwrite to regenerate)")
    paths = load_paths(
        projects_file=folder / "projects.yaml",
        subjects_dir=folder / "subjects",
        exclusions_project="shared",
        cache_file=folder / "subjects" / "file_table_cache.parquet",
    )
    export_paths(paths)
    world = demo_world
    target = Target("shared_ssd", world.EXPERIMENT, world.ALIAS, world.SUBJECT, world.PROBE)
    run_args = argparse.Namespace(
        **vars(args),
        opts=OPTS_DIR / "sorting_demo.yaml",
        replace_opts=False,
        refresh_segments=False,
        prepro_only=False,
        discard_curation=False,
    )
    status = run_sortings(paths, [target], run_args)
    if status == 0:
        report_demo_truth(folder, resolve(paths, target).sorting)
        from tasks.steps.postpro import run_demo_postpro

        status = run_demo_postpro(paths, target, run_args)
    return status


def report_demo_truth(folder: Path, sorting: SortingDir) -> None:
    """Compare what the pipeline found with the demo world's ground truth."""
    import numpy as np

    from containers.motion.stages import load_motion, motion_error_um

    truth = np.load(folder / "ground_truth" / "motion.npz")
    estimated = load_motion(sorting.preprocessing / "motion_non_rigid_clean.npz")
    error = motion_error_um(estimated, truth["displacement_um"], truth["times_s"], truth["depths_um"])
    print(f"motion vs ground truth: RMS error {error:.2f} um (true drift: 25 um peak to peak zigzag)")

    from containers.demo.ground_truth import compare_to_ground_truth, read_demo_ground_truth

    frames, units, rate, snr = read_demo_ground_truth(folder / "ground_truth")
    sorter = (yaml.safe_load(sorting.opts.read_text()).get("sorting") or {}).get("sorter_name")
    _, summary = compare_to_ground_truth(sorting.sorter_output, frames, units, rate, snr)
    print(f"sorting ({sorter}) vs ground truth: {summary}")
