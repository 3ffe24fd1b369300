"""`wisc-sort scan-artifacts` (propose exclusions from the raw files) and `segments --with-proposed`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from tasks.core.errors import UserError
from tasks.inputs.artifacts import (
    artifact_options,
    bouts_table,
    proposed_path,
    raw_file,
    scan_file,
    write_proposed,
)
from tasks.inputs.exclusions import read_exclusions
from tasks.inputs.resolve import Resolved, Target, alias_files
from tasks.inputs.segments import build_segment_table
from tasks.inputs.spikeglx import read_meta
from tasks.options.files import default_options
from tasks.options.sorting import load_sorting_options
from tasks.settings import Paths

DEFAULT_OPTS = "sorting_chronic_df.yaml"


def scan_options(opts_file: Path | None, sorting_opts: Path) -> tuple[dict[str, float], Path]:
    """Thresholds from --opts, else the sorting's opts.yaml, else the shipped chronic defaults."""
    if opts_file is not None:
        source = Path(opts_file)
    elif sorting_opts.is_file():
        source = sorting_opts
    else:
        source = default_options(DEFAULT_OPTS)
    return artifact_options(load_sorting_options(source).data), source


def _meta_path(bin_path: Path) -> Path:
    return Path(bin_path).with_suffix(".meta")


def run_scan(paths: Paths, targets: list[Target], args: argparse.Namespace) -> int:
    found_all = [alias_files(paths, t) for t in targets]  # every input checked before anything is read
    for target, found in zip(targets, found_all, strict=True):
        options, source = scan_options(args.opts, found.sorting.opts)
        started, rows = time.monotonic(), []
        hours = float((found.files["nFileSamp"] / found.files["imSampRate"]).sum()) / 3600
        print(f"== {target.subject} {target.probe}: scanning {len(found.files)} files ({hours:.2f} h)")
        print(f"thresholds from {source}: " + ", ".join(f"{k} {v:g}" for k, v in options.items()))
        for _, row in found.files.iterrows():
            meta = read_meta(_meta_path(Path(row["path"])))
            raw = raw_file(row, meta)
            rows += [(str(row["fname"]), raw.rate, bout) for bout in scan_file(raw, options)]
        table = bouts_table(rows)
        out = proposed_path(found.exclusions_file)
        write_proposed(table, out)
        counts = table["type"].value_counts()
        summary = ", ".join(f"{counts.get(kind, 0)} {kind}" for kind in ("flat", "saturated", "transient"))
        print(f"proposed {len(table)} bouts ({summary}) in {time.monotonic() - started:.1f} s: {out}")
        if len(table):
            print(table.to_string(index=False))
        print(
            f"your exclusions ({found.exclusions_file}) are unchanged; compare with `wisc-sort segments ... "
            "--with-proposed`, then copy the rows you accept into your file"
        )
    return 0


def with_proposed(resolved: Resolved) -> tuple[Resolved, Path]:
    """The plan as it would be with the proposal's rows after the user's (the user's win on overlap)."""
    path = proposed_path(resolved.exclusions_file)
    if not path.is_file():
        raise UserError(
            f"no proposed exclusions at {path}; run `wisc-sort scan-artifacts` with the same inputs"
        )
    proposed = read_exclusions(path, resolved.experiment_files)
    merged = pd.concat([resolved.exclusions, proposed], ignore_index=True)
    segments = build_segment_table(resolved.files, merged)
    resolved.exclusions, resolved.segments = merged, segments
    return resolved, path
