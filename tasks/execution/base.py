"""What every executor does around a step program: the step lock, the log, progress relayed, the exit code."""

from __future__ import annotations

import abc
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tasks.core.layout import SortingDir
from tasks.core.locks import Busy, hold
from tasks.core.threads import thread_env

ProgressCallback = Callable[[float, str], None]


class StepFailed(RuntimeError):
    """A step program exited non-zero; the message says where its log is."""


@contextmanager
def step_lock(sorting: SortingDir, step: str) -> Iterator[None]:
    """One process at a time runs a given step of a given sorting (re-entrant within a process: the task
    holds it from superseding old outputs to the manifest). Busy: StepFailed naming the holder."""
    with ExitStack() as stack:
        try:
            stack.enter_context(hold(sorting.pipeline / f"{step}.lock", f"step {step} of {sorting.root}"))
        except Busy as err:
            raise StepFailed(str(err)) from None
        yield


class ErrorLine:
    """A sink that keeps the step program's own one-line error (`wisc-sort step <step>: error: ...`), so that
    the step's failure says what went wrong (a full drive, bad input), not only where its log is."""

    MARK = b"wisc-sort step "

    def __init__(self) -> None:
        self.tail = b""
        self.line = ""

    def write(self, chunk: bytes) -> None:
        self.tail = (self.tail + chunk)[-65536:]
        for raw in self.tail.replace(b"\r", b"\n").split(b"\n")[:-1]:
            if raw.startswith(self.MARK) and b": error: " in raw:
                self.line = raw.split(b": error: ", 1)[1].decode(errors="replace").strip()
        self.tail = self.tail.rsplit(b"\n", 1)[-1]

    def flush(self) -> None:
        return None


def write_sinks(chunk: bytes, sinks: list) -> None:
    for sink in sinks:
        sink.write(chunk)
        sink.flush()


class OurWarnings:
    """A sink that passes the step's own warnings (`WiscWarning: ...` lines: a slow CPU sort, an engine
    fallback) to the terminal as `wisc-sort: warning: ...`, and drops everything else (that is in the log)."""

    MARK = b"WiscWarning: "

    def __init__(self, stream) -> None:
        self.stream, self.pending = stream, b""

    def write(self, chunk: bytes) -> None:
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for line in lines:
            if self.MARK in line:
                message = line.split(self.MARK, 1)[1].decode("utf-8", "replace").strip()
                self.stream.write(f"wisc-sort: warning: {message}\n")

    def flush(self) -> None:
        self.stream.flush()


def relay_stream(stream, sinks: list) -> None:
    # Raw chunks, not lines: progress bars redraw with carriage returns.
    for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
        write_sinks(chunk, sinks)


def _poll_progress(path: Path, callback: Callable[..., None], stop: threading.Event) -> None:
    last = None
    while not stop.wait(1.0):
        try:
            state = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        if state != last:
            last = state
            hours = state.get("hours")
            callback(float(state.get("percent", 0.0)), str(state.get("message", "")), hours)


def step_flags(
    allow_uncurated: bool = False, records: dict[str, str] | None = None, device: str = "cpu"
) -> list[str]:
    """The host's settings a step program needs, as its flags (a container has no luigi.cfg to read)."""
    from tasks import settings

    flags = ["--disk-reserve-gb", repr(settings.get("disk_reserve_gb")), "--device", device]
    if allow_uncurated:
        flags.append("--allow-uncurated")
    for key, value in (records or {}).items():
        flags += ["--record", f"{key}={value}"]
    return flags


def step_arguments(step: str, sorting: SortingDir, n_jobs: int, flags: list[str]) -> list[str]:
    """`<step> <sorting_dir> --n-jobs N [flags]`: what follows `python -m containers` (or an image's
    entry)."""
    return [step, str(sorting.root), "--n-jobs", str(n_jobs), *flags]


class Executor(abc.ABC):
    """Runs a step program under the step lock, logging to `.pipeline/<step>.log` and relaying progress.

    Subclasses say how the program starts (`_execute`) and what environment its signature pins.
    """

    name = ""
    # True where the executor's own scheduler admits GPU jobs (SLURM): the Luigi task then takes no host
    # lease and hands its GPU units to run(), which asks that scheduler for them.
    schedules_gpus = False

    def luigi_resources(self, resources: dict[str, int]) -> dict[str, int]:
        """What luigid counts for a step run here: all of it, unless this executor's scheduler admits some."""
        return resources

    def environment(self, step: str, sorting: SortingDir) -> str | None:
        """What a step's signature pins besides options and inputs; None accepts outputs made anywhere."""
        return None

    def check(self, steps: list[str], options: list[dict]) -> None:
        """Raise UserError before anything is written when these steps cannot run with these options
        (the engine down, an image missing). Nothing to check for a subprocess here."""
        return None

    @abc.abstractmethod
    def _execute(
        self, arguments: list[str], sorting: SortingDir, n_jobs: int, env: dict[str, str], sinks: list
    ) -> int:
        """Start the step program with `arguments` and `env`, relay its output to `sinks`; its exit code."""

    def run(
        self,
        step: str,
        sorting: SortingDir,
        n_jobs: int,
        on_progress: ProgressCallback | None = None,
        extra_env: dict[str, str] | None = None,
        flags: list[str] | None = None,
        gpu_units: int = 0,
    ) -> None:
        """`gpu_units` matter only where `schedules_gpus`; elsewhere the task's lease handed the device."""
        from tasks.execution.terminal import StepLine, last_line, verbose
        from tasks.report.write import refresh_report

        arguments = step_arguments(step, sorting, n_jobs, step_flags() if flags is None else flags)
        env = {**thread_env(n_jobs), **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        log_path = sorting.log(step)
        stop = threading.Event()
        loud = verbose()
        line = StepLine(step, sorting)
        error = ErrorLine()
        with step_lock(sorting, step), open(log_path, "ab") as log:
            refresh_report(sorting, running=step)
            # The step's output (library warnings and bars included) goes to its log; to the terminal too
            # only when verbose. The terminal otherwise gets the step's one line.
            terminal = (
                sys.stderr.buffer if loud and hasattr(sys.stderr, "buffer") else OurWarnings(sys.stderr)
            )
            sinks = [log, error, terminal]

            def progress(percent: float, message: str, hours: float | None = None) -> None:
                if not loud:
                    line.update(percent, hours)
                if on_progress is not None:
                    on_progress(percent, message)

            poller = threading.Thread(
                target=_poll_progress, args=(sorting.progress(step), progress, stop), daemon=True
            )
            poller.start()
            try:
                returncode = self._execute(arguments, sorting, n_jobs, env, sinks)
            finally:
                stop.set()
                poller.join(timeout=5)
        if not loud:
            line.finish(returncode)
        refresh_report(sorting)
        if returncode != 0:
            reason = error.line or last_line(log_path)  # the step's own error line, else its log's last
            raise StepFailed(
                f"step {step} of {sorting.root} failed (exit {returncode})"
                + (f": {reason}" if reason else "")
                + f"; log: {log_path}"
            )
