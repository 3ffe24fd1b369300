"""The demo end to end with the torch engine and with SpikeInterface's chain, side by side, on the same
world: wall time of each step, the motion error and the sorting accuracy against the ground truth.

    .venv/bin/python benchmarks/bench_demo_engines.py [--duration 60] [--n-jobs 2]

It checks what the engine issue asks of the demo: its motion error and accuracy no worse than with
`engine: spikeinterface`. Writes benchmarks/results/demo_engines.md.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

from common import (
    PYTHON,
    REPO,
    demo_target,
    ensure_demo_world,
    machine_lines,
    md_table,
    timed_process,
    write_result,
)

ENGINES = ("torch", "spikeinterface")


def projects_file(folder: Path, world: Path, engine: str) -> Path:
    """The world's shared project (exclusions) and a sorting project of this engine's own."""
    path = folder / f"projects_{engine}.yaml"
    path.write_text(
        f"---\nproject: shared\nproject_directory: {world / 'shared'}\n...\n"
        f"---\nproject: shared_ssd\nproject_directory: {folder / engine}\n...\n"
    )
    return path


def run(folder: Path, world: Path, engine: str, n_jobs: int) -> dict:
    import yaml

    from tasks.core.layout import SortingDir

    opts = yaml.safe_load((REPO / "opts" / "sorting_demo.yaml").read_text())
    opts["engine"] = engine
    opts_path = folder / f"opts_{engine}.yaml"
    opts_path.write_text(yaml.safe_dump(opts, sort_keys=False))
    target = demo_target()
    log = folder / f"{engine}.log"
    argv = [
        PYTHON, "-m", "tasks.commands.cli", "sort",
        "--projects-file", str(projects_file(folder, world, engine)),
        "--subjects-dir", str(world / "subjects"),
        "--cache-file", str(folder / f"cache_{engine}.parquet"),
        "--project", target.project, "--experiment", target.experiment,
        "--input", f"{target.subject},{target.probe}",
        "--opts", str(opts_path), "--n-jobs", str(n_jobs), "--local-scheduler",
    ]  # fmt: skip
    wall, cpu = timed_process(argv, log)
    sorting = SortingDir.locate(
        folder / engine, target.experiment, target.alias, target.subject, target.probe
    )
    steps = {}
    for manifest in sorted(sorting.pipeline.glob("*.json")):
        record = json.loads(manifest.read_text())
        if "started" in record and "finished" in record:
            took = datetime.fromisoformat(record["finished"]) - datetime.fromisoformat(record["started"])
            steps[manifest.stem] = took.total_seconds()
    report = timed_process([PYTHON, "-m", "containers.demo", "report", str(world), str(sorting.root)], log)
    text = log.read_text()
    motion = re.findall(r"motion vs ground truth: RMS error ([\d.]+) um", text)[-1]
    accuracy = re.findall(r"sorting \(\w+\) vs ground truth: (.*)", text)[-1]
    return {"wall": wall, "cpu": cpu, "steps": steps, "motion_um": float(motion), "accuracy": accuracy,
            "report_s": report[0]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=REPO / "benchmarks" / ".work" / "demo_engines")
    args = parser.parse_args()
    folder = args.folder.resolve()
    world = folder / "world"
    folder.mkdir(parents=True, exist_ok=True)
    ensure_demo_world(world, args.duration)
    results = {engine: run(folder, world, engine, args.n_jobs) for engine in ENGINES}
    names = sorted({step for r in results.values() for step in r["steps"]})
    rows = [[step, *(results[e]["steps"].get(step, float("nan")) for e in ENGINES)] for step in names]
    rows.append(["whole `wisc-sort sort` (wall)", *(results[e]["wall"] for e in ENGINES)])
    quality = [[e, results[e]["motion_um"], results[e]["accuracy"]] for e in ENGINES]
    text = "\n".join(
        [
            "# The demo, torch engine vs SpikeInterface's chain (benchmarks/bench_demo_engines.py)",
            "",
            *machine_lines(),
            f"- world: the demo's, {args.duration:.0f} s (NP1.0, 384 channels, 25 um zigzag); "
            f"opts/sorting_demo.yaml with `engine` set; --n-jobs {args.n_jobs}; one run after the other",
            "",
            "## Seconds per step",
            "",
            md_table(["step", *ENGINES], rows),
            "",
            "## Against the ground truth",
            "",
            md_table(["engine", "motion RMS error um", "sorting accuracy"], quality),
            "",
        ]
    )
    write_result("demo_engines", text)


if __name__ == "__main__":
    main()
