"""What the scheduler's web view shows for a step: its progress line and its one-line failure message."""

from __future__ import annotations

import json

from containers.runtime.progress import ProgressFile, format_hours
from tasks.execution.executors import StepFailed
from tasks.steps.pipeline import Peaks, Sort


def test_progress_line_names_step_percent_and_hours(tmp_path):
    progress = ProgressFile(tmp_path / "peaks.progress.json", "peaks", hours=23.4, min_interval_s=0)
    assert progress.line(41.2) == "peaks: 41% of 23.4 h"
    assert progress.line(41.2, "(detect peaks)") == "peaks: 41% of 23.4 h (detect peaks)"
    progress.update(41.2, "(detect peaks)")
    state = json.loads(progress.path.read_text())
    assert state["percent"] == 41.2 and state["message"] == "peaks: 41% of 23.4 h (detect peaks)"
    assert ProgressFile(tmp_path / "x", "motion").line(5) == "motion: 5%"  # hours unknown


def test_sort_progress_counts_batches(tmp_path):
    progress = ProgressFile(tmp_path / "sort.progress.json", "sorting", hours=23.4, counts=True)
    assert progress.line(33.8, "", n=812, total=2400) == "sorting: batch 812/2400"
    assert progress.line(50, "(detect peaks)", n=10, total=20) == "sorting: detect peaks 10/20"
    assert progress.line(90, "(export to phy)") == "sorting: 90% of 23.4 h (export to phy)"


def test_format_hours():
    assert (format_hours(23.44), format_hours(0.5), format_hours(20 / 3600)) == ("23.4 h", "30.0 min", "20 s")


def step_task(cls, tmp_path, monkeypatch):
    projects = tmp_path / "projects.yaml"
    projects.write_text(f"project: ssd\nproject_directory: {tmp_path / 'ssd'}\n...\n")
    monkeypatch.setenv("WISC_PROJECTS_FILE", str(projects))
    return cls(project="ssd", experiment="exp", subject="M1", probe="imec0")


def test_on_failure_is_one_line_with_the_log(tmp_path, monkeypatch):
    task = step_task(Peaks, tmp_path, monkeypatch)
    root, log = task.sorting.root, task.sorting.log("peaks")
    failed = StepFailed(f"step peaks of {root} failed (exit 1); log: {log}")
    assert task.on_failure(failed) == f"peaks failed for {root}: StepFailed: {failed}"  # the log once
    log.parent.mkdir(parents=True)
    log.write_text("Traceback ...\n")
    message = Sort.on_failure(step_task(Sort, tmp_path, monkeypatch), RuntimeError("no GPU\n  free"))
    assert message == f"sort failed for {root}: RuntimeError: no GPU free"  # no sort log yet
    message = task.on_failure(MemoryError("out of memory"))
    assert message == f"peaks failed for {root}: MemoryError: out of memory; log: {log}"
    assert "\n" not in message
