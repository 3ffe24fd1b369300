"""The executors by name: `local` runs a step program as a subprocess here (the embedded default), `docker`
in its image (tasks/execution/docker.py), `slurm` as a SLURM job (tasks/execution/slurm.py). Each runs
`python -m containers <step> <dir> ...`."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from tasks.core.layout import SortingDir
from tasks.execution.base import Executor, StepFailed, relay_stream, step_flags, step_lock  # noqa: F401  (re-exported)
from tasks.execution.waiting import wait_process


def _die_with_parent() -> None:
    # If the Luigi worker is SIGKILLed, the step dies too instead of writing on, unsupervised.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LocalExecutor(Executor):
    """Runs the step as a subprocess of this environment: the embedded default (no Docker, no GPU)."""

    name = "local"

    def _execute(
        self, arguments: list[str], sorting: SortingDir, n_jobs: int, env: dict[str, str], sinks: list
    ) -> int:
        proc = subprocess.Popen(
            [sys.executable, "-m", "containers", *arguments],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        relay = threading.Thread(target=relay_stream, args=(proc.stdout, sinks), daemon=True)
        relay.start()
        try:
            return wait_process(proc)
        finally:
            if proc.poll() is None:  # interrupted (SIGTERM, timeout): stop the step, then reap it
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            relay.join(timeout=5)


def _docker_executor() -> Executor:
    from tasks.execution.docker import DockerExecutor  # imports the docker SDK only when asked for

    return DockerExecutor()


def _slurm_executor() -> Executor:
    from tasks.execution.slurm import SlurmExecutor

    return SlurmExecutor()


EXECUTORS: dict[str, Callable[[], Executor]] = {
    "local": LocalExecutor,
    "docker": _docker_executor,
    "slurm": _slurm_executor,
}
_instances: dict[str, Executor] = {}


def get_executor(name: str) -> Executor:
    """One instance per name and process: output() asks on every scheduling pass."""
    if name not in _instances:
        if name not in EXECUTORS:
            from tasks.core.errors import UserError

            raise UserError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)} (--executor)")
        _instances[name] = EXECUTORS[name]()
    return _instances[name]
