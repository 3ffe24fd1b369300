"""Running a DAG with luigi.build: local resource limits, keep-alive, one line per failure, rerun
re-enables."""

from __future__ import annotations

import argparse
import os
import sys

import luigi
import luigi.configuration

from tasks import settings
from tasks.execution.gpu import gpu_resource_name, visible_devices
from tasks.execution.luigi_config import pinned
from tasks.execution.scheduler import client_scheduler_url


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
            gpu_resource_name(): settings.get("gpu_capacity") * len(visible_devices()),
        },
    )


def build(tasks: list[luigi.Task], args: argparse.Namespace) -> bool:
    """Run the DAG; each failure is reported as one line (the step's log has the details)."""
    failures: list[str] = []

    @luigi.Task.event_handler(luigi.Event.FAILURE)
    def _collect(task: luigi.Task, exception: BaseException) -> None:
        failures.append(f"{task.task_family} failed: {exception}")

    added: list[tuple[str, str]] = []
    kwargs: dict = {"workers": args.workers, "detailed_summary": True, "log_level": "CRITICAL"}
    scheduler_url = client_scheduler_url(args)
    if scheduler_url:
        kwargs["scheduler_url"] = scheduler_url
        reenable_for_rerun(scheduler_url, tasks)
    else:
        added += ensure_local_resources()
        kwargs["local_scheduler"] = True
    try:
        with pinned():  # keep-alive, completion checks, no retry loop: whatever luigi.cfg says, or lacks
            result = luigi.build(tasks, **kwargs)
    finally:
        luigi.Task.remove_event_handler(luigi.Event.FAILURE, _collect)
        for section, name in added:  # this run's defaults, not the process's: later runs read luigi.cfg again
            luigi.configuration.get_config().remove_option(section, name)
    report_summary(tasks, result)
    for line in failures:
        print(f"wisc-sort: error: {' '.join(line.split())}", file=sys.stderr)
    return result.status in (luigi.LuigiStatusCode.SUCCESS, luigi.LuigiStatusCode.SUCCESS_WITH_RETRY)


def _sortings(tasks: list[luigi.Task]) -> set:
    """The sorting directories of the run's root tasks (tasks of other kinds have none)."""
    found = set()
    for task in tasks:
        try:
            found.add(task.sorting)
        except Exception:  # not a sorting's task, or its inputs are gone: nothing to log into
            continue
    return found


def report_summary(tasks: list[luigi.Task], result) -> None:
    """Luigi's execution summary goes to each sorting's `.pipeline/luigi.log` (and to the terminal when
    verbose); the terminal gets one line: how many steps ran."""
    from tasks.core.manifest import now
    from tasks.execution.terminal import verbose

    for sorting in _sortings(tasks):
        sorting.pipeline.mkdir(parents=True, exist_ok=True)
        with open(sorting.log("luigi"), "a") as log:
            log.write(f"== {now()}\n{result.summary_text}\n")
    if verbose():
        print(result.summary_text)
        return
    from luigi.execution_summary import _partition_tasks  # counts only; the text is luigi's

    parts = _partition_tasks(result.worker)
    ran, done = (
        sum(1 for task in parts[key] if not isinstance(task, luigi.WrapperTask))
        for key in ("completed", "already_done")
    )
    print(f"steps: {ran} ran, {done} already complete" if ran else f"steps: all {done} already complete")


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
    return args.executor or settings.get("executor")
