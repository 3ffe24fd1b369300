"""A process outside the worker's process group that cleans up after a worker that dies mid-step.

The worker holds the write end of the guard's stdin; the kernel closes it however the worker ends (even by
SIGKILL, which runs no `finally`). The guard (`python -m <module> ARGS`) reads lines until EOF: the worker
writes what to clean up as it learns it (`tell`) and "done" when it has cleaned up itself (`release`); EOF
without "done" means the worker is gone and what it started must go too (a container, a SLURM job).
"""

from __future__ import annotations

import subprocess
import sys


class WorkerGuard:
    def __init__(self, module: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a signal to the worker's group must not take the guard with it
        )

    def tell(self, line: str) -> None:
        """Hand the guard one more thing to clean up should the worker die (a line of its protocol)."""
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()

    def release(self) -> None:
        try:
            self.proc.stdin.write(b"done\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=30)


def told(text: bytes) -> list[str] | None:
    """The lines a guard was told, or None when the worker said "done" last (nothing to clean up)."""
    lines = [line.strip() for line in text.decode(errors="replace").splitlines() if line.strip()]
    return None if lines and lines[-1] == "done" else lines
