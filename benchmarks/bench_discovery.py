"""Benchmark SpikeGLX discovery: cold scan, cache refresh, cached read (+ segment table) on a sparse archive.

Usage: python benchmarks/bench_discovery.py [--files 2000] [--out DIR] [--repeat 3]
Writes benchmarks/results/discovery.md. The archive is sparse (no data blocks), so any size is cheap.
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from tasks.inputs.cache import read_cached, refresh_cache  # noqa: E402
from tasks.inputs.spikeglx import SessionFolders, scan_subject  # noqa: E402
from tests.support.sglx_fixtures import META_DIR, write_file  # noqa: E402

TEMPLATE = META_DIR / "allan-longcol_g0_t0.imec0.ap.meta"  # a genuine 7 KB NP1.0 .meta
SESSIONS, GATES, PROBES, STREAMS = 5, 2, ("imec0", "imec1"), ("ap", "lf")
RATES = {"ap": 29999.941586, "lf": 2499.995132}
SECONDS = 7200  # two-hour files, as the lab records them


def make_archive(root: Path, n_files: int) -> list[SessionFolders]:
    per_trigger = SESSIONS * GATES * len(PROBES) * len(STREAMS)
    n_triggers = math.ceil(n_files / per_trigger)
    template = TEMPLATE.read_bytes().decode("latin-1")
    written = 0
    sessions = []
    for s in range(SESSIONS):
        sid = f"3-{s + 1}-2021"
        for gate in range(GATES):
            for trigger in range(n_triggers):
                for probe in PROBES:
                    for stream in STREAMS:
                        if written == n_files:
                            break
                        n_samp = int(SECONDS * RATES[stream])
                        fields = {
                            "imSampRate": RATES[stream],
                            "fileSizeBytes": n_samp * 2 * 385,
                            "fileTimeSecs": n_samp / RATES[stream],
                            "fileCreateTime": f"2021-03-{s + 1:02d}T{gate:02d}:{trigger % 60:02d}:00",
                            "snsApLfSy": "384,0,1" if stream == "ap" else "0,384,1",
                        }
                        write_file(
                            root / sid, sid, gate, trigger, probe, stream, meta_text=template, fields=fields
                        )
                        written += 1
        sessions.append(SessionFolders(sid, root / sid, root / sid))
    return sessions


def timed(fn: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def segment_timing(files: pd.DataFrame, repeat: int) -> tuple[str, list[float] | None]:
    try:
        from tasks.inputs.segments import build_segment_table
    except ImportError as err:
        return f"tasks.inputs.segments not available ({err})", None
    ap = files[(files["stream"] == "ap") & (files["probe"] == "imec0")].reset_index(drop=True)
    # One 10 s artifact in every 10th file: a realistic, sparse exclusions table.
    excl = pd.DataFrame(
        {
            "fname": ap["fname"].iloc[::10].tolist(),
            "withinFileStartTime": 100.0,
            "withinFileEndTime": 110.0,
            "type": "artifact",
        }
    )
    times, table = timed(lambda: build_segment_table(ap, excl), repeat)
    return f"segment table ({len(ap)} AP files of imec0, {len(excl)} exclusions -> {len(table)} rows)", times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="number of .bin files (default 2000)")
    parser.add_argument("--out", type=Path, help="folder for the archive (default: a temporary one, removed)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-sglx-", dir=args.out))
    try:
        start = time.perf_counter()
        sessions = make_archive(root / "archive", args.files)
        make_s = time.perf_counter() - start
        cache = root / "cache" / "files.parquet"
        ids = [s.id for s in sessions]
        rows: list[tuple[str, list[float]]] = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the archive is clean: any warning is a bug
            t, files = timed(lambda: scan_subject("BENCH", sessions), args.repeat)
            rows.append((f"discovery: scan_subject ({len(files)} files, {len(sessions)} sessions)", t))
            t, diff = timed(lambda: refresh_cache(cache, {"BENCH": sessions}), args.repeat)
            rows.append((f"refresh_cache (scan + diff + write Parquet, {cache.stat().st_size} B)", t))
            t, cached = timed(lambda: read_cached(cache, "BENCH", ids), args.repeat)
            rows.append((f"read_cached incl. stat check ({len(cached)} rows)", t))
            label, seg_times = segment_timing(files, args.repeat)
        if seg_times is not None:
            rows.append((label, seg_times))
        lines = [
            "# SpikeGLX discovery benchmark",
            "",
            f"{len(files)} sparse .bin + genuine-size .meta files ({SESSIONS} sessions x {GATES} gates x "
            f"triggers x {len(PROBES)} probes x ap/lf), generated in {make_s:.2f} s. Machine: "
            f"{platform.machine()}, Python {platform.python_version()}, pandas {pd.__version__}; warm page "
            f"cache; {args.repeat} runs each.",
            "",
            "| step | min (s) | median (s) |",
            "|---|---:|---:|",
            *(f"| {name} | {min(t):.4f} | {statistics.median(t):.4f} |" for name, t in rows),
        ]
        if seg_times is None:
            lines += ["", f"Segment table not timed: {label}."]
        text = "\n".join(lines) + "\n"
        print(text)
        results = REPO / "benchmarks" / "results"
        results.mkdir(parents=True, exist_ok=True)
        (results / "discovery.md").write_text(text)
    finally:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
