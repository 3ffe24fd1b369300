"""The AP segment table: every sample of every file of an alias, labelled keep or excluded, and frame maps."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.atomic import atomic_path
from tasks.core.errors import UserError, warn

SEGMENT_COLUMNS = [
    "fname",
    "type",
    "withinFileStartFrame",
    "withinFileEndFrame",
    "nSegmentSamp",
    "segmentDuration",
    "fileDuration",
]
KEEP = "keep"
RATE_TOLERANCE = 1e-3  # relative: calibrated rates of one probe differ in the last digits only

# dtypes of the segment and file-table contract columns, so a TSV round trip gives back the same frame.
_STR = ["fname", "type", "subject", "session", "run", "probe", "stream", "path", "imDatPrb_type"]
_INT = [
    "withinFileStartFrame", "withinFileEndFrame", "nSegmentSamp", "keepStartFrame", "gate", "trigger",
    "nSavedChans", "fileSizeBytes", "firstSample", "nApChans", "nLfChans", "nSyChans", "nFileSamp", "binSize",
]  # fmt: skip
_FLOAT = ["segmentDuration", "fileDuration", "imSampRate", "fileTimeSecs", "binMtime"]
_DATETIME = ["fileCreateTime"]


def check_consistent(files: pd.DataFrame) -> None:
    """All files of one recording must share channel count and sampling rate (they are concatenated)."""
    if files.empty:
        return
    first = files.iloc[0]
    for _, f in files.iloc[1:].iterrows():
        if int(f["nSavedChans"]) != int(first["nSavedChans"]):
            raise UserError(
                f"{f['path']} has {f['nSavedChans']} saved channels but {first['path']} has "
                f"{first['nSavedChans']}: they cannot be concatenated; split the alias between them."
            )
        if abs(f["imSampRate"] - first["imSampRate"]) > RATE_TOLERANCE * first["imSampRate"]:
            raise UserError(
                f"{f['path']} samples at {f['imSampRate']} Hz but {first['path']} at "
                f"{first['imSampRate']} Hz: they cannot be concatenated; split the alias between them."
            )


def _file_segments(file: pd.Series, exclusions: pd.DataFrame) -> list[tuple[str, int, int]]:
    """(type, start, end) covering [0, nFileSamp) in order; the exclusion listed first wins on overlap."""
    n, rate = int(file["nFileSamp"]), float(file["imSampRate"])
    intervals: list[tuple[str, int, int]] = []
    for row, ex in exclusions.iterrows():
        start = int(ex["withinFileStartTime"] * rate)
        end = int(ex["withinFileEndTime"] * rate)
        if end > n:
            what = "ignored" if start >= n else f"clipped to the file's end ({n / rate:.3f} s)"
            warn(
                f"exclusions row {row} ({file['fname']}, {ex['withinFileStartTime']}-"
                f"{ex['withinFileEndTime']} s) runs past the file's end: {what}."
            )
        start, end = max(0, min(start, n)), min(end, n)
        if end > start:  # zero-length after int(): nothing to drop
            intervals.append((str(ex["type"]), start, end))
    bounds = sorted({0, n, *(s for _, s, _ in intervals), *(e for _, _, e in intervals)})
    segments: list[tuple[str, int, int]] = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        label = next((t for t, s, e in intervals if s <= a < e), KEEP)
        if segments and segments[-1][0] == label:
            segments[-1] = (label, segments[-1][1], b)
        else:
            segments.append((label, a, b))
    return segments


def build_segment_table(files: pd.DataFrame, exclusions: pd.DataFrame | None) -> pd.DataFrame:
    """Segment rows for `files` (ordered AP files of one probe) with their exclusions laid over `keep`.

    Overlapping exclusions: the sample takes the type of the exclusion listed first. Exclusions of files
    not in `files` (other probes, LF, outside the alias) are ignored. Empty files get no rows.
    """
    if files["fname"].duplicated().any():
        raise ValueError(
            f"duplicate file names in the file table: {files['fname'][files['fname'].duplicated()]}"
        )
    check_consistent(files)
    if exclusions is None:
        exclusions = pd.DataFrame(columns=["fname", "withinFileStartTime", "withinFileEndTime", "type"])
    by_file = {name: group for name, group in exclusions.groupby("fname", sort=False)}
    positions, types, starts, ends = [], [], [], []
    for pos in range(len(files)):
        file = files.iloc[pos]
        if int(file["nFileSamp"]) <= 0:
            warn(f"{file['path']} holds no samples: left out of the segment table.")
            continue
        for label, start, end in _file_segments(file, by_file.get(file["fname"], exclusions.iloc[:0])):
            positions.append(pos)
            types.append(label)
            starts.append(start)
            ends.append(end)
    rep = files.iloc[positions].reset_index(drop=True)
    n_samp = np.asarray(ends, dtype=np.int64) - np.asarray(starts, dtype=np.int64)
    keep = np.asarray(types, dtype=object) == KEEP
    kept_before = np.cumsum(np.where(keep, n_samp, 0)) - np.where(keep, n_samp, 0)
    file_duration = rep["fileDuration"] if "fileDuration" in rep else rep["nFileSamp"] / rep["imSampRate"]
    seg = pd.DataFrame(
        {
            "fname": rep["fname"].astype(str),
            "type": pd.Series(types, dtype=str),
            "withinFileStartFrame": np.asarray(starts, dtype=np.int64),
            "withinFileEndFrame": np.asarray(ends, dtype=np.int64),
            "nSegmentSamp": n_samp,
            "segmentDuration": n_samp / rep["imSampRate"].to_numpy(dtype=float),
            "fileDuration": file_duration.astype(float),
        }
    )
    rest = rep.drop(columns=[c for c in rep.columns if c in seg.columns])
    out = pd.concat([seg, rest], axis=1)
    out["keepStartFrame"] = np.where(keep, kept_before, -1).astype(np.int64)
    return out


def _kept(segments: pd.DataFrame) -> pd.DataFrame:
    return segments[segments["type"] == KEEP]


def n_kept_samples(segments: pd.DataFrame) -> int:
    return int(_kept(segments)["nSegmentSamp"].sum())


def _as_frames(frames: int | np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"frames must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def frame_to_file(
    segments: pd.DataFrame, frames: int | np.ndarray
) -> tuple[np.ndarray | str, np.ndarray | int]:
    """Frames of the concatenated keep recording -> (file names, within-file frames)."""
    arr = _as_frames(frames)
    keep = _kept(segments)
    starts = keep["keepStartFrame"].to_numpy(dtype=np.int64)
    total = n_kept_samples(segments)
    bad = (arr < 0) | (arr >= total)
    if bad.any():
        raise ValueError(f"frame {arr[bad].flat[0]} is outside the kept recording [0, {total})")
    idx = np.searchsorted(starts, arr, side="right") - 1
    fnames = keep["fname"].to_numpy(dtype=object)[idx]
    within = keep["withinFileStartFrame"].to_numpy(dtype=np.int64)[idx] + (arr - starts[idx])
    if arr.ndim == 0:
        return str(fnames), int(within)
    return fnames, within


def file_to_frame(
    segments: pd.DataFrame, fname: str, within_file_frames: int | np.ndarray
) -> np.ndarray | int:
    """(file, within-file frames) -> frames of the concatenated keep recording; ValueError if excluded."""
    arr = _as_frames(within_file_frames)
    rows = segments[segments["fname"] == fname]
    if rows.empty:
        raise ValueError(f"{fname} is not in the segment table")
    starts = rows["withinFileStartFrame"].to_numpy(dtype=np.int64)
    n = int(rows["withinFileEndFrame"].iloc[-1])
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        raise ValueError(f"frame {arr[bad].flat[0]} is outside {fname} [0, {n})")
    idx = np.searchsorted(starts, arr, side="right") - 1
    types = rows["type"].to_numpy(dtype=object)[idx]
    excluded = types != KEEP
    if np.any(excluded):
        first = np.flatnonzero(np.ravel(excluded))[0]
        raise ValueError(
            f"frame {np.ravel(arr)[first]} of {fname} is in an excluded `{np.ravel(types)[first]}` segment"
        )
    frames = rows["keepStartFrame"].to_numpy(dtype=np.int64)[idx] + (arr - starts[idx])
    return int(frames) if arr.ndim == 0 else frames


def write_segments(segments: pd.DataFrame, path: Path) -> None:
    """Write the table as TSV, atomically (a reader never sees half a table)."""
    with atomic_path(Path(path)) as tmp:
        segments.to_csv(tmp, sep="\t", index=False)


def read_segments(path: Path) -> pd.DataFrame:
    """Read a table written by `write_segments`, with the contract's dtypes."""
    header = pd.read_csv(path, sep="\t", nrows=0).columns
    dtypes: dict[str, object] = {c: str for c in _STR if c in header}
    dtypes.update({c: np.int64 for c in _INT if c in header})
    dtypes.update({c: np.float64 for c in _FLOAT if c in header})
    # Text columns stay text ("NA" is a valid run name); only numeric columns read "" as missing.
    frame = pd.read_csv(
        path,
        sep="\t",
        dtype=dtypes,
        keep_default_na=False,
        na_values={c: ["", "NaN", "nan"] for c in header if c not in _STR},
    )
    for c in _DATETIME:
        if c in frame:
            frame[c] = pd.to_datetime(frame[c])
    return frame


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_summary(segments: pd.DataFrame) -> str:
    """The lab's check block: what will be sorted (file count, exclusions, duration, size, first path)."""
    if segments.empty:
        return "Raw recording: no files."
    first = segments.iloc[0]
    n_chans, rate = int(first["nSavedChans"]), float(first["imSampRate"])
    kept = n_kept_samples(segments)
    seconds = kept / rate
    size = kept * n_chans * 2  # int16
    hours = seconds / 3600
    excluded = segments[segments["type"] != KEEP].groupby("type", sort=False)["segmentDuration"].sum()
    excluded_text = ", ".join(f"{t} {s:,.2f} s" for t, s in excluded.items()) or "none"
    table = segments[SEGMENT_COLUMNS].to_string()
    return "\n".join(
        [
            "Raw recording (kept segments concatenated):",
            f"  {segments['fname'].nunique()} files - {n_chans} channels - {rate:.6f} Hz - {kept:,} samples",
            f"  {seconds:,.2f} s ({hours:.2f} hours) - int16 - {_human_bytes(size)} ({size:,} bytes)",
            f"Excluded: {excluded_text}",
            "First file full path:",
            f"  {first['path']}",
            "AP segment table:",
            table,
        ]
    )


def kept_hours(segments: Path) -> float | None:
    """Hours of the sorted recording (the `keep` rows of segments.htsv); None if unreadable.
    The csv module, not pandas: `wisc-sort status` reads hundreds of these."""
    try:
        with open(segments, newline="") as handle:
            rows = csv.DictReader(handle, delimiter="\t")
            seconds = sum(
                int(row["nSegmentSamp"]) / float(row["imSampRate"]) for row in rows if row["type"] == "keep"
            )
    except (OSError, KeyError, ValueError, TypeError, ZeroDivisionError):
        return None
    return seconds / 3600.0
