"""First run writes the sorting's own opts.yaml, exclusions.htsv and segments.htsv; later runs obey them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from tasks.core import atomic
from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.core.manifest import supersede
from tasks.inputs.raw_check import (
    describe_changes,
    raw_changes,
    read_record,
    record_path,
    refuse_changes,
    write_record,
)
from tasks.inputs.resolve import Resolved
from tasks.inputs.segments import SEGMENT_COLUMNS, read_segments, write_segments
from tasks.options.adopt import adopt_options
from tasks.options.sorting import dump_options, load_sorting_options, parse_sorting_options
from tasks.steps.registry import STEPS

EXCLUSION_COLUMNS = ["fname", "withinFileStartTime", "withinFileEndTime", "type"]


@dataclass
class SetupReport:
    created: bool = False
    messages: list[str] = field(default_factory=list)


def read_sorting_options(sorting: SortingDir) -> dict:
    """The sorting's own opts.yaml, validated like any options file (edits with typos are errors)."""
    try:
        data = yaml.safe_load(sorting.opts.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{sorting.opts}:{line}: malformed YAML; fix the file") from None
    return parse_sorting_options(data, str(sorting.opts)).data


def _exclusion_rows(df: pd.DataFrame) -> set[tuple]:
    return {
        (r.fname, round(float(r.withinFileStartTime), 6), round(float(r.withinFileEndTime), 6), r.type)
        for r in df[EXCLUSION_COLUMNS].itertuples(index=False)
    }


def exclusions_diff(stored: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    old, new = _exclusion_rows(stored), _exclusion_rows(current)
    return [f"+ {r[0]} {r[1]}-{r[2]} s {r[3]}" for r in sorted(new - old)] + [
        f"- {r[0]} {r[1]}-{r[2]} s {r[3]}" for r in sorted(old - new)
    ]


def _segments_key(segments: pd.DataFrame) -> list[tuple]:
    cols = SEGMENT_COLUMNS[:4] + ["path"]
    return [tuple(str(v) for v in row) for row in segments[cols].itertuples(index=False)]


def _read_exclusions_copy(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"fname": str, "type": str})


def _table_text(segments: pd.DataFrame) -> str:
    return segments.to_csv(sep="\t", index=False)


def write_exclusions_copy(exclusions: pd.DataFrame, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        exclusions[EXCLUSION_COLUMNS].to_csv(tmp, sep="\t", index=False)


def _backup(sorting: SortingDir, folder: str, files: list[Path]) -> Path:
    return atomic.backup_copies(sorting.root, folder, files)


def prepare_sorting(
    resolved: Resolved,
    opts_file: Path | None,
    replace_opts: bool = False,
    refresh_segments: bool = False,
) -> SetupReport:
    """Validate everything first, then write. A UserError leaves the sorting directory untouched."""
    sorting = resolved.sorting
    report = SetupReport()
    new_opts = load_sorting_options(opts_file) if opts_file is not None else None
    if new_opts is not None:
        report.messages += [f"options: {line}" for line in new_opts.translations]

    adoption = adopt_options(
        sorting.opts,
        lambda: read_sorting_options(sorting),
        new_opts.data if new_opts is not None else None,
        opts_file,
        replace_opts,
        "the sorting's opts.yaml",
        f"first run of {sorting.root}: pass --opts FILE (e.g. opts/sorting_chronic_df.yaml or "
        "opts/sorting_acute_df.yaml)",
    )
    report.created = adoption.write and not adoption.replaces

    write_segs = not sorting.segments.exists()
    raw_changed: list[str] = []
    if not write_segs:
        stored = read_segments(sorting.segments)
        raw_changed = raw_changes(sorting, stored)  # before any compute: the files the sorting was made from
        if raw_changed and not refresh_segments:
            refuse_changes(sorting, raw_changed)
        if raw_changed:
            report.messages.append(
                f"{describe_changes(sorting, raw_changed)}: segments refreshed, every step reruns"
            )
            write_segs = True
        elif _segments_key(stored) != _segments_key(resolved.segments):
            changes = []
            if sorting.exclusions.exists():
                changes = exclusions_diff(_read_exclusions_copy(sorting.exclusions), resolved.exclusions)
            detail = "; ".join(changes[:10]) or "the alias's files changed"
            if refresh_segments:
                report.messages.append(f"segments refreshed ({detail}): everything downstream reruns")
                write_segs = True
            else:
                report.messages.append(
                    f"warning: exclusions or files changed since {sorting.segments} was made ({detail}); "
                    "keeping the sorting's copy; pass --refresh-segments to adopt them (reruns everything)"
                )

    # Writes, only after every check passed. Superseded copies are kept, never overwritten.
    sorting.root.mkdir(parents=True, exist_ok=True)
    if write_segs:
        if sorting.segments.exists():
            _backup(sorting, "segments", [sorting.segments, sorting.exclusions, record_path(sorting)])
        same_table = (
            sorting.segments.exists() and _table_text(resolved.segments) == sorting.segments.read_text()
        )
        write_segments(resolved.segments, sorting.segments)
        write_exclusions_copy(resolved.exclusions, sorting.exclusions)
        write_record(sorting, resolved.segments)
        if raw_changed and same_table:  # a .meta edit the table does not show: the signatures cannot tell
            for step in STEPS:
                supersede(sorting, step)
    elif read_record(sorting) is None:  # a sorting made before the record: what it was made from, now
        write_record(sorting, read_segments(sorting.segments))
    if adoption.write:
        if adoption.replaces:
            report.messages.append(
                f"opts.yaml replaced; previous copy in {_backup(sorting, 'opts', [sorting.opts])}"
            )
        atomic.write_text(sorting.opts, dump_options(adoption.options))
    return report
