"""Every sorter on one generated drifting recording (time, x real time, units found, peak memory), and which
drift correction Kilosort 4 should get: ours with its nblocks 0, its own (nblocks 1) on raw data, or none.

Each sort is the pipeline's own sort step (containers.steps.sort) on a recording.dat made by the
pipeline's own chain (containers.recording.chain) from the options file, in a fresh process whose tree's
memory is sampled.
The recording is the demo world's generator (25 um zigzag drift, NP1.0 geometry) on fewer channels, so that
Kilosort 4 on the CPU ends in minutes.

    .venv/bin/python benchmarks/bench_sorters.py [--duration 30] [--channels 32] [--units 12]
        [--sorters tridesclous2,spykingcircus2,lupin,kilosort4] [--device cpu|cuda] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import PYTHON, REPO, load_average, machine_lines, md_table, write_result

from tasks.core.threads import cap_threads_env

KS4_OPTS = REPO / "opts" / "sorting_ks4_acute.yaml"
SORTERS = ("tridesclous2", "spykingcircus2", "lupin", "kilosort4")
# The drift choices for Kilosort 4: (label, our motion correction in recording.dat, Kilosort's nblocks).
DRIFT_CHOICES = (
    ("ours (kriging) + Kilosort nblocks 0", True, 0),
    ("Kilosort's own, nblocks 1 (ours off)", False, 1),
    ("none (ours off, nblocks 0)", False, 0),
)
N_JOBS = 2


def generate(folder: Path, duration_s: float, channels: int, units: int, seed: int):
    """The demo world's drifting recording on the first `channels` NP1.0 contacts, and its truth on disk."""
    import numpy as np
    import pandas as pd

    from containers.demo.sglx_writer import np1_probe
    from containers.demo.world import SAMPLING_RATE, _generate

    full = np1_probe(SAMPLING_RATE)
    probe = full.get_slice(np.arange(channels))
    probe.set_device_channel_indices(np.arange(channels))
    recording, sorting, extra, levels = _generate(duration_s, units, seed, probe=probe)
    spikes = sorting.to_spike_vector()
    peak = np.abs(extra["templates"].templates_array).max(axis=1)
    snr = peak.max(axis=1) / levels[peak.argmax(axis=1)]
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / "truth.npz",
        frames=spikes["sample_index"],
        units=sorting.unit_ids.astype(np.int64)[spikes["unit_index"]],
    )
    pd.DataFrame({"unit_id": sorting.unit_ids.astype(np.int64), "snr": snr}).to_csv(folder / "snr.csv")
    return recording


def write_sorting_dir(root: Path, recording, correct_motion: bool) -> Path:
    """A sorting directory as recording_dat leaves it: the chain of KS4_OPTS (with or without its drift
    correction, motion estimated by the pipeline's own stages) written to recording.dat, probe, manifest."""
    import probeinterface
    import yaml
    from spikeinterface.core import write_binary_recording

    from containers.motion.stages import (
        clean_motion_stage,
        detect_peaks_stage,
        estimate_motion_stage,
        localize_peaks_stage,
    )
    from containers.recording.chain import preprocess_for_motion, preprocess_full, split_chain
    from containers.steps.recording_dat import as_int16
    from tasks.core.layout import SortingDir

    steps = yaml.safe_load(KS4_OPTS.read_text())["preprocessing"]
    steps = [s for s in steps if s["step_name"] != "phase_shift"]  # generated data: no ADC sample shifts
    _, drift, _ = split_chain(steps)
    if not correct_motion:
        steps, clean, interpolate = [s for s in steps if s["step_name"] != "drift_correction"], None, {}
    else:
        job = {"n_jobs": N_JOBS, "chunk_duration": "1s", "progress_bar": False}
        for_motion = preprocess_for_motion(recording, steps)
        peaks = detect_peaks_stage(for_motion, drift["detect_kwargs"], job)
        locations = localize_peaks_stage(for_motion, peaks, drift["localize_peaks_kwargs"], job)
        motion = estimate_motion_stage(for_motion, peaks, locations, drift["estimate_motion_kwargs"], job)
        clean = clean_motion_stage(motion, drift["clean_motion_kwargs"])
        interpolate = drift["interpolate_motion_kwargs"]
    rec = preprocess_full(recording, steps, clean, interpolate)
    sorting = SortingDir(root)
    sorting.sorter_output.mkdir(parents=True, exist_ok=True)
    sorting.pipeline.mkdir(exist_ok=True)
    write_binary_recording(
        as_int16(rec), sorting.sorter_output / "recording.dat", dtype="int16", add_file_extension=False,
        n_jobs=N_JOBS, chunk_duration="1s",
    )  # fmt: skip
    probeinterface.write_probeinterface(sorting.root / "preprocessed_si_probe.json", rec.get_probegroup())
    manifest = dict(
        num_channels=rec.get_num_channels(), num_samples=rec.get_num_samples(),
        sampling_frequency=rec.sampling_frequency, gain_to_uV=1.0,
    )  # fmt: skip
    sorting.manifest("recording_dat").write_text(json.dumps(manifest))
    return sorting.root


def sort_one(root: Path, sorter: str, params: dict) -> None:
    """In the child process: the pipeline's sort step on `root` (its result in the sort's extra, printed)."""
    cap_threads_env(N_JOBS)
    from containers.runtime.progress import ProgressFile
    from containers.runtime.stepping import StepContext, StepSettings
    from containers.runtime.threads import cap_threads_runtime
    from containers.steps.sort import run as sort
    from tasks.core.layout import SortingDir

    cap_threads_runtime(N_JOBS)
    sorting = SortingDir(root)
    opts = {"preprocessing": [], "sorting": {"sorter_name": sorter, "sorter_params": params}}
    ctx = StepContext(
        sorting, opts, StepSettings(n_jobs=N_JOBS), ProgressFile(sorting.progress("sort"), "sort")
    )
    sort(ctx)
    print("RESULT " + json.dumps(ctx.extra))


def run_child(root: Path, sorter: str, params: dict, log: Path) -> tuple[float, float, dict]:
    """(wall s, peak MiB of the process tree sampled every 0.2 s, the sort's manifest extras)."""
    import psutil

    argv = [PYTHON, __file__, "--child", str(root), sorter, json.dumps(params)]
    start, peak = time.perf_counter(), 0
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        root_proc = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root_proc, *root_proc.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.2)
    wall = time.perf_counter() - start
    lines = [line for line in log.read_text().splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{sorter} failed (exit {proc.returncode}); see {log}")
    return wall, peak / 2**20, json.loads(lines[-1][len("RESULT ") :])


def score(root: Path, truth_dir: Path, rate: float) -> tuple[int, int]:
    import numpy as np
    import pandas as pd

    from containers.demo.ground_truth import ACCURACY_GOOD, SNR_MIN, compare_to_ground_truth
    from tasks.core.layout import SortingDir

    with np.load(truth_dir / "truth.npz") as truth:
        frames, units = truth["frames"], truth["units"]
    snr = pd.read_csv(truth_dir / "snr.csv").set_index("unit_id")["snr"].to_dict()
    table, _ = compare_to_ground_truth(SortingDir(root).sorter_output, frames, units, rate, snr)
    visible = table["snr"] > SNR_MIN
    return int(((table["accuracy"] >= ACCURACY_GOOD) & visible).sum()), int(visible.sum())


def ks4_params(nblocks: int, device: str) -> dict:
    import yaml

    params = dict(yaml.safe_load(KS4_OPTS.read_text())["sorting"]["sorter_params"])
    return {**params, "nblocks": nblocks, "torch_device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sorters", default=",".join(SORTERS))
    parser.add_argument("--device", default="cpu", help="Kilosort 4's torch_device (cuda on a GPU machine)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/wisc-bench-sorters"))
    args = parser.parse_args()
    cap_threads_env(N_JOBS)
    recording = generate(args.work, args.duration, args.channels, args.units, args.seed)
    rate = recording.sampling_frequency
    roots = {
        corrected: write_sorting_dir(args.work / f"motion_{corrected}" / "base", recording, corrected)
        for corrected in (True, False)
    }
    sorters_rows, drift_rows = [], []

    def measure(name: str, base: Path, sorter: str, params: dict) -> list:
        import shutil

        root = args.work / "runs" / name / sorter
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(base, root)
        wall, peak, extra = run_child(root, sorter, params, root.parent / f"{sorter}.log")
        found, visible = score(root, args.work, rate)
        print(f"{name} {sorter}: {wall:.0f} s, {found}/{visible}, {peak:.0f} MiB", flush=True)
        speed, units = round(args.duration / wall, 3), f"{found} / {visible}"
        return [sorter, extra["device"], round(wall, 1), speed, units, extra["n_units"], round(peak)]

    for sorter in args.sorters.split(","):
        params = ks4_params(0, args.device) if sorter == "kilosort4" else {}
        sorters_rows.append(measure("sorters", roots[True], sorter, params))
    if "kilosort4" in args.sorters:
        for label, corrected, nblocks in DRIFT_CHOICES:
            params = ks4_params(nblocks, args.device)
            name = f"drift_ours{int(corrected)}_nblocks{nblocks}"
            row = measure(name, roots[corrected], "kilosort4", params)
            drift_rows.append([label, *row[2:]])
    write_result("sorters", report(args, sorters_rows, drift_rows))


def report(args, sorters_rows: list, drift_rows: list) -> str:
    what = (
        f"{args.duration:g} s generated with the demo world's generator ({args.units} units, 25 um "
        f"peak-to-peak zigzag drift, NP1.0 geometry: the first {args.channels} contacts), seed {args.seed}; "
        f"recording.dat from the chain of {KS4_OPTS.name} (no phase_shift: generated data has no ADC shifts)"
    )
    found = "units at accuracy >= 0.8 / units with SNR > 5"
    head = ["sorter", "device", "wall s", "x real time", found, "units", "peak MiB"]
    return "\n".join([
        "# Sorters on one generated drifting recording", "", what + ".", "",
        "Each sort is the pipeline's sort step (phy export included) in a fresh process, n_jobs 2; memory "
        "is the process tree's resident set, sampled every 0.2 s. Input: recording.dat with our motion "
        "correction.",
        "", md_table(head, sorters_rows), "",
        "## Kilosort 4: whose drift correction", "",
        "The same recording, three ways: ours (the options' drift_correction, kriging) and Kilosort's "
        "nblocks 0; Kilosort's own (nblocks 1, rigid) on recording.dat without ours; neither.", "",
        md_table(["drift correction", *head[2:]], drift_rows), "",
        f"- load average at the end: {load_average()} (other jobs shared these 2 cores: times are upper "
        "bounds)",
        *machine_lines(), "",
    ])  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sort_one(Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]))
    else:
        main()
