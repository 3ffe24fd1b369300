"""GPU check of the engine: CUDA against CPU on the lab's chain, throughput and peak GPU memory.

Usage: python benchmarks/gpu_check.py [--device cuda:0] [--seconds 20] [--chunk-s 1.0]
Needs only torch, numpy and scipy (no SpikeInterface): the chain is planned from plain arrays, a
synthetic 384-channel NP1.0-like probe (bandpass 300-12000 Hz + phase shift as one FFT, local median
reference, kriging motion interpolation folded with a whitening matrix and the x200 scale, int16).
Then detection + localization (gpu_peaks_check.py) and a Kilosort 4 sort (gpu_sort_check.py) on the device.
Writes benchmarks/results/gpu.md. Without CUDA it says so and exits 0; `--device cpu` smoke-tests it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from scipy import signal

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from containers.engine.chain import EngineChain  # noqa: E402
from containers.engine.motion import KrigingKernel, MotionMatrices  # noqa: E402
from containers.engine.stages import (  # noqa: E402
    AffineStage,
    FilterPart,
    GainStage,
    LocalMedianStage,
    ShiftPart,
    TemporalStage,
)

RATE, CHANNELS, GAIN_UV = 30000.0, 384, 2.34375
RESULT = REPO / "benchmarks" / "results" / "gpu.md"


def np1_geometry() -> np.ndarray:
    """NP1.0 bank 0: 4 staggered columns, 20 um rows (SpikeGLX's x positions 43, 11, 59, 27)."""
    x = np.array([43.0, 11.0, 59.0, 27.0])[np.arange(CHANNELS) % 4]
    return np.stack([x, 20.0 * (np.arange(CHANNELS) // 2)], axis=1)


def annulus_groups(locations: np.ndarray, inner: float = 30.0, outer: float = 55.0, least: int = 5):
    """SpikeInterface's local reference neighbours (annulus, else the closest beyond `inner`), by count."""
    dist = np.linalg.norm(locations[:, None] - locations[None], axis=2)
    groups: dict[int, tuple[list, list]] = {}
    for c in range(len(locations)):
        order = np.argsort(dist[c], kind="stable")
        ring = order[(dist[c, order] > inner) & (dist[c, order] <= outer)]
        chosen = ring if ring.size >= least else order[dist[c, order] > inner][:least]
        members, lists = groups.setdefault(chosen.size, ([], []))
        members.append(c)
        lists.append(np.sort(chosen))
    return [(np.array(m), np.stack(n)) for m, n in groups.values()]


def build_chain(device: str, seconds: float, n_jobs: int) -> EngineChain:
    locations = np1_geometry()
    sos = signal.iirfilter(5, [300.0, 12000.0], fs=RATE, btype="bandpass", output="sos")
    shifts = ((np.arange(CHANNELS) // 2) % 13) / 13.0  # ADC multiplexing: 13 sampling slots
    n_bins = max(1, int(seconds))
    displacement = 10.0 * np.sin(np.arange(n_bins) / 3.0)[:, None] * np.ones((1, CHANNELS))
    inside = np.flatnonzero((locations[:, 1] >= 20) & (locations[:, 1] <= locations[:, 1].max() - 20))
    motion = MotionMatrices(locations, displacement, 1, inside, KrigingKernel(locations, 20.0, 1))
    rng = np.random.default_rng(0)
    whiten = np.eye(inside.size) + 0.01 * rng.normal(size=(inside.size, inside.size))
    stages = [
        GainStage(np.full(CHANNELS, GAIN_UV), np.zeros(CHANNELS)),
        TemporalStage(
            [FilterPart(sos, "sos", RATE, int(5 / 300.0 * RATE)), ShiftPart(shifts, int(0.04 * RATE))]
        ),
        LocalMedianStage(annulus_groups(locations)),
        AffineStage(lambda b: motion(b) @ whiten * 200.0, np.arange(n_bins) * int(RATE)),
    ]
    raw = (rng.normal(0, 8, (int(2 * RATE), CHANNELS)) + rng.normal(0, 40, CHANNELS)).astype(np.int16)

    def reader(start: int, end: int) -> np.ndarray:
        return raw[np.arange(start, end) % raw.shape[0]]

    return EngineChain(
        stages,
        reader,
        int(seconds * RATE),
        RATE,
        np.arange(inside.size),
        locations[inside],
        "float32",
        device,
        n_jobs,
    )


def run(chain: EngineChain, chunk: int) -> tuple[np.ndarray, float]:
    outputs, start_time = [], time.perf_counter()
    for start in range(0, chain.num_frames, chunk):
        outputs.append(chain.compute(start, min(start + chunk, chain.num_frames)))
    return np.concatenate(outputs), time.perf_counter() - start_time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--chunk-s", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--no-sort", action="store_true", help="skip the Kilosort 4 sort (gpu_sort_check.py)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing measured")
        return 0
    chunk, n_jobs = int(args.chunk_s * RATE), os.cpu_count() or 1
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    target = build_chain(args.device, args.seconds, n_jobs)
    run(target, chunk)  # warm-up: FFT plans, responses, per-bin matrices
    ours, seconds = run(target, chunk)
    reference, cpu_seconds = run(build_chain("cpu", args.seconds, n_jobs), chunk)
    scale = np.sqrt(np.mean(reference.astype(np.float64) ** 2))
    error = float(np.abs(ours - reference).max() / scale)
    int16_equal = float(
        np.mean(np.round(np.clip(ours, -32768, 32767)) == np.round(np.clip(reference, -32768, 32767)))
    )
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    lines = [
        "# Engine on the GPU (benchmarks/gpu_check.py)",
        "",
        f"- device: {args.device} ({name}); CPU reference on {n_jobs} threads; torch {torch.__version__}",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- data: {args.seconds:g} s of synthetic 384-channel NP1.0-like int16, chunks of {args.chunk_s:g} s",
        "- chain: bandpass + phase shift (one FFT), local median, motion x whitening x 200 (matrix per bin)",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| {args.device} vs CPU: max abs difference / RMS | {error:.2e} |",
        f"| {args.device} vs CPU: int16 values equal after rounding | {int16_equal:.5%} |",
        f"| throughput on {args.device} (s of 384-ch data per s) | {args.seconds / seconds:.1f} |",
        f"| throughput on CPU, {n_jobs} threads (s of data per s) | {args.seconds / cpu_seconds:.1f} |",
        f"| peak GPU memory (GiB) | {peak:.2f} |",
        "",
        *peaks_lines_if_possible(args.device, args.seconds / 2),
        *kilosort4_lines(args.device, args.no_sort),
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written: {args.out}")
    return 0 if error < 1e-4 else 1


def peaks_lines_if_possible(device: str, seconds: float) -> list[str]:
    """Detection + localization throughput (gpu_peaks_check.py); it needs threadpoolctl (carry its wheel)."""
    try:
        from gpu_peaks_check import peaks_lines
    except ImportError as error:
        return [f"Detection + localization: not run ({error})", ""]
    return peaks_lines(device, seconds)


def kilosort4_lines(device: str, skip: bool) -> list[str]:
    """Kilosort 4 on this device, 60 s x 384 channels generated with known units (gpu_sort_check.py), when
    kilosort is importable here (carried as wheels: see the device README)."""
    from gpu_sort_check import gpu_sort_check, kilosort_available

    if skip or not kilosort_available():
        return ["Kilosort 4: not run (" + ("--no-sort" if skip else "kilosort not importable here") + ")", ""]
    result = gpu_sort_check(duration_s=60.0, channels=384, device=device)
    rows = [f"| {key} | {value} |" for key, value in result.items()]
    return ["## Kilosort 4 on the same device (benchmarks/gpu_sort_check.py)", "", "| measure | value |",
            "|---|---:|", *rows, ""]  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
