"""Benchmark `wisc-sort status` on 500 sortings (every step manifested; a quarter stale, a quarter unsorted).

Usage: python benchmarks/bench_status.py [--sortings 500] [--repeat 3] [--out DIR]
Writes benchmarks/results/status.md. The sortings are synthetic but shaped like real ones: the lab's chronic
options, a 23 h segment table of 12 files, small output files with real manifests (status reads only
manifests, opts.yaml and segments.htsv, and stats outputs, so output sizes do not matter). Side by side:
`find` listing the same tree (the cost of just walking it) and the command in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, machine_lines  # noqa: E402
from tasks.commands.status import collect  # noqa: E402
from tasks.core.layout import SortingDir  # noqa: E402
from tasks.core.manifest import write_manifest  # noqa: E402
from tasks.steps.registry import STEPS, expected, load_inputs, prepro_steps  # noqa: E402

RATE = 30000.0
UNITS = 300  # units of a typical chronic sort
COLUMNS = "fname type withinFileStartFrame withinFileEndFrame nSegmentSamp segmentDuration fileDuration"
COLUMNS += " subject session imSampRate nSavedChans run gate trigger probe stream nFileSamp path"


def segment_table(subject: str, probe: str) -> str:
    """12 two-hour files, one flat bout dropped in two of them: ~23.9 h kept."""
    rows, n = [COLUMNS.replace(" ", "\t")], int(7200 * RATE)
    for k in range(12):
        fname = f"{subject}_g0_t{k}.{probe}.ap.bin"
        cuts = (
            [(0, n)]
            if k % 6
            else [(0, n // 2), (n // 2, n // 2 + int(60 * RATE)), (n // 2 + int(60 * RATE), n)]
        )
        for i, (a, b) in enumerate(cuts):
            kind = "flat" if len(cuts) == 3 and i == 1 else "keep"
            fields = [fname, kind, a, b, b - a, (b - a) / RATE, 7200.0, subject, "s1", RATE, 385, "run", 0, k]
            fields += [probe, "ap", n, f"/archive/{subject}/s1/{fname}"]
            rows.append("\t".join(map(str, fields)))
    return "\n".join(rows) + "\n"


def make_sorting(sorting: SortingDir, opts_text: str, kind: str, distinct: bool) -> None:
    sorting.root.mkdir(parents=True)
    if distinct:  # worst case: no two sortings share an options text (each is parsed)
        opts_text = f"# {sorting.root}\n{opts_text}"
    sorting.opts.write_text(opts_text)
    sorting.segments.write_text(segment_table(sorting.root.parent.name, sorting.root.name[8:]))
    opts, _ = load_inputs(sorting)
    steps = [*prepro_steps(opts), "recording_dat"] + ([] if kind == "unsorted" else ["sort"])
    for step in steps:
        for rel in STEPS[step].outputs:
            path = sorting.path(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".npy":  # loadable: curation reads the sort's spike_clusters.npy
                np.save(path, np.repeat(np.arange(UNITS), 50))
            else:
                path.write_bytes(b"x" * 64)
        write_manifest(sorting, expected(sorting, step), "2026-01-01T00:00:00")
    if kind == "done":  # curated in phy
        labels = "".join(f"{u}\t{'good' if u % 3 else 'mua'}\n" for u in range(UNITS))
        for name in ("cluster_info.tsv", "cluster_group.tsv"):
            (sorting.sorter_output / name).write_text(f"cluster_id\tgroup\n{labels}")
    if kind == "stale":  # an option edited after the run
        sorting.opts.write_text(opts_text.replace("bin_s: 60.0", "bin_s: 30.0"))


def make_tree(root: Path, n: int, distinct: bool = False) -> Path:
    opts_text = (REPO / "opts" / "sorting_chronic_df.yaml").read_text()
    assert "bin_s: 60.0" in opts_text
    kinds = ["done", "done", "stale", "unsorted"]
    for i in range(n):
        subject, probe = f"SUBJ{i // 4:03d}-Mouse", f"imec{i % 4}"
        sorting = SortingDir.locate(root / "ssd", f"exp{i % 5}", "full", subject, probe)
        make_sorting(sorting, opts_text, kinds[i % 4], distinct)
    projects = root / "projects.yaml"
    projects.write_text(f"project: ssd\nproject_directory: {root / 'ssd'}\n...\n")
    return projects


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def clear_caches() -> None:
    from tasks.steps import registry as steps

    for cached in (steps._read_inputs, steps._parse_options, steps._expected):
        cached.cache_clear()


def cold_collect(directories: dict) -> None:
    clear_caches()
    collect(directories)


def measure(work: Path, n: int, repeat: int, distinct: bool) -> tuple[dict, dict[str, list[float]]]:
    from tasks.inputs.projects import load_projects

    projects = make_tree(work, n, distinct)
    directories = dict(load_projects(projects))
    rows = collect(directories)  # warms the page cache; checks the labels
    assert len(rows) == n and not any(r.problem for r in rows), rows[:1]
    counts: dict[str, int] = {}
    for row in rows:
        stale, sorted_ = "stale" in row.steps.values(), row.steps["sort"] == "done"
        key = "stale" if stale else ("done" if sorted_ else "unsorted")
        counts[key] = counts.get(key, 0) + 1
    wisc_sort = str(Path(sys.executable).with_name("wisc-sort"))
    command = [wisc_sort, "status", "--projects-file", str(projects)]
    quiet = {"cwd": str(work), "capture_output": True, "check": True}
    times = {
        "`find` over the tree (walk only, reads nothing)": [
            timed(lambda: subprocess.run(["find", str(work / "ssd")], **quiet)) for _ in range(repeat)
        ],
        "status in process, caches cleared (`tasks.commands.status.collect`)": [
            timed(lambda: cold_collect(directories)) for _ in range(repeat)
        ],
        "`wisc-sort status` (fresh process, text)": [
            timed(lambda: subprocess.run(command, **quiet)) for _ in range(repeat)
        ],
        "`wisc-sort status --json` (fresh process)": [
            timed(lambda: subprocess.run([*command, "--json"], **quiet)) for _ in range(repeat)
        ],
        "`wisc-sort status --help` (process start + imports only)": [
            timed(lambda: subprocess.run([wisc_sort, "status", "--help"], **quiet)) for _ in range(repeat)
        ],
    }
    return counts, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sortings", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir, removed)")
    args = parser.parse_args()
    n = args.sortings
    lines = [
        f"# `wisc-sort status`: {n} sortings",
        "",
        *machine_lines(),
        f"- tree: {n} sortings (lab chronic options, 8 manifested steps each, 23.9 h segment tables, "
        "a quarter with an option edited after the run, a quarter not sorted yet)",
        f"- median of {args.repeat} runs, warm page cache; target: under 2 s for 500; shared machine "
        "(load average at start: " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + ")",
    ]
    for distinct, title in ((False, "lab default options shared"), (True, "every opts.yaml different")):
        work = (args.out or Path(tempfile.mkdtemp(prefix="bench-status-"))) / (
            "distinct" if distinct else "shared"
        )
        try:
            counts, times = measure(work, n, args.repeat, distinct)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        base = statistics.median(next(iter(times.values())))
        lines += [
            "",
            f"## {title} (labels found: {counts})",
            "",
            "| what | median s | per sorting ms | vs find |",
        ]
        lines.append("|---|---:|---:|---:|")
        for name, values in times.items():
            med = statistics.median(values)
            lines.append(f"| {name} | {med:.3f} | {1000 * med / n:.2f} | {med / base:.1f}x |")
    lines += [
        "",
        "Process start is mostly importing `tasks` (its `__init__` registers the Luigi tasks, which pulls",
        "in luigi and pandas). The curation column reads phy's tsv files with the csv module and takes the",
        "units from cluster_info.tsv (the gate itself loads spike_clusters.npy).",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "status.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
