"""Waiting for a child (a step program, a container, luigid) so that Ctrl-C and SIGTERM act at once.

Python runs signal handlers in the main thread, but a blocking wait there (waitpid, a socket read) is woken
by a signal only when the kernel delivers it to that thread. When the kernel picks another thread (the log
relay, the progress poller; rare), the handler waits for the child: for the step program to end by itself,
and a container, which never gets the terminal's SIGINT, runs on to its end. Short timed waits in a loop
let the handler run within one interval, whichever thread the signal reached.
"""

from __future__ import annotations

import subprocess

POLL_S = 0.2


def wait_process(proc: subprocess.Popen, interval_s: float = POLL_S) -> int:
    """proc.wait(), interruptible by this process's signal handlers within `interval_s`."""
    while True:
        try:
            return proc.wait(timeout=interval_s)
        except subprocess.TimeoutExpired:
            continue


def wait_container(container, interval_s: float = 1.0) -> int:
    """The container's exit code once it stops (docker's wait), interruptible within `interval_s`."""
    import requests
    from urllib3.exceptions import ReadTimeoutError

    while True:
        try:
            return int(container.wait(timeout=interval_s)["StatusCode"])
        except requests.exceptions.ReadTimeout:
            continue
        except requests.exceptions.ConnectionError as err:  # over the unix socket, a timeout comes so
            if not (err.args and isinstance(err.args[0], ReadTimeoutError)):
                raise  # the engine is gone: not a timeout
