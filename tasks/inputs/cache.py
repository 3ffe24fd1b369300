"""Parquet cache of every subject's SpikeGLX file table: read with a staleness check, refresh with a diff."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.atomic import atomic_path
from tasks.core.errors import UserError, warn
from tasks.inputs.spikeglx import (
    FILE_TABLE_COLUMNS,
    SessionFolders,
    coerce_file_table,
    empty_file_table,
    scan_subject,
)

# Parquet schema metadata: the columns the cache was written with and the sessions scanned per subject,
# so that a session scanned with no files in it still counts as cached.
_META_KEY = b"wisc_file_table"
_KEY = ["subject", "session", "path"]
_MAX_NAMED = 5
_MAX_EXAMPLES = 10
REFRESH_HINT = "run `wisc-sort refresh-cache`"


@dataclass(frozen=True)
class CacheDiff:
    """What a refresh changed: `added`/`removed` hold subject, session, path; `changed` one row per value."""

    added: pd.DataFrame
    removed: pd.DataFrame
    changed: pd.DataFrame  # subject, session, path, column, old, new (values as text)

    @property
    def n_changed(self) -> int:
        """Number of files (not values) that changed."""
        return len(self.changed.drop_duplicates(_KEY))

    def summary(self, n_examples: int = _MAX_EXAMPLES) -> str:
        lines = [f"{len(self.added)} rows added, {len(self.removed)} removed, {self.n_changed} changed"]
        for mark, frame in (("+", self.added), ("-", self.removed)):
            lines += [
                f"  {mark} {r.subject} {r.session} {r.path}" for r in frame.head(n_examples).itertuples()
            ]
            lines += _more(len(frame), n_examples)
        groups = list(self.changed.groupby(_KEY, sort=False))
        for (subject, session, path), rows in groups[:n_examples]:
            what = "; ".join(f"{r.column} {r.old} -> {r.new}" for r in rows.itertuples())
            lines.append(f"  ~ {subject} {session} {path}: {what}")
        lines += _more(len(groups), n_examples)
        return "\n".join(lines)


def _more(n: int, shown: int) -> list[str]:
    return [f"    ... and {n - shown} more"] if n > shown else []


def _read(cache_file: Path, subject: str | None = None) -> tuple[pd.DataFrame, dict[str, list[str]]] | None:
    """Cached rows (of one subject or all) and scanned sessions; None if missing, unreadable or outdated."""
    if not cache_file.is_file():
        return None
    try:
        filters = [("subject", "==", subject)] if subject is not None else None
        table = pq.read_table(cache_file, filters=filters)
        info = json.loads((table.schema.metadata or {})[_META_KEY])
    except (OSError, pa.ArrowException, KeyError, ValueError) as err:
        warn(f"{cache_file}: cannot read the file-table cache ({err}); rescanning instead; {REFRESH_HINT}")
        return None
    if info.get("columns") != FILE_TABLE_COLUMNS:  # written by an older version: rescan
        return None
    return coerce_file_table(table.to_pandas()), info["sessions"]


def stale_files(df: pd.DataFrame) -> list[str]:
    """Paths of cached rows whose `.bin` is gone or whose size or mtime no longer match."""
    stale = []
    for path, size, mtime in zip(df["path"], df["binSize"], df["binMtime"], strict=True):
        try:
            st = os.stat(path)
        except OSError:
            stale.append(f"{path} (gone)")
            continue
        if st.st_size != size or st.st_mtime != mtime:
            stale.append(path)
    return stale


def read_cached(cache_file: Path, subject: str, session_ids: Sequence[str]) -> pd.DataFrame | None:
    """The cached file table of these sessions (in this order), or None if any of them is not cached."""
    cached = _read(Path(cache_file), subject)
    if cached is None:
        return None
    df, sessions = cached
    known = set(sessions.get(subject, []))
    if any(s not in known for s in session_ids):
        return None
    position = {s: i for i, s in enumerate(session_ids)}
    df = df[df["session"].isin(position)]
    df = df.iloc[df["session"].map(position).argsort(kind="stable")]
    df = coerce_file_table(df)
    stale = stale_files(df)
    if stale:
        more = f" and {len(stale) - _MAX_NAMED} more" if len(stale) > _MAX_NAMED else ""
        warn(
            f"{len(stale)} of {len(df)} cached files of {subject} changed on disk since the cache was made "
            f"(size, mtime or gone): {', '.join(stale[:_MAX_NAMED])}{more}; {REFRESH_HINT}"
        )
    return df


def diff_tables(old: pd.DataFrame, new: pd.DataFrame) -> CacheDiff:
    """Rows added, removed and changed between two file tables, matched on subject, session and path."""
    old_i, new_i = old.set_index(_KEY), new.set_index(_KEY)
    added = new_i.index.difference(old_i.index, sort=False).to_frame(index=False)
    removed = old_i.index.difference(new_i.index, sort=False).to_frame(index=False)
    common = new_i.index.intersection(old_i.index, sort=False)
    parts = []
    for col in new_i.columns:
        a, b = old_i.loc[common, col], new_i.loc[common, col]
        differs = ~((a == b) | (a.isna() & b.isna()))
        if differs.any():
            part = pd.DataFrame({"column": col, "old": a[differs].astype(str), "new": b[differs].astype(str)})
            parts.append(part.reset_index())
    columns = [*_KEY, "column", "old", "new"]
    changed = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    return CacheDiff(added=added, removed=removed, changed=changed)


def refresh_cache(cache_file: Path, subjects: Mapping[str, Sequence[SessionFolders]]) -> CacheDiff:
    """Rescan these subjects and rewrite the cache atomically; other subjects' rows are kept as they are."""
    cache_file = Path(cache_file)
    if cache_file.exists() and not cache_file.is_file():
        raise UserError(
            f"{cache_file} is not a file; point --cache-file or [wisc] cache_file at a .parquet file"
        )
    # Scan everything first: a UserError here leaves the cache untouched.
    fresh = {subject: scan_subject(subject, sessions) for subject, sessions in subjects.items()}
    old, sessions = _read(cache_file) or (empty_file_table(), {})
    kept = old[~old["subject"].isin(list(subjects))]
    tables = [t for t in (kept, *fresh.values()) if not t.empty]
    new = coerce_file_table(pd.concat(tables, ignore_index=True)) if tables else empty_file_table()
    sessions = {s: ids for s, ids in sessions.items() if s not in subjects}
    sessions |= {subject: [s.id for s in folders] for subject, folders in subjects.items()}
    table = pa.Table.from_pandas(new, preserve_index=False)
    info = json.dumps({"columns": FILE_TABLE_COLUMNS, "sessions": sessions})
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: info.encode()})
    with atomic_path(cache_file) as tmp:
        pq.write_table(table, tmp)
    return diff_tables(old, new)
