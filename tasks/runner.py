"""Drives `wisc-sort sort` and `demo`: set up each sorting, print what will be sorted, build the DAG."""

from __future__ import annotations

import argparse
import os

import luigi
import luigi.configuration

from tasks.config import Paths
from tasks.inputs import Resolved, Target, resolve
from tasks.pipeline import Preprocess
from tasks.segments import format_summary
from tasks.sorting_setup import prepare_sorting


def print_plan(item: Resolved, note: str = "") -> None:
    """The lab's check block: raw recording summary, first file, segment table."""
    print(f"== {item.target.subject} {item.target.probe}: {item.sorting.root}{note}")
    print(format_summary(item.segments))


def ensure_local_resources() -> None:
    """With --local-scheduler the client's [resources] are the limits; an undeclared one has limit 1."""
    config = luigi.configuration.get_config()
    if not config.has_section("resources"):
        config.add_section("resources")
    if not config.has_option("resources", "cpu"):
        config.set("resources", "cpu", str(os.cpu_count() or 1))


def build(tasks: list[luigi.Task], args: argparse.Namespace) -> bool:
    kwargs: dict = {"workers": args.workers, "detailed_summary": True, "log_level": "WARNING"}
    if args.scheduler_url:
        kwargs["scheduler_url"] = args.scheduler_url
    else:
        ensure_local_resources()
        kwargs["local_scheduler"] = True
    result = luigi.build(tasks, **kwargs)
    print(result.summary_text)
    return result.status in (luigi.LuigiStatusCode.SUCCESS, luigi.LuigiStatusCode.SUCCESS_WITH_RETRY)


def executor_name(args: argparse.Namespace) -> str:
    return args.executor or luigi.configuration.get_config().get("wisc", "executor", "local")


def run_sortings(paths: Paths, targets: list[Target], args: argparse.Namespace) -> int:
    resolved = [resolve(paths, t) for t in targets]  # every input checked before anything is written
    roots = []
    for item in resolved:
        report = prepare_sorting(item, args.opts, args.replace_opts, args.refresh_segments)
        print_plan(item, " (new)" if report.created else "")
        for message in report.messages:
            print(message)
        roots.append(item.sorting)
    common = {"n_jobs": args.n_jobs, "executor": executor_name(args)}
    tasks = [
        Preprocess(
            project=t.project,
            experiment=t.experiment,
            alias=t.alias,
            subject=t.subject,
            probe=t.probe,
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
    raise NotImplementedError  # wired once the demo world lands
