"""SIGKILL the worker in the middle of each preprocessing stage, rerun: it completes, never done early."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tasks.core.manifest import status
from tasks.steps.registry import PREPRO_STEPS, STEPS
from tests.support.cli import WISC_SORT
from tests.support.pipeline_world import fast_options, wait_until, write_options

pytestmark = pytest.mark.slow


def assert_loadable(path: Path) -> None:
    if path.suffix == ".npy":
        np.load(path)
    elif path.suffix == ".npz":
        with np.load(path) as data:
            list(data.values())
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".png":
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def assert_never_done_early(sorting) -> None:
    """A step that counts as complete has every output whole (loadable), whatever was killed when."""
    for step in PREPRO_STEPS:
        if status(sorting, step) == "done":
            for rel in STEPS[step].outputs:
                assert_loadable(sorting.path(rel))


def step_processes(sorting) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "containers" in cmdline and str(sorting.root) in cmdline:
            found.append(proc)
    return found


def kill_during(argv: list[str], sorting, step: str) -> None:
    """Start the run, wait until `step` reports that it has started in this run, SIGKILL the worker."""
    started = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = sorting.progress(step)
    try:
        while proc.poll() is None:
            if progress.exists() and progress.stat().st_mtime >= started:
                break
            if sorting.root.exists():
                assert_never_done_early(sorting)
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # The step program dies with its worker (no orphan writing on, unsupervised).
    assert wait_until(lambda: not step_processes(sorting), 30)


def test_sigkill_in_each_stage_then_rerun_completes(demo_world, tmp_path):
    opts = write_options(tmp_path / "opts.yaml", fast_options(localize="grid_convolution"))
    argv = [WISC_SORT, *demo_world.argv(tmp_path, "--opts", str(opts), "--prepro-only", n_jobs=1)]
    sorting = demo_world.sorting(tmp_path)
    interrupted = []
    for step in PREPRO_STEPS:
        if sorting.root.exists() and status(sorting, step) == "done":
            continue  # finished in an earlier run before its kill could land
        kill_during(argv, sorting, step)
        assert_never_done_early(sorting)
        if status(sorting, step) != "done":
            interrupted.append(step)
    # The slow stages were certainly caught mid-way; the fast ones may have finished first.
    assert {"peaks", "peak_locations"} <= set(interrupted)
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    for step in PREPRO_STEPS:
        assert status(sorting, step) == "done", step
    assert_never_done_early(sorting)
    leftovers = [p for p in sorting.root.rglob("*") if ".wisc-tmp-" in p.name or "-luigi-tmp-" in p.name]
    assert leftovers == []
