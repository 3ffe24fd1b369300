"""Hypnograms: read `hypnogram.htsv`, map sleep states onto frames of the sorted (concatenated) recording.

Experiment time: seconds since the start of the sorting's first file. A file's start is its gate's first
file's `fileCreateTime` plus `firstSample` offsets within the gate (sample-exact), else its own
`fileCreateTime`. Each kept segment then starts at its file's start plus `withinFileStartFrame / rate`,
and occupies `[keepStartFrame, keepStartFrame + nSegmentSamp)` of the concatenated recording.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.errors import UserError
from tasks.core.layout import plain_name
from tasks.options.postpro import STATE_MAP

HYPNOGRAM_NAME = "hypnogram.htsv"
COLUMNS = ("state", "start_time", "end_time")


def hypnogram_path(project_dir: Path, experiment: str, subject: str) -> Path:
    return (
        Path(project_dir)
        / plain_name(experiment, "experiment")
        / plain_name(subject, "subject")
        / HYPNOGRAM_NAME
    )


def read_hypnogram(path: Path) -> pd.DataFrame:
    """state, start_time, end_time (and duration) in experiment seconds; UserError naming the file and row."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: hypnogram missing; the options ask for metrics per sleep state")
    try:
        table = pd.read_csv(path, sep="\t", dtype={"state": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a tab-separated hypnogram ({err})") from None
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise UserError(
            f"{path}: no column {missing[0]}; expected columns state, start_time, end_time, duration"
        )
    for column in ("start_time", "end_time"):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise UserError(f"{path}: line {row}: {column} {table[column].iloc[row - 2]!r} is not a number")
        table[column] = values.astype(float)
    backwards = table["end_time"] < table["start_time"]
    if backwards.any():
        row = int(np.flatnonzero(backwards.to_numpy())[0]) + 2
        raise UserError(f"{path}: line {row}: end_time before start_time")
    return table


def file_starts(segments: pd.DataFrame) -> pd.Series:
    """Experiment-time start (s) of each segment row's file, relative to the first file's start."""
    created = pd.to_datetime(segments["fileCreateTime"]) if "fileCreateTime" in segments else None
    rate = segments["imSampRate"].astype(float)
    if created is None:  # no clock: files back to back
        first_rows = ~segments["fname"].duplicated()
        durations = segments.loc[first_rows, "fileDuration"].astype(float)
        starts = durations.cumsum() - durations
        return segments["fname"].map(dict(zip(segments.loc[first_rows, "fname"], starts, strict=True)))
    seconds = (created - created.iloc[0]).dt.total_seconds()
    if "firstSample" in segments and {"session", "run", "gate"} <= set(segments):
        gate = segments[["session", "run", "gate"]].astype(str).agg("/".join, axis=1)
        first = ~gate.duplicated()
        gate_start = gate.map(dict(zip(gate[first], seconds[first], strict=True)))
        gate_sample = gate.map(dict(zip(gate[first], segments.loc[first, "firstSample"], strict=True)))
        seconds = gate_start + (segments["firstSample"] - gate_sample) / rate
    return seconds


def state_frames(
    hypnogram: pd.DataFrame, segments: pd.DataFrame, state_map: dict[str, str] | None = None
) -> dict[str, np.ndarray]:
    """State -> (n, 2) int64 array of [start, end) frames of the concatenated kept recording, merged."""
    mapping = {**STATE_MAP, **(state_map or {})}
    keep = segments[segments["type"] == "keep"]
    rate = keep["imSampRate"].to_numpy(float)
    seg_t0 = (
        file_starts(segments).loc[keep.index].to_numpy(float) + keep["withinFileStartFrame"].to_numpy() / rate
    )
    seg_f0 = keep["keepStartFrame"].to_numpy(np.int64)
    seg_n = keep["nSegmentSamp"].to_numpy(np.int64)
    out: dict[str, list] = {}
    for state, t0, t1 in hypnogram[list(COLUMNS)].itertuples(index=False):
        target = mapping.get(str(state))
        if target is None:
            continue  # Art, NoData, unscored, ...
        lo = np.clip(np.round((t0 - seg_t0) * rate).astype(np.int64), 0, seg_n)
        hi = np.clip(np.round((t1 - seg_t0) * rate).astype(np.int64), 0, seg_n)
        hit = hi > lo
        out.setdefault(target, []).append(np.stack([seg_f0[hit] + lo[hit], seg_f0[hit] + hi[hit]], axis=1))
    return {state: _merge(np.concatenate(parts)) for state, parts in out.items()}


def _merge(intervals: np.ndarray) -> np.ndarray:
    if intervals.size == 0:
        return intervals.reshape(0, 2).astype(np.int64)
    intervals = intervals[np.argsort(intervals[:, 0], kind="stable")]
    merged = [list(intervals[0])]
    for start, end in intervals[1:]:
        if start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return np.asarray(merged, dtype=np.int64)


DEMO_CYCLE = ("N1", "N2", "aWk", "REM", "qWk", "Art")


def demo_hypnogram(segments: pd.DataFrame, bout_s: float = 1.0) -> pd.DataFrame:
    """A hypnogram for generated data: bouts of `bout_s` cycling N1, N2, aWk, REM, qWk, Art, the cycle
    restarting at each file's start, so that every state falls in kept data even in a 20 s demo."""
    starts = file_starts(segments)
    first = ~segments["fname"].duplicated()
    rows = []
    for start, duration in zip(starts[first], segments.loc[first, "fileDuration"].astype(float), strict=True):
        edges = np.append(np.arange(start, start + duration, bout_s), start + duration)
        for i, (t0, t1) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            if t1 > t0:
                rows.append((DEMO_CYCLE[i % len(DEMO_CYCLE)], float(t0), float(t1)))
    table = pd.DataFrame(rows, columns=["state", "start_time", "end_time"])
    table["duration"] = table["end_time"] - table["start_time"]
    return table
