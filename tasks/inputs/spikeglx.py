"""SpikeGLX discovery: parse `.meta` files and file names, scan session folders into the file table."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from tasks.core.errors import UserError, warn

# The file-table contract: one row per `.bin`, these columns in this order, these dtypes.
FILE_TABLE_DTYPES: dict[str, str] = {
    "subject": "str",
    "session": "str",
    "run": "str",
    "gate": "int64",
    "trigger": "int64",
    "probe": "str",
    "stream": "str",
    "fname": "str",
    "path": "str",
    "nSavedChans": "int64",
    "imSampRate": "float64",
    "fileSizeBytes": "int64",
    "fileTimeSecs": "float64",
    "firstSample": "int64",
    "fileCreateTime": "datetime64[ns]",
    "nApChans": "int64",
    "nLfChans": "int64",
    "nSyChans": "int64",
    "imDatPrb_type": "str",
    "nFileSamp": "int64",
    "fileDuration": "float64",
    "binSize": "int64",
    "binMtime": "float64",
}
FILE_TABLE_COLUMNS: list[str] = list(FILE_TABLE_DTYPES)

# <run>_g<G>_t<T>.imec<K>.<ap|lf>.bin; the greedy run absorbs any earlier "_g.._t.." in the run name.
# Phase 3A files have no probe index (".imec.ap.bin").
_BIN_NAME = re.compile(
    r"^(?P<run>.+)_g(?P<gate>\d+)_t(?P<trigger>\d+)\.(?P<probe>imec\d*)\.(?P<stream>ap|lf)\.bin$"
)
# Other SpikeGLX streams that live in the same folders and are not probe data: skipped without a warning.
_OTHER_SGLX_STREAM = re.compile(r"\.(nidq|obx\d*)\.bin$")
_REQUIRED_KEYS = ("nSavedChans", "imSampRate", "snsApLfSy")
_MAX_NAMED = 5


class MetaError(ValueError):
    """A `.meta` file that cannot be read or holds no `key=value` lines."""


class SessionFolders(NamedTuple):
    id: str
    ap: Path
    lf: Path


class SglxName(NamedTuple):
    run: str
    gate: int
    trigger: int
    probe: str
    stream: str


def read_meta(path: Path | str) -> dict[str, str]:
    """Read a SpikeGLX `.meta` (CRLF or LF) into a dict of strings; a leading `~` is dropped from keys."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise MetaError(f"{path}: cannot read the .meta ({err.strerror})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # user notes typed on a Windows rig; latin-1 never fails
        text = raw.decode("latin-1")
    meta: dict[str, str] = {}
    for line in text.splitlines():  # (measured faster than a regex: imroTbl lines are ~7 kB long)
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key:
            meta[key.removeprefix("~")] = value.strip()
    if not meta:
        raise MetaError(f"{path}: the .meta is empty or holds no key=value lines")
    return meta


def parse_bin_name(name: str) -> SglxName | None:
    """Split a SpikeGLX probe `.bin` name into its parts; None for any other name."""
    m = _BIN_NAME.match(name)
    if m is None:
        return None
    return SglxName(m["run"], int(m["gate"]), int(m["trigger"]), m["probe"], m["stream"])


def empty_file_table() -> pd.DataFrame:
    return pd.DataFrame({col: pd.Series(dtype=dtype) for col, dtype in FILE_TABLE_DTYPES.items()})


def coerce_file_table(df: pd.DataFrame) -> pd.DataFrame:
    """Put `df` in the contract's column order and dtypes (used after scanning and after reading Parquet)."""
    if df.empty:
        return empty_file_table()
    return df[FILE_TABLE_COLUMNS].astype(FILE_TABLE_DTYPES).reset_index(drop=True)


def _walk_bins(root: str) -> Iterator[tuple[str, set[str], list[os.DirEntry[str]]]]:
    """Yield (folder, names in it, `.bin` entries) for `root` and every folder below it."""
    stack = [root]
    seen: set[tuple[int, int]] = set()
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop or the same folder linked twice
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as err:
            raise UserError(
                f"{folder}: cannot list this folder ({err.strerror}); fix its permissions"
            ) from err
        bins = []
        for entry in entries:
            if entry.is_dir():
                # Trash and system folders (.Trash-1000, $RECYCLE.BIN) hold deleted copies, not data.
                if not entry.name.startswith((".", "$")):
                    stack.append(entry.path)
            elif entry.name.endswith(".bin") and entry.is_file():
                bins.append(entry)
        yield folder, {e.name for e in entries}, sorted(bins, key=lambda e: e.name)


def _warn_files(problem: str, paths: Sequence[str], consequence: str) -> None:
    """One warning per problem: up to _MAX_NAMED files named, plus the count."""
    if not paths:
        return
    named = ", ".join(paths[:_MAX_NAMED])
    more = f" and {len(paths) - _MAX_NAMED} more" if len(paths) > _MAX_NAMED else ""
    warn(f"{len(paths)} file(s) {problem}: {named}{more}; {consequence}")


def _to_int(value: str) -> int:
    return int(float(value)) if "." in value or "e" in value.lower() else int(value)


def _meta_values(meta: dict[str, str]) -> dict:
    """The file-table fields of a `.meta` (fileSizeBytes/fileTimeSecs None when absent); MetaError if bad."""
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise MetaError(f"the .meta lacks {', '.join(missing)}")
    try:
        ap, lf, sy = (int(v) for v in meta["snsApLfSy"].split(","))
        values = {
            "nSavedChans": int(meta["nSavedChans"]),
            "imSampRate": float(meta["imSampRate"]),
            "fileSizeBytes": int(meta["fileSizeBytes"]) if meta.get("fileSizeBytes") else None,
            "fileTimeSecs": float(meta["fileTimeSecs"]) if meta.get("fileTimeSecs") else None,
            "firstSample": _to_int(meta.get("firstSample") or "0"),
            "fileCreateTime": meta.get("fileCreateTime", ""),  # parsed for all rows at once
            "nApChans": ap,
            "nLfChans": lf,
            "nSyChans": sy,
            "imDatPrb_type": meta.get("imDatPrb_type") or "0",
        }
    except ValueError as err:
        raise MetaError(f"the .meta has a malformed number ({err})") from err
    if values["nSavedChans"] <= 0 or values["imSampRate"] <= 0:
        raise MetaError(f"the .meta has nSavedChans={meta['nSavedChans']}, imSampRate={meta['imSampRate']}")
    return values


def _check_size(
    path: str, bin_size: int, meta_size: int | None, n_chans: int, still_acquiring: list[str]
) -> int:
    """The `.meta`'s fileSizeBytes, checked against the `.bin` on disk and the sample size."""
    frame = 2 * n_chans
    if meta_size is None:
        # SpikeGLX writes fileSizeBytes when it closes the file: the file may still be acquiring.
        still_acquiring.append(path)
        return bin_size - bin_size % frame
    if bin_size != meta_size:
        raise UserError(
            f"{path}: the .bin is {bin_size} bytes but its .meta says fileSizeBytes={meta_size}; "
            "the copy is incomplete or the .meta belongs to another file: copy it again from the rig"
        )
    if meta_size % frame:
        raise UserError(
            f"{path}: fileSizeBytes={meta_size} is not a whole number of samples of nSavedChans={n_chans} "
            f"int16 channels ({frame} bytes each); the file is truncated or its .meta is wrong: copy it again"
        )
    return meta_size


def _scan_folder(root: Path, subject: str, session_id: str, streams: Iterable[str]) -> list[dict]:
    rows: list[dict] = []
    wanted = set(streams)
    bad_names: list[str] = []
    no_meta: list[str] = []
    bad_meta: list[str] = []
    acquiring: list[str] = []
    for folder, names, bins in _walk_bins(os.path.abspath(root)):
        for entry in bins:
            parts = parse_bin_name(entry.name)
            if parts is None:
                if not _OTHER_SGLX_STREAM.search(entry.name):
                    bad_names.append(entry.path)
                continue
            if parts.stream not in wanted:
                continue
            meta_name = entry.name[:-4] + ".meta"
            if meta_name not in names:
                no_meta.append(entry.path)
                continue
            meta_path = os.path.join(folder, meta_name)
            try:
                values = _meta_values(read_meta(meta_path))
            except MetaError as err:
                # Name the dropped .bin; the reason without the .meta path repeated.
                bad_meta.append(f"{entry.path} ({str(err).removeprefix(meta_path + ': ')})")
                continue
            n_chans, rate = values["nSavedChans"], values["imSampRate"]
            st = entry.stat()
            values["fileSizeBytes"] = _check_size(
                entry.path, st.st_size, values["fileSizeBytes"], n_chans, acquiring
            )
            n_samp = values["fileSizeBytes"] // (2 * n_chans)
            if values["fileTimeSecs"] is None:
                values["fileTimeSecs"] = n_samp / rate
            rows.append(
                {
                    "subject": subject,
                    "session": session_id,
                    **parts._asdict(),
                    "fname": entry.name,
                    "path": entry.path,
                    **values,
                    "nFileSamp": n_samp,
                    "fileDuration": n_samp / rate,
                    "binSize": st.st_size,
                    "binMtime": st.st_mtime,
                }
            )
    where = f"in session {session_id} of {subject}"
    _warn_files(f"{where} do not follow <run>_g<G>_t<T>.imec<K>.<ap|lf>.bin", bad_names, "skipped")
    _warn_files(f"{where} have no .meta beside them", no_meta, "dropped")
    _warn_files(f"{where} have an empty or unreadable .meta", bad_meta, "dropped")
    _warn_files(
        f"{where} have no fileSizeBytes in their .meta (still acquiring?)",
        acquiring,
        "using the whole samples of the .bin on disk; refresh the cache once acquisition has finished",
    )
    return rows


def _probe_order(probe: pd.Series) -> pd.Series:
    # imec2 before imec10; Phase 3A's bare "imec" first.
    return pd.to_numeric(probe.str.removeprefix("imec").replace("", "-1"))


def _order_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Acquisition order: run (by its first fileCreateTime, then name), gate, trigger, probe, stream."""
    run_start = df.groupby("run")["fileCreateTime"].transform("min")
    keys = pd.DataFrame(
        {
            "start": run_start.fillna(pd.Timestamp.max),
            "run": df["run"],
            "gate": df["gate"],
            "trigger": df["trigger"],
            "probe": _probe_order(df["probe"]),
            "stream": df["stream"],
        }
    )
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return df.loc[order].reset_index(drop=True)


def _check_unique(df: pd.DataFrame, session_id: str) -> None:
    dup = df["fname"].duplicated(keep=False)
    if dup.any():
        paths = df.loc[dup].sort_values("fname")["path"].head(2).tolist()
        raise UserError(
            f"session {session_id}: {df.loc[dup, 'fname'].iloc[0]} is found twice ({' and '.join(paths)}); "
            "move the extra copy out of the session folder"
        )


def scan_session(
    subject: str, session: SessionFolders, streams: Sequence[str] = ("ap", "lf")
) -> pd.DataFrame:
    """The file table of one session: AP files from its `ap` folder, LF files from its `lf` folder."""
    folders: dict[str, list[str]] = {}  # folder -> streams to take from it
    for stream in streams:
        folder = str(os.path.abspath(session.ap if stream == "ap" else session.lf))
        if not os.path.isdir(folder):
            raise UserError(
                f"session {session.id} of {subject}: the {stream} folder {folder} does not exist; "
                f"fix the session's `{stream}:` entry in the subject file or mount the drive"
            )
        folders.setdefault(folder, []).append(stream)
    rows = [
        row
        for folder, wanted in folders.items()
        for row in _scan_folder(Path(folder), subject, session.id, wanted)
    ]
    if not rows:
        return empty_file_table()
    df = pd.DataFrame(rows)
    times = pd.to_datetime(df["fileCreateTime"], format="ISO8601", errors="coerce")
    _warn_files(
        f"in session {session.id} have no readable fileCreateTime",
        df.loc[times.isna(), "path"].tolist(),
        "left empty (NaT); start_time/end_time aliases cannot select them",
    )
    df["fileCreateTime"] = times
    _check_unique(df, session.id)
    return _order_rows(coerce_file_table(df))


def scan_subject(subject: str, sessions: Sequence[SessionFolders]) -> pd.DataFrame:
    """The file table of a subject: its sessions' tables, in the given session order."""
    tables = [t for t in (scan_session(subject, s) for s in sessions) if not t.empty]
    if not tables:
        return empty_file_table()
    df = pd.concat(tables, ignore_index=True)
    n_sessions = df.groupby("fname")["session"].nunique()
    _warn_files(
        f"of {subject} share a name with a file in another session",
        n_sessions.index[n_sessions > 1].tolist(),
        "exclusions and start_file/end_file that name them are ambiguous; rename the runs",
    )
    return coerce_file_table(df)
