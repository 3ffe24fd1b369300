"""`wisc-sort sort` (and `segments`): set up each sorting, print what will be sorted, build the DAG."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import yaml

from tasks.core.layout import SortingDir
from tasks.execution.build import build, executor_name
from tasks.execution.executors import get_executor
from tasks.inputs.resolve import Resolved, Target, resolve
from tasks.inputs.segments import format_summary
from tasks.settings import Paths
from tasks.steps.pipeline import Pipeline, Preprocess
from tasks.steps.registry import STEPS
from tasks.steps.setup import prepare_sorting


def print_plan(item: Resolved, note: str = "") -> None:
    """The lab's check block: raw recording summary, first file, segment table."""
    print(f"== {item.target.subject} {item.target.probe}: {item.sorting.root}{note}")
    print(format_summary(item.segments))


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
        if sorting.report.exists():
            print(f"report: {sorting.report}")
    return 0 if ok else 1
