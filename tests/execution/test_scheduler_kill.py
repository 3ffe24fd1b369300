"""A worker SIGKILLed mid-step under `wisc-sort scheduler`: luigid marks its task failed once the worker is
gone for `worker_disconnect_delay`; running the command again resumes from the last complete step."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from tasks.core.manifest import read_manifest, status
from tasks.steps.registry import PREPRO_STEPS
from tests.support.ops_world import scheduler_env, scheduler_factory_fixture, sort_argv, tasks_by_family  # noqa: F401
from tests.support.pipeline_world import copy_sorting, edit_drift

pytestmark = pytest.mark.slow
DELAY_S = 5


def step_running(sorting, step: str) -> bool:
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "containers" in cmdline and step in cmdline and str(sorting.root) in cmdline:
            return True
    return False


def luigid_state(server, family: str) -> str | None:
    for status_name in ("RUNNING", "FAILED", "DISABLED", "PENDING", "DONE"):
        if family in tasks_by_family(server, status_name):  # task_list also prunes dead workers
            return status_name
    return None


def test_killed_worker_fails_in_scheduler_then_rerun_resumes(
    demo_world, first_run, tmp_path, scheduler_factory
):
    server = scheduler_factory(worker_disconnect_delay=DELAY_S, watch_interval=0)
    config = server.config.read_text()
    assert f"worker_disconnect_delay = {DELAY_S}" in config and "retry_count = 1" in config
    source, _ = first_run
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(source, sorting)
    # Edit localization: peak locations and everything after rerun; peaks stay done.
    edit_drift(sorting, "localize_peaks_kwargs", radius_um=70.0)
    peaks_manifest = sorting.manifest("peaks").read_text()
    peaks_mtime = (sorting.preprocessing / "peaks.npy").stat().st_mtime_ns

    argv = sort_argv(demo_world, tmp_path, server.url + "/", "--prepro-only")
    env = scheduler_env()
    started = time.time()
    worker = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    progress = sorting.progress("peak_locations")
    deadline = time.monotonic() + 120
    try:
        while not (progress.exists() and progress.stat().st_mtime >= started):
            assert worker.poll() is None and time.monotonic() < deadline, "peak_locations never started"
            time.sleep(0.05)
        assert luigid_state(server, "PeakLocations") == "RUNNING"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    killed = time.monotonic()
    while step_running(sorting, "peak_locations") and time.monotonic() < killed + 30:
        time.sleep(0.1)
    assert not step_running(sorting, "peak_locations")  # the step died with its worker

    # luigid fails the dead worker's task after the delay; with retry_count = 1 it is disabled at once.
    while (
        state := luigid_state(server, "PeakLocations")
    ) == "RUNNING" and time.monotonic() < killed + DELAY_S + 30:
        time.sleep(0.5)
    print(f"PeakLocations {state} {time.monotonic() - killed:.1f} s after the kill (delay {DELAY_S} s)")
    assert state == "DISABLED"
    assert status(sorting, "peak_locations") != "done"

    rerun = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "re-enabled 1 task(s) that failed in an earlier run" in rerun.stdout
    for step in PREPRO_STEPS:
        assert status(sorting, step) == "done", step
    # Resumed from the last complete step: peaks untouched, peak locations made anew.
    assert sorting.manifest("peaks").read_text() == peaks_manifest
    assert (sorting.preprocessing / "peaks.npy").stat().st_mtime_ns == peaks_mtime
    assert read_manifest(sorting, "peak_locations")["options"]["localize_peaks_kwargs"]["radius_um"] == 70.0
    assert luigid_state(server, "PeakLocations") == "DONE"
