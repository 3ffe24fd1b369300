"""Ctrl-C in tests: SIGINT as a terminal's foreground job has it, and a Ctrl-C that the kernel hands to a
helper thread, not the main one (a program that blocks SIGINT in its main thread, so the kernel must pick
another, runs `body` there and reports whether it was interrupted)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from tests.support.pipeline_world import REPO


def as_in_a_terminal() -> None:
    """preexec_fn: SIGINT at its default, as a terminal's foreground job has it. A job started in the
    background of a non-interactive shell (`nohup ... &`, some CI runners) inherits SIGINT ignored, and
    Python then keeps ignoring it: a Ctrl-C could not be tested there."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


PROLOGUE = """
import signal, sys, threading, time
sys.path.insert(0, {repo!r})
# A helper thread, started first (threads inherit the mask), then SIGINT blocked in the main thread only:
# the kernel must deliver it to the helper.
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT}})
"""


def interrupt_in_a_helper_thread(body: str, ready: str = "ready", timeout_s: float = 60.0) -> str:
    """Run PROLOGUE + `body` (which prints `ready` once it waits), send SIGINT when it does, and return what
    the program printed. `body` should end by printing its outcome; a wait that ignores the interrupt
    outlasts `timeout_s` (raises subprocess.TimeoutExpired)."""
    program = PROLOGUE.format(repo=str(REPO)) + textwrap.dedent(body)
    proc = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=as_in_a_terminal,
    )  # fmt: skip
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == ready:
                proc.send_signal(signal.SIGINT)
                break
        out, _ = proc.communicate(timeout=timeout_s)
        return "".join(lines) + out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
