"""Test helper: another process that holds sorting locks (the package's own locking), until it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.core.locks import sorting_lock_path

REPO = Path(__file__).resolve().parents[2]
HOLDER = (
    "import sys, time\n"
    "from tasks.core.locks import hold_sortings\n"
    "with hold_sortings(sys.argv[1:]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(600)\n"
)


@contextmanager
def holder_process(*roots: Path) -> Iterator[subprocess.Popen]:
    """A python process holding the locks of `roots` (as a running `wisc-sort` would); SIGKILLed at exit."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *map(str, roots)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def lock_holder_pid(root: Path) -> int | None:
    """The pid written in a sorting's lock file, if any."""
    import json

    try:
        return int(json.loads(sorting_lock_path(root).read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return None
