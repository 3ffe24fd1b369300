"""Exclusion files (`<probe>.ap.artifacts.htsv`): bouts of raw files to drop before sorting."""

from __future__ import annotations

import csv
import difflib
import io
import math
import shlex
from pathlib import Path

import pandas as pd

from tasks.core.errors import UserError
from tasks.core.layout import plain_name
from tasks.inputs.projects import read_user_text

COLUMNS = ["fname", "withinFileStartTime", "withinFileEndTime", "type"]
# The how-to spells the time columns differently from the lab's code: accept both.
ALIASES = {"fileStartTime": "withinFileStartTime", "fileEndTime": "withinFileEndTime"}
HEADER = "\t".join(COLUMNS)


def exclusions_path(exclusions_project_dir: Path, experiment: str, subject: str, probe: str) -> Path:
    folder = (
        Path(exclusions_project_dir) / plain_name(experiment, "experiment") / plain_name(subject, "subject")
    )
    return folder / f"{plain_name(probe, 'probe')}.ap.artifacts.htsv"


def empty_exclusions() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float if "Time" in c else str) for c in COLUMNS})
    frame.index.name = "row"
    return frame


def _header(path: Path, cells: list[str]) -> dict[str, int]:
    """Column name -> position, mapping the how-to's spelling onto ours."""
    names = [c.strip() for c in cells]
    position: dict[str, int] = {}
    for i, name in enumerate(names):
        canonical = ALIASES.get(name, name)
        if canonical in position:
            raise UserError(
                f"{path}: header line 1 has column `{canonical}` twice (or in both spellings); keep one."
            )
        position[canonical] = i
    missing = [c for c in COLUMNS if c not in position]
    if missing:
        hint = " Separate columns with tabs, not spaces." if len(names) == 1 and " " in names[0] else ""
        raise UserError(
            f"{path}: header line 1 lacks column(s) {', '.join(missing)}; the header must be "
            f"`{HEADER.replace(chr(9), ' <TAB> ')}` (or fileStartTime/fileEndTime).{hint}"
        )
    return position


def _time(path: Path, row: int, line: int, name: str, text: str) -> float:
    where = f"{path}: data row {row} (line {line}) column {name}"
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: `{text}` is not a number; write seconds within the file.") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{where}: `{text}` must be a finite number of seconds >= 0.")
    return value


def read_exclusions(path: Path, experiment_files: pd.DataFrame) -> pd.DataFrame:
    """Validated exclusions, in file order (order matters: the first listed wins on overlap).

    The index is the 1-based data row number, so later messages can point at the row.
    `experiment_files` is the file table of every session of the experiment (all probes, both streams).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"exclusions file {path} not found; the lab requires it even when empty: create it with "
            f"mkdir -p {shlex.quote(str(path.parent))} && "
            f"printf '{HEADER.replace(chr(9), chr(92) + 't')}\\n' > {shlex.quote(str(path))}"
        )
    rows = csv.reader(io.StringIO(read_user_text(path), newline=""), delimiter="\t")
    lines = [(n, cells) for n, cells in enumerate(rows, start=1)]
    lines = [(n, cells) for n, cells in lines if any(c.strip() for c in cells)]  # blank lines carry nothing
    if not lines:
        return empty_exclusions()
    position = _header(path, lines[0][1])
    known = set(experiment_files["fname"].astype(str))
    records, rows = [], []
    for row, (line, cells) in enumerate(lines[1:], start=1):
        where = f"{path}: data row {row} (line {line})"
        if len(cells) > len(lines[0][1]) or len(cells) <= max(position[c] for c in COLUMNS):
            raise UserError(
                f"{where}: has {len(cells)} tab-separated cells, the header has {len(lines[0][1])}; "
                "fix the row."
            )
        fname, start_text, end_text, kind = (cells[position[c]].strip() for c in COLUMNS)
        if fname not in known:
            close = difflib.get_close_matches(fname, sorted(known), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(
                f"{where}: file `{fname}` is in no session of the experiment; "
                f"fix the name (a .bin file name, e.g. run_g0_t0.imec0.ap.bin) or remove the row.{hint}"
            )
        start = _time(path, row, line, "withinFileStartTime", start_text)
        end = _time(path, row, line, "withinFileEndTime", end_text)
        if end <= start:
            raise UserError(
                f"{where}: end time {end_text} is not after start time {start_text}; fix the row."
            )
        if not kind:
            raise UserError(f"{where}: empty `type`; label the bout (e.g. flat or artifact).")
        records.append((fname, start, end, kind))
        rows.append(row)
    if not records:
        return empty_exclusions()
    frame = pd.DataFrame.from_records(records, columns=COLUMNS, index=pd.Index(rows, name="row"))
    return frame.astype({"fname": str, "type": str})
