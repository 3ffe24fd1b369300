"""Artifact scan: flat, saturated and common-mode transient bouts of raw AP files, proposed as exclusions.

A fast pass (numpy only, on a memory map of the int16 `.bin`): `window_s` of every AP channel is read every
`step_s`; each window is `flat` (most channels near-constant), `saturated` (many values at the ADC's rail),
`transient` (the median over channels, i.e. what every channel shares, far above the channels' noise) or
clean. Runs of windows with one label become a bout, whose edges are then found to `refine_s` by reading the
gap between the last clean window and the first bad one. A bout shorter than `step_s - window_s` can fall
between two windows and be missed: lower `step_s` to read more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.atomic import atomic_path
from tasks.inputs.exclusions import COLUMNS
from tasks.options.sorting_schema import ARTIFACT_DEFAULTS

CLEAN = ""
TYPES = ("flat", "saturated", "transient")
PROPOSED_SUFFIX = ".proposed.htsv"
COMMON_STEP = 8
# NP1.0-style probes have 10-bit ADCs; NP2.0 (types 21, 24 and 2xxx) 14-bit. The .meta's imMaxInt wins.
_MAX_INT_NP2 = 8192
_MAX_INT_NP1 = 512


def proposed_path(exclusions_file: Path) -> Path:
    """`<probe>.ap.artifacts.proposed.htsv` beside the user's `<probe>.ap.artifacts.htsv`."""
    return Path(exclusions_file).with_name(Path(exclusions_file).name.removesuffix(".htsv") + PROPOSED_SUFFIX)


def artifact_options(opts: dict) -> dict[str, float]:
    """The scan's thresholds: the options' `artifacts` block over the defaults."""
    return {**ARTIFACT_DEFAULTS, **(opts.get("artifacts") or {})}


def max_int(meta: dict[str, str]) -> int:
    """The ADC's largest magnitude: `imMaxInt`, else from the probe type."""
    if meta.get("imMaxInt"):
        return int(float(meta["imMaxInt"]))
    kind = (meta.get("imDatPrb_type") or "0").strip()
    return _MAX_INT_NP2 if kind in ("21", "24") or (len(kind) == 4 and kind.startswith("2")) else _MAX_INT_NP1


@dataclass(frozen=True)
class RawFile:
    """One AP `.bin` as the scan reads it: samples x saved channels of int16, the first `n_ap` being AP."""

    path: Path
    n_samples: int
    n_channels: int
    n_ap: int
    rate: float
    max_int: int

    def open(self) -> np.ndarray:
        return np.memmap(self.path, dtype=np.int16, mode="r", shape=(self.n_samples, self.n_channels))


@dataclass(frozen=True)
class Bout:
    kind: str
    start: int  # frames within the file, [start, end)
    end: int


class Classifier:
    """Labels a block (frames x AP channels, int16) against the thresholds and the file's noise level."""

    def __init__(self, options: dict[str, float], max_int: int, noise: float = 0.0) -> None:
        self.options, self.rail, self.noise = options, options["rail_fraction"] * max_int, noise

    def stats(self, block: np.ndarray) -> tuple[float, float, float, float]:
        """(flat channels, values at the rail: fractions; peak common mode, median channel noise: counts)."""
        block = np.asarray(block)
        railing = float(np.mean((block >= self.rail) | (block <= -self.rail)))
        data = block.astype(np.float32)
        data -= data.mean(axis=0)  # each channel's offset
        std = data.std(axis=0)
        flat = float(np.mean(std < self.options["flat_std"]))
        # What the channels share: the median over channels, at 1/COMMON_STEP of the frames (a transient lasts
        # milliseconds at least; the median is the costly part).
        common = float(np.abs(np.median(data[::COMMON_STEP], axis=1)).max())
        return flat, railing, common, float(np.median(std))

    def usable(self, stats: tuple[float, float, float, float]) -> bool:
        """Neither flat nor saturated: the window's channel noise says how noisy the file is."""
        return (
            stats[0] < self.options["flat_channel_fraction"] and stats[1] < self.options["saturated_fraction"]
        )

    def label_of(self, stats: tuple[float, float, float, float]) -> str:
        flat, railing, common, _ = stats
        if railing >= self.options["saturated_fraction"]:
            return "saturated"
        if flat >= self.options["flat_channel_fraction"]:
            return "flat"
        if self.noise > 0 and common > self.options["transient_threshold"] * self.noise:
            return "transient"
        return CLEAN

    def label(self, block: np.ndarray) -> str:
        return self.label_of(self.stats(block))


def _windows(raw: RawFile, options: dict[str, float]) -> list[tuple[int, int]]:
    width = max(2, int(round(options["window_s"] * raw.rate)))
    step = max(width, int(round(options["step_s"] * raw.rate)))
    return [(a, min(a + width, raw.n_samples)) for a in range(0, max(raw.n_samples - 1, 1), step)]


def _runs(labels: list[str]) -> Iterator[tuple[str, int, int]]:
    """(label, first index, last index) of each run of equal, non-clean labels."""
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            if labels[start] != CLEAN:
                yield labels[start], start, i - 1
            start = i


def _edge(
    data: np.ndarray, classify: Classifier, kind: str, span: tuple[int, int], sub: int, first: bool
) -> int:
    """Within `span`: the start of the first (first=True) or the end of the last sub-window labelled `kind`;
    the span's end (first) or start (last) when none is."""
    lo, hi = span
    hits = [a for a in range(lo, hi, sub) if classify.label(data[a : min(a + sub, hi)]) == kind]
    if not hits:
        return hi if first else lo
    return hits[0] if first else min(hits[-1] + sub, hi)


def scan_file(
    raw: RawFile, options: dict[str, float], on_window: Callable[[int, int], None] | None = None
) -> list[Bout]:
    """The bouts of one file, edges refined to `refine_s`. `on_window(done, total)` after each window."""
    if raw.n_samples <= 1 or raw.n_ap <= 0:
        return []
    data = raw.open()[:, : raw.n_ap]  # a view: rows are read when sliced
    windows = _windows(raw, options)
    classify = Classifier(options, raw.max_int)
    stats = []
    for i, (a, b) in enumerate(windows):
        stats.append(classify.stats(data[a:b]))
        if on_window is not None:
            on_window(i + 1, len(windows))
    usable = [s[3] for s in stats if classify.usable(s)]
    classify.noise = float(np.median(usable)) if usable else 0.0
    labels = [classify.label_of(s) for s in stats]
    sub = max(2, int(round(options["refine_s"] * raw.rate)))
    bouts = []
    for kind, i, j in _runs(labels):
        # The edges lie in the gaps between the last clean window and the first bad one (and back).
        start = _edge(data, classify, kind, (windows[i - 1][1], windows[i][1]), sub, True) if i else 0
        if j + 1 < len(windows):
            end = _edge(data, classify, kind, (windows[j][0], windows[j + 1][0]), sub, False)
        else:
            end = raw.n_samples
        bouts.append(Bout(kind, start, max(end, start + 1)))
    return bouts


def raw_file(row: pd.Series, meta: dict[str, str]) -> RawFile:
    """A file-table (or segment-table) row and its .meta as the scan reads it."""
    n_channels = int(row["nSavedChans"])
    n_ap = int(row["nApChans"]) if "nApChans" in row and int(row["nApChans"]) > 0 else n_channels
    return RawFile(
        Path(row["path"]),
        int(row["nFileSamp"]),
        n_channels,
        min(n_ap, n_channels),
        float(row["imSampRate"]),
        max_int(meta),
    )


def bouts_table(found: list[tuple[str, float, Bout]]) -> pd.DataFrame:
    """(fname, rate, bout) -> the exclusions columns; start rounded down and end up to 0.1 ms, so that the
    segment table's `int(t * rate)` covers every frame of the bout."""
    rows = [
        (fname, math.floor(b.start / rate * 1e4) / 1e4, math.ceil(b.end / rate * 1e4) / 1e4, b.kind)
        for fname, rate, b in found
    ]
    return pd.DataFrame.from_records(rows, columns=COLUMNS)


def write_proposed(table: pd.DataFrame, path: Path) -> None:
    """The proposal, atomically (header only when nothing was found)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
