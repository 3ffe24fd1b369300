"""Progress of a step, published to a file the Luigi task relays to the scheduler, and every tqdm bar
hooked to it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def format_hours(hours: float) -> str:
    """23.4 h, 12.5 min or 19 s: the recording's length in progress lines."""
    if hours >= 1:
        return f"{hours:.1f} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.1f} min"
    return f"{hours * 3600:.0f} s"


class ProgressFile:
    """Writes `{"percent", "message"}` for the Luigi task to relay to the scheduler (throttled).

    Messages read "peaks: 41% of 23.4 h" (`hours`: the sorted recording's duration) or, where a bar counts
    batches (`counts=True`, the sort), "sorting: batch 812/2400".
    """

    def __init__(
        self,
        path: Path,
        label: str,
        min_interval_s: float = 1.0,
        hours: float | None = None,
        counts: bool = False,
    ) -> None:
        self.path = Path(path)
        self.label = label
        self.min_interval_s = min_interval_s
        self.hours = hours
        self.counts = counts
        self._last = 0.0

    def line(self, percent: float, detail: str = "", n: int | None = None, total: int | None = None) -> str:
        if self.counts and total:
            what = detail.strip("()") or "batch"
            return f"{self.label}: {what} {n}/{total}"
        of = f" of {format_hours(self.hours)}" if self.hours else ""
        return f"{self.label}: {percent:.0f}%{of}" + (f" {detail}" if detail else "")

    def update(
        self,
        percent: float,
        detail: str = "",
        force: bool = False,
        n: int | None = None,
        total: int | None = None,
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        message = self.line(percent, detail, n, total)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(
            json.dumps(
                {"percent": round(percent, 1), "message": message, "time": time.time(), "hours": self.hours}
            )
        )
        os.replace(tmp, self.path)


def install_tqdm_progress(progress: ProgressFile) -> None:
    """Make every tqdm bar (SpikeInterface's job bars included) also report to `progress`.

    Call before spikeinterface is imported: it binds `from tqdm.auto import tqdm` at import time.
    """
    import tqdm
    import tqdm.auto

    base = tqdm.auto.tqdm

    class ReportingTqdm(base):  # type: ignore[misc, valid-type]
        def display(self, *args, **kwargs):  # called on every refresh of the bar
            if self.total:
                desc = (self.desc or "").split(" (")[0]
                detail = f"({desc})" if desc else ""
                progress.update(100.0 * self.n / self.total, detail, n=int(self.n), total=int(self.total))
            return super().display(*args, **kwargs)

    tqdm.auto.tqdm = ReportingTqdm
    tqdm.tqdm = ReportingTqdm
