"""Benchmark the preprocessing pipeline against a plain SpikeInterface script, reruns, and CPU use per step.

Usage: python benchmarks/bench_prepro.py [--duration 20] [--world DIR] [--n-jobs 2] [--repeat N]
Writes benchmarks/results/prepro.md. In one run, on one demo world (384-channel NP1.0):
(a) `wisc-sort sort --prepro-only --n-jobs N` as a user runs it (fresh process, Luigi, a step program each);
(b) the same work as one plain SpikeInterface script (this file with --plain-worker, a fresh process);
(c) a rerun after editing the sorting's estimate_motion_kwargs.bin_s (peaks.npy must keep its inode);
(d) cores used by `python -m containers peaks|motion <dir> --n-jobs 1|2` (child CPU time / wall).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PYTHON,
    REPO,
    best_of,
    chain_summary,
    demo_kept_pieces,
    demo_paths,
    demo_segments,
    demo_target,
    drift_params,
    ensure_demo_world,
    load_average,
    machine_lines,
    md_table,
    run_cpu,
    timed_process,
    write_result,
)

STEPS = ("peaks", "peak_locations", "motion", "motion_clean", "motion_plot", "preprocessed_probe")
PLAIN_STAGES = ("detect_peaks", "localize_peaks", "estimate_motion", "clean", "plot", "probe")
STEP_STARTUP = (
    "from tasks.core.threads import cap_threads_env; cap_threads_env(2); from containers import stepping"
)
STEP_PRE = (
    f"{STEP_STARTUP}; stepping.registry()"  # what a step program imports before its manifest's `started`
)
IN_STEP = (
    "import containers.motion.stages, containers.recording.chain, containers.motion.plot, probeinterface"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain-worker", type=Path, help=argparse.SUPPRESS)  # internal: run (b) from a spec
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of demo world (default 20)")
    parser.add_argument("--world", type=Path, help="demo world folder, reused if its duration matches")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--opts", type=Path, default=REPO / "opts" / "sorting_demo.yaml")
    parser.add_argument("--repeat", type=int, default=1, help="pipeline/plain pairs, alternating order")
    parser.add_argument("--cpu-cap-s", type=float, default=40.0, help="stop a (d) run after this long")
    return parser.parse_args(argv)


def manifests(sorting) -> dict[str, dict]:
    return {s: json.loads(sorting.manifest(s).read_text()) for s in STEPS if sorting.manifest(s).exists()}


def pipeline_run(world: Path, args, log: Path, *extra: str) -> dict:
    """One `wisc-sort sort --prepro-only`: wall, CPU, and each step's working time (from its manifest)."""
    from tasks.inputs.resolve import resolve

    paths, target = demo_paths(world), demo_target()
    sorting = resolve(paths, target).sorting
    before = {s: m["finished"] for s, m in manifests(sorting).items()}
    argv = [
        PYTHON, "-m", "tasks.commands.cli", "sort", "--projects-file", str(paths.projects_file),
        "--subjects-dir", str(paths.subjects_dir), "--cache-file", str(paths.cache_file),
        "--project", target.project, "--experiment", target.experiment,
        "--input", f"{target.subject},{target.probe}", "--n-jobs", str(args.n_jobs),
        "--local-scheduler", "--prepro-only", *extra,
    ]  # fmt: skip
    wall, cpu = timed_process(argv, log)
    ran = {s: m for s, m in manifests(sorting).items() if before.get(s) != m["finished"]}
    span = {
        s: datetime.fromisoformat(m["finished"]) - datetime.fromisoformat(m["started"])
        for s, m in ran.items()
    }
    n_peaks = ran["peaks"].get("n_peaks") if "peaks" in ran else None
    steps = {s: span[s].total_seconds() for s in STEPS if s in span}
    return {"wall": wall, "cpu": cpu, "steps": steps, "sorting": sorting, "n_peaks": n_peaks}


def plain_run(world: Path, args, scratch: Path, log: Path) -> dict:
    kept = demo_kept_pieces(demo_segments(world))
    spec = {"kept": kept, "opts": str(args.opts_copy), "n_jobs": args.n_jobs, "out": str(scratch / "plain")}
    shutil.rmtree(spec["out"], ignore_errors=True)
    spec_path = scratch / "plain.json"
    spec_path.write_text(json.dumps(spec))
    wall, cpu = timed_process([PYTHON, __file__, "--plain-worker", str(spec_path)], log)
    return {"wall": wall, "cpu": cpu, **json.loads((Path(spec["out"]) / "times.json").read_text())}


def fixed_costs(world: Path, opts_path: Path) -> dict[str, float]:
    """Costs a step program pays each time that one script pays once, measured apart (best of 3)."""
    import yaml

    from containers.recording.chain import load_kept_recording, preprocess_for_motion
    from containers.runtime.progress import ProgressFile
    from tasks.inputs.resolve import resolve
    from tasks.inputs.segments import read_segments

    def python(code: str):
        return lambda: subprocess.run([PYTHON, "-c", code], cwd=REPO, check=True, capture_output=True)

    sorting = resolve(demo_paths(world), demo_target()).sorting
    chain = yaml.safe_load(opts_path.read_text())["preprocessing"]
    progress = ProgressFile(Path(tempfile.mkdtemp()) / "p.json", "bench")
    interpreter = best_of(python("pass"))
    pre = best_of(python(STEP_PRE))
    return {
        "interpreter": interpreter,
        "step_pre": pre - interpreter,
        "in_step_imports": best_of(python(f"{STEP_PRE}; {IN_STEP}")) - pre,
        "cli_imports": best_of(python("import tasks.commands.cli, tasks.commands.sort, tasks.steps.pipeline"))
        - interpreter,
        "recording": best_of(
            lambda: preprocess_for_motion(load_kept_recording(read_segments(sorting.segments)), chain)
        ),
        "progress_write": best_of(lambda: [progress.update(50.0, "x", force=True) for _ in range(100)]) / 100,
    }


def edit_bin_s(sorting) -> tuple[float, float]:
    import yaml

    opts = yaml.safe_load(sorting.opts.read_text())
    estimate = drift_params(opts)["estimate_motion_kwargs"]
    old = float(estimate["bin_s"])
    estimate["bin_s"] = new = round(old * 0.8, 3)
    sorting.opts.write_text(yaml.safe_dump(opts, sort_keys=False))
    return old, new


def overhead_rows(run: dict, noop_wall: float, fixed: dict) -> tuple[list[list[object]], float]:
    """Where the pipeline's time outside the work goes; returns rows and the fixed overhead in seconds."""
    n = len(run["steps"])
    outside = run["wall"] - sum(run["steps"].values())
    per_step = fixed["interpreter"] + fixed["step_pre"]
    in_step = fixed["in_step_imports"] * n
    rebuilt = fixed["recording"] * len([s for s in run["steps"] if s != "motion_clean"])
    progress = fixed["progress_write"] * run["wall"] * 2  # <= 1 write/s in the step, 1 read/s in the executor
    rows = [
        ["outside step functions (wall - sum of manifest started->finished)", round(outside, 2), ""],
        ["  CLI: start, imports, file table, setup, Luigi complete() checks", round(noop_wall, 2),
         "measured: the same command, everything done"],
        ["  step programs: interpreter start + imports before `started`", round(per_step * n, 2),
         f"{per_step:.2f} s x {n} steps"],
        ["  rest: Luigi scheduling of the steps, process exits", round(outside - noop_wall - per_step * n, 2),
         "remainder"],
        ["inside step functions, repeated per step", round(in_step + rebuilt, 2), ""],
        ["  spikeinterface/matplotlib imports inside step functions", round(in_step, 2),
         f"{fixed['in_step_imports']:.2f} s x {n} (a script pays it once)"],
        ["  recording + chain rebuilt", round(rebuilt, 2), f"{fixed['recording']:.3f} s each"],
        ["progress: file writes (<= 1/s) and executor polling (1/s)", round(progress, 3),
         f"{fixed['progress_write'] * 1000:.2f} ms per write"],
    ]  # fmt: skip
    return rows, outside + in_step + rebuilt


# ---- (b) the plain SpikeInterface script: what a user would write by hand, in one process ----


def plain_worker(spec_path: Path) -> int:
    times: dict[str, float] = {}
    mark = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        times[name] = now - mark[0]
        mark[0] = now

    spec = json.loads(spec_path.read_text())
    import numpy as np
    import probeinterface
    import spikeinterface.extractors as se
    import spikeinterface.preprocessing as spre
    import yaml
    from spikeinterface.core import concatenate_recordings, select_segment_recording
    from spikeinterface.core.motion import Motion
    from spikeinterface.sortingcomponents.motion import estimate_motion, interpolate_motion
    from spikeinterface.sortingcomponents.motion.motion_cleaner import clean_motion_vector
    from spikeinterface.sortingcomponents.peak_detection import detect_peaks
    from spikeinterface.sortingcomponents.peak_localization import localize_peaks

    from containers.motion.plot import plot_motion_summary  # the lab's figure, as the pipeline draws it

    lap("imports")
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    chain = yaml.safe_load(Path(spec["opts"]).read_text())["preprocessing"]
    i = [s["step_name"] for s in chain].index("drift_correction")
    before, drift, after = chain[:i], chain[i]["step_params"], chain[i + 1 :]
    job = {"n_jobs": spec["n_jobs"], "chunk_duration": "1s", "progress_bar": True}

    gates = {}
    pieces = []
    for gate, segment, start, end in spec["kept"]:
        if gate not in gates:
            gates[gate] = se.read_spikeglx(gate, stream_id="imec0.ap")
        pieces.append(select_segment_recording(gates[gate], segment).frame_slice(start, end))
    rec = spre.scale_to_uV(concatenate_recordings(pieces, sampling_frequency_max_diff=1.0))
    for step in before:
        rec = getattr(spre, step["step_name"])(rec, **(step.get("step_params") or {}))
    rec = spre.astype(rec, "float32")
    lap("recording")

    kwargs = {**drift["detect_kwargs"], "random_slices_kwargs": {"seed": 0}}  # seeded noise levels
    peaks = detect_peaks(rec, method=kwargs.pop("method"), method_kwargs=kwargs, job_kwargs=job)
    np.save(out / "peaks.npy", peaks)
    lap("detect_peaks")
    kwargs = dict(drift["localize_peaks_kwargs"])
    method = kwargs.pop("method")
    locations = localize_peaks(
        rec, peaks, method=method, method_kwargs=kwargs, job_kwargs=job, ms_before=0.1, ms_after=0.3, seed=0
    )
    np.save(out / "peak_locations.npy", locations)
    lap("localize_peaks")
    motion = estimate_motion(rec, peaks, locations, progress_bar=True, **drift["estimate_motion_kwargs"])
    np.savez(out / "motion.npz", displacement=motion.displacement[0], bins=motion.temporal_bins_s[0])
    lap("estimate_motion")
    bins = motion.temporal_bins_s[0]
    bin_s = float(np.median(np.diff(bins)))
    clean = clean_motion_vector(motion.displacement[0], bins, bin_s, **drift["clean_motion_kwargs"])
    cleaned = Motion([clean], [bins], motion.spatial_bins_um)
    np.savez(out / "motion_clean.npz", displacement=cleaned.displacement[0], bins=bins)
    lap("clean")
    depths = rec.get_channel_locations()[:, 1]
    figure = (rec.sampling_frequency, motion, cleaned, (depths.min(), depths.max()), out / "motion.png")
    plot_motion_summary(peaks, locations, *figure, "plain")
    lap("plot")
    corrected = interpolate_motion(rec, cleaned, **drift["interpolate_motion_kwargs"])
    for step in after:
        corrected = getattr(spre, step["step_name"])(corrected, **(step.get("step_params") or {}))
    probeinterface.write_probeinterface(out / "preprocessed_si_probe.json", corrected.get_probegroup())
    lap("probe")
    (out / "times.json").write_text(json.dumps({**times, "n_peaks": int(peaks.size)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plain_worker:
        return plain_worker(args.plain_worker)
    started, load_before = time.perf_counter(), load_average()
    scratch = Path(tempfile.mkdtemp(prefix="bench-prepro-"))
    world = args.world or scratch / "world"
    log = scratch / "run.log"
    # A snapshot: both runs must read the same options even if someone edits the file meanwhile.
    args.opts_copy = scratch / "opts.yaml"
    shutil.copyfile(args.opts, args.opts_copy)
    try:
        world_s, reused = ensure_demo_world(world, args.duration)
        kept_s = float(demo_segments(world).query("type == 'keep'")["segmentDuration"].sum())
        pipe, plain = [], []
        for i in range(args.repeat):
            for which in ("pipeline", "plain")[:: 1 if i % 2 == 0 else -1]:
                if which == "pipeline":
                    from tasks.inputs.resolve import resolve

                    shutil.rmtree(resolve(demo_paths(world), demo_target()).sorting.root, ignore_errors=True)
                    pipe.append(pipeline_run(world, args, log, "--opts", str(args.opts_copy)))
                else:
                    plain.append(plain_run(world, args, scratch, log))
                done = (pipe if which == "pipeline" else plain)[-1]
                print(f"{which}: wall {done['wall']:.1f} s, CPU {done['cpu']:.1f} s", flush=True)
        first = pipe[-1]
        sorting = first["sorting"]
        noop = pipeline_run(world, args, log)  # everything done: what the CLI and Luigi cost alone
        fixed = fixed_costs(world, args.opts_copy)

        peaks_path = sorting.preprocessing / "peaks.npy"
        inode = (peaks_path.stat().st_ino, peaks_path.stat().st_mtime_ns)
        old_bin, new_bin = edit_bin_s(sorting)
        rerun = pipeline_run(world, args, log)
        same_inode = (peaks_path.stat().st_ino, peaks_path.stat().st_mtime_ns) == inode

        cpu = []
        for step in ("motion", "peaks"):
            for n_jobs in (1, 2):
                argv = [PYTHON, "-m", "containers", step, str(sorting.root), "--n-jobs", str(n_jobs)]
                cpu.append({"step": step, "n_jobs": n_jobs, **run_cpu(argv, args.cpu_cap_s)})
                print(f"cpu: {cpu[-1]}", flush=True)
        bench_s = time.perf_counter() - started
        write_result("prepro", report(args, locals()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _walls(runs: list[dict], key: str = "wall") -> str:
    return ", ".join(f"{r[key]:.1f}" for r in runs)


def report(args, v: dict) -> str:
    first, rerun, plain_last, fixed = v["first"], v["rerun"], v["plain"][-1], v["fixed"]
    p, q = statistics.median(r["wall"] for r in v["pipe"]), statistics.median(r["wall"] for r in v["plain"])
    pc, qc = statistics.median(r["cpu"] for r in v["pipe"]), statistics.median(r["cpu"] for r in v["plain"])
    rows, outside_and_repeated = overhead_rows(first, v["noop"]["wall"], fixed)
    overhead = outside_and_repeated - plain_last["imports"] - plain_last["recording"] - fixed["interpreter"]
    stage_rows = [
        [step, round(first["steps"][step], 2), stage, round(plain_last[stage], 2)]
        for step, stage in zip(STEPS, PLAIN_STAGES, strict=True)
    ]
    opts = args.opts.relative_to(REPO) if args.opts.is_relative_to(REPO) else args.opts
    opts = f"{opts} (snapshot taken at the start; chain: {chain_summary(args.opts_copy)})"
    lines = [
        "# Preprocessing pipeline benchmark",
        "",
        *machine_lines(),
        f"- load average (1/5/15 min) before: {v['load_before']}; after: {load_average()} (other engineers"
        " run tests on the same 2 cores: wall times are noisy, CPU times less so)",
        f"- data: demo world, 384-channel NP1.0, {args.duration:g} s generated, {v['kept_s']:.1f} s kept (3"
        f" files, 1 flat bout excluded); written in {v['world_s']:.1f} s"
        + (" (reused)" if v["reused"] else ""),
        f"- options: {opts}; n_jobs {args.n_jobs}; Luigi --workers 1 --local-scheduler; {args.repeat}"
        f" pipeline/plain pair(s), order alternating; this benchmark took {v['bench_s']:.0f} s",
        "",
        "## (a)/(b) pipeline vs plain SpikeInterface script",
        "",
        md_table(
            ["run", "wall s (each)", "CPU s (each)", "x real time (median)", "peaks found"],
            [
                [
                    "(a) wisc-sort sort --prepro-only",
                    _walls(v["pipe"]),
                    _walls(v["pipe"], "cpu"),
                    round(v["kept_s"] / p, 3),
                    str(first["n_peaks"]),
                ],
                [
                    "(b) plain script, one process",
                    _walls(v["plain"]),
                    _walls(v["plain"], "cpu"),
                    round(v["kept_s"] / q, 3),
                    str(plain_last["n_peaks"]),
                ],
            ],
        ),  # fmt: skip
        "",
        f"**ratio pipeline / plain: wall {p / q:.3f}, CPU {pc / qc:.3f}** (medians; goal <= 1.02).",
        "",
        "Same work, stage by stage (pipeline: manifest started -> finished, which includes the"
        " spikeinterface imports and recording build each step does; plain: its stage timers):",
        "",
        md_table(["pipeline step", "s", "plain stage", "s"], stage_rows),
        "",
        f"Plain script outside its stages: imports {plain_last['imports']:.2f} s, recording"
        f" {plain_last['recording']:.2f} s.",
        "",
        "Where the pipeline's extra time goes (first run; each part measured apart):",
        "",
        md_table(["part", "seconds", "how"], rows),
        "",
        f"Fixed overhead of the pipeline over one script, estimated from these parts: **{overhead:.1f} s"
        f" per run**, whatever the duration: the ratio falls to 1.02 once the plain run takes"
        f" {overhead / 0.02:.0f} s"
        f" (about {overhead / 0.02 * v['kept_s'] / q / 60:.0f} min of recording at this speed). Differences"
        " inside detection/localization beyond it are contention noise unless the CPU ratio shows them too.",
        "",
        "## (c) rerun after editing estimate_motion_kwargs.bin_s",
        "",
        f"bin_s {v['old_bin']:g} -> {v['new_bin']:g} in the sorting's opts.yaml, then `wisc-sort sort"
        f" --prepro-only` again: **{rerun['wall']:.1f} s = {rerun['wall'] / first['wall']:.3f} of the first"
        " run**"
        f" (goal <= 0.10). Steps rerun: {', '.join(rerun['steps'])}; peaks.npy same inode and mtime:"
        f" **{v['same_inode']}**. A no-op rerun (nothing changed) takes {v['noop']['wall']:.1f} s.",
        "",
        md_table(["part", "seconds", "how"], overhead_rows(rerun, v["noop"]["wall"], fixed)[0]),
        "",
        "## (d) cores used per step (`python -m containers <step> <dir> --n-jobs N`)",
        "",
        md_table(
            [
                "step",
                "n_jobs",
                "wall s",
                "CPU s (user+sys)",
                "cores used",
                "cores, 2nd half",
                "measured over",
            ],
            [
                [
                    c["step"],
                    c["n_jobs"],
                    round(c["wall"], 1),
                    round(c["cpu"], 1),
                    round(c["cpu"] / c["wall"], 2),
                    c.get("late", "-"),
                    c["how"],
                ]
                for c in v["cpu"]
            ],
        ),  # fmt: skip
        "",
        "Cores used = CPU time of the step process and its workers / wall, start-up included. A peaks step"
        " first estimates noise levels in its main process (one core), then detects with n_jobs workers;"
        " `cores, 2nd half` is the rate over the second half of a capped run.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
