"""What the report says about a sorting, read from its manifests and files (no compute, no heavy packages)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.layout import SortingDir
from tasks.inputs.segments import KEEP, format_summary, read_segments

CHUNK = 5_000_000  # rows of a big array read at a time
STALE_PROGRESS_S = 120.0  # a progress file younger than this, below 100%, without a current manifest: running


@dataclass
class StepRow:
    """One line of the steps table and one bar of the timeline."""

    name: str
    state: str
    manifest: dict = field(default_factory=dict)
    failure: dict = field(default_factory=dict)

    @property
    def record(self) -> dict:
        """The latest attempt: a failure newer than the manifest wins."""
        if self.failure and self.failure.get("started", "") >= self.manifest.get("started", ""):
            return self.failure
        return self.manifest

    def times(self) -> tuple[datetime, datetime] | None:
        try:
            return (
                datetime.fromisoformat(self.record["started"]),
                datetime.fromisoformat(self.record["finished"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def trace(self) -> dict:
        return self.record.get("trace") or {}


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _running(sorting: SortingDir, name: str) -> bool:
    progress = _json(sorting.progress(name))
    fresh = time.time() - float(progress.get("time", 0)) < STALE_PROGRESS_S
    return fresh and float(progress.get("percent", 100)) < 100


def step_rows(sorting: SortingDir, running: str | None = None) -> list[StepRow]:
    """Every step the options call for (done / stale / partial / missing / running / failed), then every
    postprocessing stage that has a manifest, in the order they ran."""
    from tasks.core.manifest import status
    from tasks.steps.registry import load_inputs, pipeline_steps

    rows = []
    for step in pipeline_steps(load_inputs(sorting)[0]):
        row = StepRow(
            step, status(sorting, step), _json(sorting.manifest(step)), _json(sorting.failure(step))
        )
        if step == running or (row.state != "done" and _running(sorting, step)):
            row.state = "running"
        elif row.failure and row.record is row.failure:
            row.state = "failed"
        rows.append(row)
    stages = []
    for path in sorted(sorting.pipeline.glob("postpro.*.json")):
        if path.name.endswith((".progress.json", ".failed.json")):
            continue
        manifest = _json(path)
        family = manifest.get("step", path.stem.rsplit(".", 1)[0])
        state = "running" if running == family else "done"
        stages.append(StepRow(path.stem, state, manifest))
    return rows + sorted(stages, key=lambda row: row.manifest.get("started", ""))


def recording_summary(sorting: SortingDir) -> tuple[str, pd.DataFrame]:
    """The lab's check block (files, channels, rate, kept hours, excluded) and the segment table."""
    segments = read_segments(sorting.segments)
    summary = format_summary(segments).split("AP segment table:")[0].strip()
    return summary, segments


@dataclass
class PeakCounts:
    """Peaks per bin along the recording's own timeline (kept and excluded segments, files in order)."""

    bin_s: float
    counts: np.ndarray  # per bin of the whole timeline (zero inside excluded bouts)
    excluded: list[tuple[float, float, str]]  # start, end (s on that timeline), type
    files: list[tuple[float, str]]  # where each file starts


def _cached(sorting: SortingDir, name: str, source: Path, compute: Callable[[], dict]) -> dict:
    """What `compute` derives from a big file (peaks.npy of 48 h, the sort's spike arrays), kept in
    `.pipeline/report.cache.json` while the file is unchanged: the report is rewritten after every step."""
    from tasks.core import atomic

    path = sorting.pipeline / "report.cache.json"
    stat = source.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    cache = _json(path)
    if cache.get(name, {}).get("stamp") == stamp:
        return cache[name]["value"]
    value = compute()
    cache[name] = {"stamp": stamp, "value": value}
    atomic.write_json(path, cache)
    return value


def _frame_bins(path: Path, edges_on_timeline, rate: float, bin_s: float, n_bins: int) -> list[int]:
    kept_start, timeline_start = edges_on_timeline
    counts = np.zeros(n_bins, dtype="int64")
    peaks = np.load(path, mmap_mode="r")
    for start in range(0, peaks.shape[0], CHUNK):
        frames = np.asarray(peaks["sample_index"][start : start + CHUNK], dtype="int64")
        rows = np.searchsorted(kept_start, frames, side="right") - 1
        on_timeline = frames - kept_start[rows] + timeline_start[rows]
        bins = np.minimum((on_timeline / rate / bin_s).astype("int64"), n_bins - 1)
        counts += np.bincount(bins, minlength=n_bins)
    return counts.tolist()


def peak_counts(sorting: SortingDir, segments: pd.DataFrame, n_bins: int = 300) -> PeakCounts | None:
    """From preprocessing/peaks.npy (memory-mapped, read in slices): kept frames are mapped back onto the
    timeline of all segments, so the excluded bouts show where they were."""
    path = sorting.preprocessing / "peaks.npy"
    if not path.exists() or segments.empty:
        return None
    rate = float(segments.iloc[0]["imSampRate"])
    lengths = segments["nSegmentSamp"].to_numpy(dtype="int64")
    timeline_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    kept = segments["type"].to_numpy() == KEEP
    kept_start = np.concatenate([[0], np.cumsum(np.where(kept, lengths, 0))[:-1]])
    total_s = lengths.sum() / rate
    bin_s = total_s / n_bins
    edges = (kept_start[kept], timeline_start[kept])
    counts = _cached(
        sorting, "peak_counts", path, lambda: {"counts": _frame_bins(path, edges, rate, bin_s, n_bins)}
    )
    excluded = [
        (timeline_start[i] / rate, (timeline_start[i] + lengths[i]) / rate, str(segments.iloc[i]["type"]))
        for i in np.flatnonzero(~kept)
    ]
    first_rows = ~segments["fname"].duplicated().to_numpy()
    files = [(timeline_start[i] / rate, str(segments.iloc[i]["fname"])) for i in np.flatnonzero(first_rows)]
    return PeakCounts(bin_s, np.asarray(counts["counts"]), excluded, files)


def _cluster_counts(path: Path) -> dict:
    ids = np.load(path, mmap_mode="r")
    counts = np.zeros(0, dtype="int64")
    for start in range(0, ids.shape[0], CHUNK):
        part = np.bincount(np.asarray(ids[start : start + CHUNK], dtype="int64").ravel())
        counts = np.pad(counts, (0, max(0, part.size - counts.size)))
        counts[: part.size] += part
    return {"spikes": int(ids.shape[0]), "units": int(np.count_nonzero(counts))}


def sorter_summary(sorting: SortingDir, opts: dict) -> dict[str, object]:
    """Sorter, units, spikes and the sorter's own labels, from phy's files (the arrays read in slices)."""
    out: dict[str, object] = {"sorter": (opts.get("sorting") or {}).get("sorter_name", "?")}
    clusters = sorting.sorter_output / "spike_clusters.npy"
    if not clusters.exists():
        return out
    out.update(_cached(sorting, "clusters", clusters, lambda: _cluster_counts(clusters)))
    labels = sorting.sorter_output / "cluster_KSLabel.tsv"
    if labels.exists():
        table = pd.read_csv(labels, sep="\t")
        out["sorter labels"] = ", ".join(f"{k} {v}" for k, v in table.iloc[:, -1].value_counts().items())
    return out


def curation_text(sorting: SortingDir) -> str:
    from tasks.phy.curation import curation_state, describe

    if not sorting.sorter_output.is_dir():
        return "no sort yet"
    state = curation_state(sorting.sorter_output, quick=True)
    if state.complete:
        return f"complete: every one of {state.n_units} units has a phy group"
    return describe(state, sorting.sorter_output)


@dataclass
class PostproView:
    """One postprocessing set: its state, metrics table and the summary plots it wrote."""

    name: str
    state: str
    metrics: pd.DataFrame | None
    metric_plots: list[Path]
    unit_plots: list[Path]


def postpro_views(sorting: SortingDir) -> list[PostproView]:
    from tasks.steps.postpro_state import postpro_sets, postpro_status

    views = []
    for name in postpro_sets(sorting):
        folder = sorting.root / name
        table = folder / "metrics.csv"
        metrics = pd.read_csv(table) if table.exists() else None
        plots = folder / "summary_plots"
        metric_plots = sorted(plots.glob("*.png")) if plots.is_dir() else []
        unit_plots = (
            sorted(plots.glob("*/*.png"), key=lambda p: (len(p.stem), p.stem)) if plots.is_dir() else []
        )
        views.append(PostproView(name, postpro_status(sorting, name), metrics, metric_plots, unit_plots))
    return views


def finalize_record(sorting: SortingDir) -> dict:
    from tasks.finalize.finalize import read_journal

    return read_journal(sorting.root) or {}
