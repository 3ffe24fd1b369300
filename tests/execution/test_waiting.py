"""Ctrl-C stops the wait for a step program even when the kernel hands the signal to a helper thread (the
log relay, the progress poller), not to the main thread that waits."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.signals import interrupt_in_a_helper_thread

WAIT_FOR_A_LONG_STEP = """
import subprocess
from tasks.execution.waiting import wait_process
# The step program runs 120 s and never sees the SIGINT (sent to this process only): only the waiting side
# can end this early.
step = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
try:
    print("ready", flush=True)
    {wait}
    print("waited to the end", flush=True)
except KeyboardInterrupt:
    print("interrupted while the step ran:", step.poll() is None, flush=True)
finally:
    step.kill()
"""


def test_ctrl_c_in_a_helper_thread_interrupts_the_wait_for_a_step_program() -> None:
    out = interrupt_in_a_helper_thread(WAIT_FOR_A_LONG_STEP.format(wait="wait_process(step)"), timeout_s=60)
    assert "interrupted while the step ran: True" in out, out


def test_a_plain_blocking_wait_is_not_interrupted_so_the_case_is_real() -> None:
    """Popen.wait() instead: the interrupt waits for the step (so the test above tests something)."""
    with pytest.raises(subprocess.TimeoutExpired):
        interrupt_in_a_helper_thread(WAIT_FOR_A_LONG_STEP.format(wait="step.wait()"), timeout_s=10)
