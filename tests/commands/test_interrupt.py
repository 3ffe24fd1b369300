"""SIGTERM, and Ctrl-C (SIGINT to the terminal's process group), to `wisc-sort sort` while a step runs: the
command stops within a few seconds, saying so in one line, its step program ends with it, and the next run
resumes (completed steps kept) and completes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tasks.core.manifest import status
from tasks.steps.registry import PREPRO_STEPS
from tests.steps.test_kill_resume import step_processes
from tests.support.cli import WISC_SORT
from tests.support.pipeline_world import fast_options, wait_until, write_options
from tests.support.signals import as_in_a_terminal

pytestmark = pytest.mark.slow
STOP_WITHIN_S = 5.0


def interrupt_during(argv: list[str], sorting, step: str, how: str) -> tuple[float, str]:
    """Start the command in its own session (as a terminal would), wait until `step` runs, interrupt it:
    SIGTERM to the command, or SIGINT to its whole process group (what Ctrl-C does). (seconds, stderr)."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=as_in_a_terminal,
    )  # fmt: skip
    try:
        running = lambda: any(step in p.cmdline() for p in step_processes(sorting))  # noqa: E731
        assert wait_until(lambda: running() or proc.poll() is not None, 600)
        assert proc.poll() is None, f"the command ended before {step} ran"
        time.sleep(1.0)  # inside the step, not at its start
        sent = time.monotonic()
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        return time.monotonic() - sent, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_and_ctrl_c_stop_the_command_and_its_step_then_resume(demo_world, tmp_path) -> None:
    opts = write_options(tmp_path / "opts.yaml", fast_options())
    argv = [WISC_SORT, *demo_world.argv(tmp_path, "--opts", str(opts), "--prepro-only", n_jobs=1)]
    sorting = demo_world.sorting(tmp_path)
    for step, how in (("peaks", "SIGTERM"), ("motion", "Ctrl-C")):
        seconds, err = interrupt_during(argv, sorting, step, how)
        assert seconds < STOP_WITHIN_S, (how, seconds)
        assert wait_until(lambda: not step_processes(sorting), 5), (
            f"{how}: the step program outlived the command"
        )
        assert "Traceback" not in err, err[-3000:]
        assert err.strip().splitlines()[-1] == (
            "wisc-sort: interrupted; completed steps are kept, rerun to resume"
        ), err[-3000:]
        assert status(sorting, step) != "done"
    assert status(sorting, "peaks") == "done"  # kept from the second run: the third resumes after it
    peaks_manifest = sorting.manifest("peaks").read_bytes()
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(status(sorting, step) == "done" for step in PREPRO_STEPS)
    assert sorting.manifest("peaks").read_bytes() == peaks_manifest
