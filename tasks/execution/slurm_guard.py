"""Cancels a step's SLURM job when the worker that submitted it dies (python -m tasks.execution.slurm_guard).

The worker writes the job id on this process's stdin once sbatch has answered, and "done" when it has
waited the job out or cancelled it itself; EOF without "done" means the worker died mid-step: scancel.
"""

from __future__ import annotations

import subprocess
import sys

from tasks.execution.guard import told


def main() -> int:
    jobs = told(sys.stdin.buffer.read())  # blocks until the worker says "done" and closes, or dies
    if not jobs:
        return 0
    done = subprocess.run(["scancel", *jobs], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"wisc-sort slurm guard: scancel {' '.join(jobs)}: {done.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"wisc-sort slurm guard: cancelled SLURM job {' '.join(jobs)} of a dead worker", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
