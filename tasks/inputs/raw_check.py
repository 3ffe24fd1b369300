"""Raw data that changed under a sorting: each `.bin` and `.meta` of segments.htsv, as the sorting saw them.

`.pipeline/raw_files.json` records every raw file when the segment table is written (size, mtime, the
`.meta`'s sha256 and fields). Before anything is computed, the files on disk are compared with it (a sorting
made before the record existed is compared with the segment table's own columns): a `.bin` that grew, shrank,
was replaced or is gone, or an edited `.meta`, stops the run in one line naming the file and the change.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

import pandas as pd

from tasks.core import atomic
from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.inputs.spikeglx import MetaError, _meta_values, read_meta

FORMAT = "wisc-raw/1"
# The `.meta` fields the segment table carries (their change is named; any other edit shows in the sha256).
META_FIELDS = ("nSavedChans", "imSampRate", "fileSizeBytes", "firstSample", "fileCreateTime", "imDatPrb_type")
_MAX_NAMED = 3


def record_path(sorting: SortingDir) -> Path:
    return sorting.pipeline / "raw_files.json"


def _meta_path(bin_path: Path) -> Path:
    return bin_path.with_suffix(".meta")


def _meta_fields(meta_path: Path) -> dict[str, str]:
    values = _meta_values(read_meta(meta_path))
    return {k: str(values[k]) for k in META_FIELDS}


def fingerprint(bin_path: Path) -> dict:
    """What a run saw of one raw file: the `.bin`'s size and mtime, the `.meta`'s sha256 and fields."""
    st = os.stat(bin_path)
    meta = _meta_path(bin_path)
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "meta_sha256": hashlib.sha256(meta.read_bytes()).hexdigest(),
        "meta": _meta_fields(meta),
    }


def _paths(segments: pd.DataFrame) -> list[str]:
    if "path" not in segments:  # a table without raw files (a test's, a plugin's): nothing to compare
        return []
    return list(dict.fromkeys(str(p) for p in segments["path"]))


def write_record(sorting: SortingDir, segments: pd.DataFrame) -> None:
    """Record the raw files of `segments` as they are now (call when segments.htsv is written)."""
    files = {path: fingerprint(Path(path)) for path in _paths(segments)}
    atomic.write_json(record_path(sorting), {"format": FORMAT, "files": files})


def read_record(sorting: SortingDir) -> dict | None:
    try:
        data = json.loads(record_path(sorting).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # absent or damaged: the segment table's own columns are compared instead
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).astimezone().isoformat(timespec="seconds")


def _bin_change(path: Path, size: int | None, mtime_ns: int | None) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path}: gone"
    if size is not None and st.st_size != size:
        verb = "grew" if st.st_size > size else "shrank"
        return f"{path}: {verb} from {size:,} to {st.st_size:,} bytes"
    if mtime_ns is not None and abs(st.st_mtime_ns - mtime_ns) > 1000:
        return (
            f"{path}: replaced or rewritten (same size, modified {_when(st.st_mtime_ns)} where the sorting "
            f"saw {_when(mtime_ns)}; if only its timestamp moved: touch -d @{mtime_ns / 1e9:.6f} '{path}')"
        )
    return ""


def _meta_change(path: Path, fields: dict[str, str], sha: str | None) -> str:
    meta = _meta_path(path)
    try:
        text = meta.read_bytes()
        now = _meta_fields(meta)
    except (FileNotFoundError, MetaError) as err:
        return f"{meta}: {'gone' if isinstance(err, FileNotFoundError) else 'unreadable'}"
    edited = [
        f"{k} {fields[k]} -> {now[k]}"
        for k in META_FIELDS
        if k in fields and fields[k] != now[k] and now[k] != "None"  # None: absent while acquiring
    ]
    if edited:
        return f"{meta}: edited ({', '.join(edited)})"
    if sha is not None and hashlib.sha256(text).hexdigest() != sha:
        return f"{meta}: edited (its text differs from what the sorting read)"
    return ""


def _from_segments(segments: pd.DataFrame) -> dict[str, dict]:
    """A record from the segment table's columns (sortings made before raw_files.json)."""
    files = {}
    for row in segments.drop_duplicates("path").itertuples(index=False):
        mtime, size = getattr(row, "binMtime", None), getattr(row, "binSize", None)
        files[str(row.path)] = {
            "size": None if size is None or pd.isna(size) else int(size),
            "mtime_ns": None if mtime is None or pd.isna(mtime) else round(float(mtime) * 1e9),
            "meta_sha256": None,
            "meta": {
                k: str(getattr(row, k)) for k in META_FIELDS if k != "fileCreateTime" and hasattr(row, k)
            },
        }
    return files


def raw_changes(sorting: SortingDir, segments: pd.DataFrame) -> list[str]:
    """One line per raw file of `segments` (the sorting's table) that differs from what the sorting saw."""
    if not _paths(segments):
        return []
    record = read_record(sorting)
    files = record["files"] if record is not None else _from_segments(segments)
    changes = []
    for path in _paths(segments):
        seen = files.get(path)
        if seen is None:
            continue
        change = _bin_change(Path(path), seen["size"], seen.get("mtime_ns"))
        if not change or change.endswith(": gone"):
            change = change or _meta_change(Path(path), seen.get("meta", {}), seen.get("meta_sha256"))
        if change:
            changes.append(change)
    return changes


def describe_changes(sorting: SortingDir, changes: list[str]) -> str:
    more = f"; and {len(changes) - _MAX_NAMED} more file(s)" if len(changes) > _MAX_NAMED else ""
    return f"raw data changed since {sorting.segments} was made: {'; '.join(changes[:_MAX_NAMED])}{more}"


def refuse_changes(sorting: SortingDir, changes: list[str]) -> None:
    """The one-line refusal: what changed, that nothing ran, the way forward."""
    raise UserError(
        f"{describe_changes(sorting, changes)}. Nothing was run or overwritten. Restore the file, or rerun "
        "with --refresh-segments to sort the files as they are now (every step reruns; old outputs are "
        "kept in *.bak/)"
    )


def check_unchanged(sorting: SortingDir) -> None:
    """Refuse (one line) when a raw file of the sorting's segments.htsv changed; nothing if it has none."""
    if not sorting.segments.exists():
        return
    from tasks.inputs.segments import read_segments

    changes = raw_changes(sorting, read_segments(sorting.segments))
    if changes:
        refuse_changes(sorting, changes)
