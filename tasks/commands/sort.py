"""`wisc-sort sort` (and `segments`): set up each sorting, print what will be sorted, build the DAG."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from tasks.core.layout import SortingDir
from tasks.core.locks import hold_sortings, notes
from tasks.execution.build import build, executor_name
from tasks.execution.executors import get_executor
from tasks.inputs.raw_check import check_unchanged
from tasks.inputs.resolve import Resolved, Target, resolve, sorting_dir
from tasks.inputs.segments import format_summary
from tasks.options.sorting import load_sorting_options
from tasks.settings import Paths
from tasks.steps.pipeline import Pipeline, Preprocess
from tasks.steps.registry import STEPS
from tasks.steps.setup import prepare_sorting, read_sorting_options


def print_plan(item: Resolved, note: str = "") -> None:
    """The lab's check block: raw recording summary, first file, segment table."""
    print(f"== {item.target.subject} {item.target.probe}: {item.sorting.root}{note}")
    print(format_summary(item.segments))


def options_in_force(sorting: SortingDir, opts_file: Path | None, replace: bool) -> dict:
    """The options a run will use: the sorting's opts.yaml, or the file given for a first run or a replace.
    A file broken by hand is a one-line error here, before anything runs."""
    if not replace and sorting.opts.exists():
        return read_sorting_options(sorting)
    if opts_file is None or not Path(opts_file).exists():
        return {}  # prepare_sorting names the missing file
    return load_sorting_options(opts_file).data


def run_sortings(paths: Paths, targets: list[Target], args: argparse.Namespace) -> int:
    if not args.refresh_segments:  # raw files changed under a sorting: said first, whatever else changed
        for target in targets:
            check_unchanged(sorting_dir(paths, target))
    resolved = [resolve(paths, t) for t in targets]  # every input checked before anything is written
    executor = executor_name(args)
    steps = [s for s in STEPS if s != "sort"] if args.prepro_only else list(STEPS)
    in_force = [options_in_force(item.sorting, args.opts, args.replace_opts) for item in resolved]
    get_executor(executor).check(steps, in_force)  # the engine up, the images there
    with hold_sortings([item.sorting.root for item in resolved]) as held:  # one command per sorting (exit 10)
        for line in notes(held):
            print(line)
        ok = _prepare_and_build(resolved, targets, args, executor)
    for item in resolved:
        plot = item.sorting.preprocessing / "motion_summary.png"
        if plot.exists():
            print(f"motion summary: {plot}")
        if item.sorting.report.exists():
            print(f"report: {item.sorting.report}")
    return 0 if ok else 1


def _prepare_and_build(
    resolved: list[Resolved], targets: list[Target], args: argparse.Namespace, executor: str
) -> bool:
    for item in resolved:
        report = prepare_sorting(item, args.opts, args.replace_opts, args.refresh_segments)
        print_plan(item, " (new)" if report.created else "")
        for message in report.messages:
            print(message)
    common = {"n_jobs": args.n_jobs, "executor": executor}
    if not args.prepro_only:
        common["discard_curation"] = args.discard_curation
    root_task = Preprocess if args.prepro_only else Pipeline
    return build([root_task(**asdict(t), **common) for t in targets], args)
