"""Executors run a step program (`python -m containers <step> <dir>`); `local` is a subprocess here."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from containers.runtime import thread_env
from tasks.layout import SortingDir

ProgressCallback = Callable[[float, str], None]


class StepFailed(RuntimeError):
    """A step program exited non-zero; the message says where its log is."""


def _die_with_parent() -> None:
    # If the Luigi worker is SIGKILLed, the step dies too instead of writing on, unsupervised.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextmanager
def step_lock(sorting: SortingDir, step: str) -> Iterator[None]:
    """Host-local guard: one process at a time runs a given step of a given sorting."""
    sorting.pipeline.mkdir(parents=True, exist_ok=True)
    with open(sorting.pipeline / f"{step}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise StepFailed(f"{sorting.root}: step {step} is already running in another process") from err
        yield


def _relay(stream, sinks: list) -> None:
    # Raw chunks, not lines: progress bars redraw with carriage returns.
    for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
        for sink in sinks:
            sink.write(chunk)
            sink.flush()


def _poll_progress(path: Path, callback: ProgressCallback, stop: threading.Event) -> None:
    last = None
    while not stop.wait(1.0):
        try:
            state = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        if state != last:
            last = state
            callback(float(state.get("percent", 0.0)), str(state.get("message", "")))


class LocalExecutor:
    """Runs the step as a subprocess of this environment: the embedded default (no Docker, no GPU)."""

    name = "local"

    def command(self, step: str, sorting: SortingDir, n_jobs: int) -> list[str]:
        return [sys.executable, "-m", "containers", step, str(sorting.root), "--n-jobs", str(n_jobs)]

    def environment(self, step: str) -> str:
        return ""  # signatures do not depend on the local environment's versions (they are in manifests)

    def run(
        self,
        step: str,
        sorting: SortingDir,
        n_jobs: int,
        on_progress: ProgressCallback | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {**os.environ, **thread_env(n_jobs), **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        log_path = sorting.log(step)
        stop = threading.Event()
        with step_lock(sorting, step), open(log_path, "ab") as log:
            proc = subprocess.Popen(
                self.command(step, sorting, n_jobs),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
            sinks = [log] + ([sys.stderr.buffer] if hasattr(sys.stderr, "buffer") else [])
            relay = threading.Thread(target=_relay, args=(proc.stdout, sinks), daemon=True)
            relay.start()
            poller = None
            if on_progress is not None:
                poller = threading.Thread(
                    target=_poll_progress, args=(sorting.progress(step), on_progress, stop), daemon=True
                )
                poller.start()
            try:
                returncode = proc.wait()
            finally:
                if proc.poll() is None:  # interrupted (SIGTERM, timeout): stop the step, then reap it
                    proc.terminate()
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                stop.set()
                relay.join(timeout=5)
        if returncode != 0:
            raise StepFailed(f"step {step} of {sorting.root} failed (exit {returncode}); log: {log_path}")


EXECUTORS = {"local": LocalExecutor}


def get_executor(name: str):
    try:
        return EXECUTORS[name]()
    except KeyError:
        from tasks.errors import UserError

        raise UserError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}") from None
