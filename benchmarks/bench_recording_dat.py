"""Benchmark writing recording.dat: raw-copy floor, plain SpikeInterface, our step; and a per-step profile.

Usage: python benchmarks/bench_recording_dat.py [--duration 10] [--n-jobs 1 2] [--workdir /tmp] [--out FILE]
Writes benchmarks/results/recording_dat.md. Data: one generated 384-channel NP1.0 SpikeGLX file (noise),
a synthetic cleaned motion; chains from opts/sorting_demo.yaml and opts/sorting_chronic_df.yaml.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import spikeinterface  # noqa: E402
import spikeinterface.extractors as se  # noqa: E402
import spikeinterface.preprocessing as spre  # noqa: E402
from spikeinterface.core import NumpyRecording, write_binary_recording  # noqa: E402
from spikeinterface.core.motion import Motion  # noqa: E402
from spikeinterface.generation import NoiseGeneratorRecording  # noqa: E402
from spikeinterface.sortingcomponents.motion import interpolate_motion  # noqa: E402

from containers.demo.sglx_writer import write_spikeglx_file  # noqa: E402
from containers.motion.stages import save_motion  # noqa: E402
from containers.steps.common import CLEAN_MOTION  # noqa: E402
from containers.steps.recording_dat import TARGET  # noqa: E402
from tasks.core.layout import SortingDir  # noqa: E402
from tasks.inputs.segments import build_segment_table, write_segments  # noqa: E402
from tasks.inputs.spikeglx import SessionFolders, scan_session  # noqa: E402

RATE = 30000.0
CHAINS = ("demo", "chronic_df")
MB = 1e6


def motion(duration: float) -> Motion:
    """A slow non-rigid drift (um) with 2 depth windows: interpolation does real work on every channel."""
    times = np.arange(0.5, duration, 1.0)
    disp = np.stack([10 * np.sin(times / 7), 8 * np.cos(times / 5)], axis=1)
    return Motion([disp], [times], np.array([800.0, 2800.0]))


def make_raw(folder: Path, duration: float) -> Path:
    source = NoiseGeneratorRecording(
        num_channels=384, sampling_frequency=RATE, durations=[duration], noise_levels=20.0, dtype="float32"
    )
    bin_path = folder / "raw" / "run_g0" / "run_g0_imec0" / "run_g0_t0.imec0.ap.bin"
    write_spikeglx_file(bin_path, source, create_time=datetime(2026, 1, 1))
    return bin_path


def opts_for(chain: str) -> dict:
    return yaml.safe_load((REPO / "opts" / f"sorting_{chain}.yaml").read_text())


def make_sorting(folder: Path, bin_path: Path, chain: str, clean: Motion) -> SortingDir:
    session = bin_path.parents[2]
    files = scan_session("S", SessionFolders("S1", session, session), streams=("ap",))
    sorting = SortingDir(folder / f"sorting.{chain}")
    sorting.preprocessing.mkdir(parents=True, exist_ok=True)
    sorting.opts.write_text(yaml.safe_dump(opts_for(chain), sort_keys=False))
    write_segments(build_segment_table(files, None), sorting.segments)
    save_motion(clean, sorting.preprocessing / CLEAN_MOTION)
    return sorting


def fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def timed(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def copy_floor(bin_path: Path) -> float:
    dest = bin_path.with_name("copy.bin")

    def work() -> None:
        subprocess.run(["cp", str(bin_path), str(dest)], check=True)
        fsync(dest)

    seconds = timed(work)
    dest.unlink()
    return seconds


def plain_chain(bin_path: Path, chain: str, clean: Motion):
    """The same chain with SpikeInterface's own reader and functions, no wisc code."""
    rec = se.read_spikeglx(bin_path.parent, stream_id="imec0.ap")
    rec = spre.scale_to_uV(rec)
    rec = spre.bandpass_filter(rec, freq_min=300.0, freq_max=12000.0)
    rec = spre.phase_shift(rec)
    rec = spre.common_reference(rec, reference="local", operator="median")
    rec = interpolate_motion(
        rec, clean, border_mode="remove_channels", spatial_interpolation_method="kriging", sigma_um=20.0, p=1,
        num_closest=3,
    )  # fmt: skip
    if chain == "chronic_df":
        rec = spre.whiten(rec, dtype="float32")
        rec = spre.scale(rec, gain=200.0, offset=0.0)
    return rec


def plain_si(bin_path: Path, chain: str, clean: Motion, n_jobs: int, out: Path) -> float:
    def work() -> None:
        rec = plain_chain(bin_path, chain, clean)
        write_binary_recording(
            rec, out, dtype="int16", n_jobs=n_jobs, chunk_duration="1s", progress_bar=False
        )
        fsync(out)

    seconds = timed(work)
    out.unlink()
    return seconds


def our_step(sorting: SortingDir, n_jobs: int) -> float:
    command = [
        sys.executable,
        "-m",
        "containers",
        "recording_dat",
        str(sorting.root),
        "--n-jobs",
        str(n_jobs),
    ]
    env = {**os.environ, "WISC_DISK_RESERVE_GB": "0"}
    seconds = timed(lambda: subprocess.run(command, check=True, cwd=REPO, env=env, capture_output=True))
    sorting.path(TARGET).unlink()
    return seconds


def startup_seconds() -> float:
    command = [sys.executable, "-c", "import containers.steps.recording_dat, containers.runtime.stepping"]
    return timed(lambda: subprocess.run(command, check=True, cwd=REPO))


def best_read(rec, start: int, n: int, repeat: int = 5) -> float:
    return min(timed(lambda: rec.get_traces(start_frame=start, end_frame=start + n)) for _ in range(repeat))


def profile_chunk(bin_path: Path, clean: Motion, seconds: float = 1.0) -> list[tuple[str, float, float, str]]:
    """Per step: (name, its cost inside the chain, its cost alone on a ready float32 input, output dtype).

    Inside the chain, a step's cost is the chain's time up to it minus the time up to the step before:
    it includes the upstream work redone on the step's extra margin. Alone, the step runs on a
    NumpyRecording holding exactly its input (chunk + its margin), so nothing upstream is recomputed.
    """
    steps: list[tuple[str, Callable]] = [
        ("scale_to_uV", spre.scale_to_uV),
        ("bandpass_filter", lambda r: spre.bandpass_filter(r, freq_min=300.0, freq_max=12000.0)),
        ("phase_shift", spre.phase_shift),
        ("local median CMR", lambda r: spre.common_reference(r, operator="median", reference="local")),
        ("interpolate_motion kriging", lambda r: interpolate_motion(r, clean, border_mode="remove_channels")),
        ("whiten", lambda r: spre.whiten(r, dtype="float32", seed=0)),
        ("scale 200", lambda r: spre.scale(r, gain=200.0)),
        ("clip + astype int16", lambda r: spre.astype(spre.clip(r, a_min=-32768.0, a_max=32767.0), "int16")),
    ]
    n = int(seconds * RATE)
    start = int(RATE)  # away from the file's start: full margins everywhere
    rec = se.read_spikeglx(bin_path.parent, stream_id="imec0.ap")
    previous = best_read(rec, start, n)
    rows = []
    for name, make in steps:
        parent = rec
        rec = make(rec)
        chained = best_read(rec, start, n)
        margin = int(RATE)  # generous: every step's margin fits; the alone-run slices its own input
        ready = NumpyRecording(
            parent.get_traces(start_frame=start - margin, end_frame=start + n + margin), RATE,
            channel_ids=parent.channel_ids,
        )  # fmt: skip
        ready.set_probegroup(parent.get_probegroup())
        for key in parent.get_property_keys():
            ready.set_property(key, parent.get_property(key))
        gains = parent.get_channel_gains()
        alone = best_read(make(ready) if name != "scale_to_uV" else spre.scale(ready, gain=gains), margin, n)
        rows.append((name, chained - previous, alone, str(rec.get_dtype())))
        previous = chained
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of 384-channel data")
    parser.add_argument("--n-jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "recording_dat.md")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    load = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="bench_recording_dat_", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        bin_path = make_raw(folder, args.duration)
        raw_bytes = bin_path.stat().st_size
        print(f"generated {raw_bytes / MB:.0f} MB in {time.perf_counter() - t0:.0f} s", flush=True)
        clean = motion(args.duration)
        floor = min(copy_floor(bin_path) for _ in range(3))
        startup = startup_seconds()
        rows = []
        for chain in CHAINS:
            sorting = make_sorting(folder, bin_path, chain, clean)
            for n_jobs in args.n_jobs:
                plain = plain_si(bin_path, chain, clean, n_jobs, folder / "plain.dat")
                ours = our_step(sorting, n_jobs)
                rows.append((chain, n_jobs, plain, ours))
                print(f"{chain} n_jobs={n_jobs}: plain SI {plain:.1f} s, step {ours:.1f} s", flush=True)
        profile = profile_chunk(bin_path, clean)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    args.out.write_text(report(args, raw_bytes, floor, startup, rows, profile, load))
    print(f"wrote {args.out}")
    return 0


def report(args, raw_bytes: int, floor: float, startup: float, rows, profile, load: float) -> str:
    def rate(seconds: float) -> str:
        return f"{raw_bytes / MB / seconds:.0f} MB/s ({args.duration / seconds:.2f}x real time)"

    lines = [
        "# recording.dat: throughput",
        "",
        f"`python benchmarks/bench_recording_dat.py --duration {args.duration:g}` on {platform.machine()}, "
        f"{os.cpu_count()} cores (load average {load:.1f} at start: the machine is shared), "
        f"SpikeInterface {spikeinterface.__version__}, {datetime.now():%Y-%m-%d}.",
        f"Input: one generated NP1.0 file, {args.duration:g} s x 385 channels, {raw_bytes / MB:.0f} MB, "
        "in the page cache (reads come from memory); every output is fsynced before the clock stops.",
        "MB/s counts raw input bytes per second; the ratio is time / time of the copy floor.",
        "",
        f"Floor: `cp` of the raw .bin on the same disk + fsync: {floor:.2f} s, {rate(floor)}.",
        f"Interpreter start + imports of the step program (inside (c)): {startup:.1f} s.",
        "",
        "| chain | n_jobs | (b) plain SpikeInterface | ratio to floor | (c) the step (`python -m containers "
        "recording_dat`) | ratio to floor | (c)/(b) |",
        "|---|---|---|---|---|---|---|",
    ]
    for chain, n_jobs, plain, ours in rows:
        lines.append(
            f"| {chain} | {n_jobs} | {plain:.1f} s, {rate(plain)} | {plain / floor:.0f}x | {ours:.1f} s, "
            f"{rate(ours)} | {ours / floor:.0f}x | {ours / plain:.2f} |"
        )
    chained, alone = sum(r[1] for r in profile), sum(r[2] for r in profile)
    lines += [
        "",
        "## One 1 s chunk, step by step (lab chain, n_jobs 1, best of 5)",
        "",
        "| step | in the chain (s) | alone on ready input (s) | output dtype |",
        "|---|---|---|---|",
        *(f"| {name} | {c:.3f} | {a:.3f} | {dtype} |" for name, c, a, dtype in profile),
        f"| **total** | {chained:.3f} | {alone:.3f} | chain / sum alone = {chained / alone:.2f} |",
        "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
