"""`wisc-sort postpro`: check every target (options, hypnogram, curation) before anything runs, then run."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from tasks.core.layout import SortingDir
from tasks.core.locks import hold_sortings, notes
from tasks.execution.build import build, executor_name
from tasks.execution.executors import get_executor
from tasks.inputs.resolve import Target, sorting_dir
from tasks.phy.curation import require_curated
from tasks.settings import Paths
from tasks.steps.postpro import Postpro, resolve_hypnogram, setup_postpro
from tasks.steps.postpro_state import postpro_status


def run_postpro_cli(paths: Paths, targets: list[Target], args: argparse.Namespace) -> int:
    """`wisc-sort postpro`: check every target (options, hypnogram, curation) before anything runs."""
    get_executor(executor_name(args)).check(["postpro"], [{}])  # the engine up, the si image there
    sortings = [sorting_dir(paths, target) for target in targets]
    with hold_sortings([s.root for s in sortings]) as held:  # one command per sorting (exit 10)
        for line in notes(held):
            print(line)
        return _run_postpro(sortings, targets, args)


def _run_postpro(sortings: list[SortingDir], targets: list[Target], args: argparse.Namespace) -> int:
    tasks = []
    for target, sorting in zip(targets, sortings, strict=True):
        hyp = resolve_hypnogram(args.hypnogram_project, target.experiment, target.subject)
        if sorting.sorter_output.joinpath("spike_clusters.npy").exists():  # else the sort runs first
            require_curated(sorting.sorter_output, args.allow_uncurated)
        setup = setup_postpro(
            sorting, args.opts, name=args.postpro, replace_opts=args.replace_opts, hypnogram=hyp
        )
        print(f"== postprocessing {setup.pset.folder} ({postpro_status(sorting, setup.pset.name)})")
        for message in setup.messages:
            print(message)
        tasks.append(
            Postpro(
                **asdict(target),
                n_jobs=args.n_jobs,
                executor=executor_name(args),
                postpro_name=setup.pset.name,
                hypnogram_project=args.hypnogram_project,
                allow_uncurated=args.allow_uncurated,
            )
        )
    ok = build(tasks, args)
    for task in tasks:
        if (task.pset.folder / "metrics.csv").exists():
            print(f"metrics: {task.pset.folder / 'metrics.csv'}; plots: {task.pset.folder / 'summary_plots'}")
        if task.sorting.report.exists():
            print(f"report: {task.sorting.report}")
    return 0 if ok else 1
