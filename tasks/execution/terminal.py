"""What a step shows on the terminal: one line that becomes a progress bar and ends with its time (the step's
output, library warnings and bars included, goes to its log; to the terminal too only when verbose)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from tasks import settings
from tasks.core.layout import SortingDir

BAR_WIDTH = 20


def verbose() -> bool:
    """`--verbose`, `[wisc] verbose = 1` or WISC_VERBOSE=1: step output on the terminal too."""
    return bool(settings.get("verbose"))


def format_seconds(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 2 h 03 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def sorting_label(sorting: SortingDir) -> str:
    """`<subject>/sorting.<probe>`: enough to tell the sortings of one run apart."""
    root = Path(sorting.root)
    return f"{root.parent.name}/{root.name}"


def last_line(path: Path, limit: int = 65536) -> str:
    """The last non-empty line of a log (a failed step's exception), without its progress-bar redraws."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - limit))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.split("\r")[-1].strip() for line in text.splitlines()]
    return next((line for line in reversed(lines) if line), "")


class StepLine:
    """One terminal line per step. On a terminal it redraws as a bar (step, sorting, percent, rate, time
    left); elsewhere (a pipe, a SLURM log) only the closing line is printed."""

    def __init__(self, step: str, sorting: SortingDir, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.head = f"{step} {sorting_label(sorting)}"
        self.started = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.drawn = False

    def _write(self, text: str, end: str) -> None:
        pad = " " * 8 if self.tty else ""
        self.stream.write(("\r" if self.tty else "") + text + pad + end)
        self.stream.flush()

    def bar(self, percent: float, hours: float | None = None) -> str:
        """`peaks S/sorting.imec0 [#####.....] 41% 3.2x real time, ~1 min 12 s left`."""
        percent = max(0.0, min(100.0, percent))
        filled = int(BAR_WIDTH * percent / 100)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        parts = [f"{self.head} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:3.0f}%"]
        if percent > 0:
            rate = f"{percent / elapsed:.1f} %/s"
            if hours:
                rate = f"{percent / 100 * hours * 3600 / elapsed:.1f}x real time"
            parts.append(f"{rate}, ~{format_seconds(elapsed * (100 - percent) / percent)} left")
        return " ".join(parts)

    def update(self, percent: float, hours: float | None = None) -> None:
        if self.tty:
            self._write(self.bar(percent, hours), "")
            self.drawn = True

    def finish(self, returncode: int) -> None:
        """Close the line with the step's time; a failure leaves only the error line (reason and log), which
        the run prints once."""
        if returncode == 0:
            self._write(f"{self.head}: done in {format_seconds(time.monotonic() - self.started)}", "\n")
        elif self.drawn:
            self._write(" " * (len(self.head) + BAR_WIDTH + 60), "\r")
