"""GPU check of motion's inputs: the engine's detection + localization on CUDA against the CPU, peaks/s.

Called by gpu_check.py (or alone: python benchmarks/gpu_peaks_check.py [--device cuda] [--seconds 10]).
Needs torch, numpy, scipy and threadpoolctl (no SpikeInterface): float32 traces of a 384-channel
NP1.0-like probe, unit noise plus monopole spikes (1/r amplitude, 1500 per second), detected with
`locally_exclusive` (threshold 5, radius 50 um, sweep 0.1 ms) and localized with center of mass and
monopolar triangulation (the lab's options) chunk by chunk, on the device and on the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from containers.engine.detect import DetectParams, LocallyExclusive, neighbour_index  # noqa: E402
from containers.engine.localize import gather_waveforms, plan_localization  # noqa: E402

RATE, CHANNELS, SPIKES_PER_S, NBEFORE, NAFTER = 30000, 384, 1500, 3, 9
METHODS = {
    "center_of_mass": {"method": "center_of_mass", "radius_um": 75.0, "feature": "ptp"},
    "monopolar_triangulation": {
        "method": "monopolar_triangulation",
        "radius_um": 75.0,
        "max_distance_um": 150.0,
        "optimizer": "minimize_with_log_penality",
        "enforce_decrease": True,
        "feature": "ptp",
    },
}


def geometry() -> np.ndarray:
    x = np.array([43.0, 11.0, 59.0, 27.0])[np.arange(CHANNELS) % 4]
    return np.stack([x, 20.0 * (np.arange(CHANNELS) // 2)], axis=1)


def traces(seconds: float, locations: np.ndarray) -> np.ndarray:
    """Unit noise plus monopole spikes: a 0.4 ms negative-then-positive waveform times 250 / distance."""
    rng = np.random.default_rng(0)
    n = int(seconds * RATE)
    data = rng.normal(0, 1, (n, CHANNELS)).astype(np.float32)
    shape = -np.sin(np.linspace(0, np.pi, 12)) + 0.3 * np.sin(np.linspace(0, 2 * np.pi, 12))
    count = int(seconds * SPIKES_PER_S)
    times = rng.integers(20, n - 20, count)
    sources = np.stack([rng.uniform(0, 70, count), rng.uniform(0, locations[:, 1].max(), count)], 1)
    depth = rng.uniform(10, 50, count)
    for t, xy, z in zip(times, sources, depth, strict=True):
        gain = 250.0 / np.sqrt(((locations - xy) ** 2).sum(axis=1) + z * z)
        data[t : t + 12] += (shape[:, None] * gain[None]).astype(np.float32)
    return data


def pass_over(data: np.ndarray, locations: np.ndarray, method: str, device: str, n_jobs: int) -> tuple:
    """Detection then localization per 1 s chunk on `device`: (samples, channels, x, y, seconds)."""
    params = DetectParams(np.full(CHANNELS, 5.0), neighbour_index(locations, 50.0), 3, "neg")
    detector = LocallyExclusive(params, device)
    localizer = plan_localization(locations, RATE, METHODS[method], NBEFORE, NAFTER, device, workers=n_jobs)
    margin = params.margin + NAFTER
    found: list[np.ndarray] = []
    start_time = time.perf_counter()
    for start in range(margin, data.shape[0] - margin, RATE):
        end = min(start + RATE, data.shape[0] - margin)
        chunk = torch.as_tensor(data[start - margin : end + margin], device=device)
        padded = torch.cat([chunk, torch.zeros_like(chunk[:, :1])], dim=1)
        samples, channels, _ = detector(chunk, margin)
        waveforms = gather_waveforms(padded, samples, localizer.channel_index[channels], NBEFORE, NAFTER)
        located = localizer(waveforms, channels)
        found.append(
            np.stack(
                [
                    (samples + start - margin).cpu().numpy(),
                    channels.cpu().numpy(),
                    located["x"].cpu().numpy(),
                    located["y"].cpu().numpy(),
                ],
                axis=1,
            )  # fmt: skip
        )
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return np.concatenate(found), time.perf_counter() - start_time


def peaks_lines(device: str, seconds: float) -> list[str]:
    locations, n_jobs = geometry(), os.cpu_count() or 1
    data = traces(seconds, locations)
    torch.set_num_threads(n_jobs)
    rows = []
    for method in METHODS:
        pass_over(data[: 2 * RATE], locations, method, device, n_jobs)  # warm-up: kernels, worker processes
        ours, device_s = pass_over(data, locations, method, device, n_jobs)
        reference, cpu_s = pass_over(data, locations, method, "cpu", n_jobs)
        same = ours.shape == reference.shape and np.array_equal(ours[:, :2], reference[:, :2])
        error = float(np.abs(ours[:, 2:] - reference[:, 2:]).max()) if same else float("nan")
        rows.append(
            f"| {method} | {len(ours)} | {same} | {error:.2g} | {len(ours) / device_s:.0f} |"
            f" {len(reference) / cpu_s:.0f} | {seconds / device_s:.1f} |"
        )
    return [
        "## Detection + localization (benchmarks/gpu_peaks_check.py)",
        "",
        f"{seconds:g} s of 384-channel float32 traces with {SPIKES_PER_S} monopole spikes per second; 1 s"
        f" chunks; CPU reference on {n_jobs} threads (monopolar: {n_jobs} solver processes on both sides,"
        " since its solve is scipy's L-BFGS-B on the CPU)",
        "",
        f"| localization | peaks | same peaks as CPU | max location difference um | peaks/s {device} |"
        f" peaks/s CPU | s of data per s on {device} |",
        "|---|---:|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print("\n".join(peaks_lines(args.device, args.seconds)))
