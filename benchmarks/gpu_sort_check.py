"""Kilosort 4 on a GPU: sort a generated NP1.0 recording (60 s, 384 channels) and print its time and accuracy.

Needs only numpy, scipy, torch and kilosort (no SpikeInterface, no project package), so that it runs on a
bare GPU machine: `python benchmarks/gpu_sort_check.py [--duration 60] [--device cuda]`, or from another
script, `gpu_sort_check(device="cuda")` (a dict back) when `kilosort_available()`.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np

RATE = 30000.0
NOISE_UV = 8.0  # white noise RMS per channel
COUNTS_PER_UV = 2.0  # int16 counts per uV, as NP1.0's gain 500 roughly gives
TROUGH = 20  # template trough sample (Kilosort's nt0min for nt 61)
TOLERANCE = 12  # samples (0.4 ms): a sorted spike within this of a true one is the same spike
ACCURACY_GOOD, SNR_MIN = 0.8, 5.0


def kilosort_available() -> bool:
    return importlib.util.find_spec("kilosort") is not None and importlib.util.find_spec("torch") is not None


def np1_geometry(channels: int) -> np.ndarray:
    """(x, y) um of NP1.0's first `channels` contacts: 2 per row, 20 um rows, staggered columns."""
    index = np.arange(channels)
    return np.column_stack([np.array([43.0, 11.0, 59.0, 27.0])[index % 4], 20.0 * (index // 2)])


def _waveform() -> np.ndarray:
    """A biphasic unit-peak spike, 61 samples, trough at TROUGH."""
    t = (np.arange(61) - TROUGH) / RATE * 1000  # ms
    wave = -np.exp(-((t / 0.12) ** 2)) + 0.35 * np.exp(-(((t - 0.45) / 0.25) ** 2))
    return (wave / -wave.min()).astype(np.float32)


def generate(path: Path, duration_s: float, channels: int, units: int, seed: int) -> dict:
    """Write int16 `path` (samples x channels); the truth back: spike frames, unit ids, SNR per unit."""
    rng = np.random.default_rng(seed)
    positions = np1_geometry(channels)
    n = int(duration_s * RATE)
    unit_xy = np.column_stack([rng.uniform(-10, 80, units), rng.uniform(0, positions[:, 1].max(), units)])
    amplitude = rng.uniform(50, 250, units)  # uV at the soma
    distance = np.linalg.norm(unit_xy[:, None] - positions[None], axis=2)
    gains = amplitude[:, None] / (1 + (distance / 30.0) ** 2)  # (units, channels) peak uV
    gains[gains < 2.0] = 0.0
    frames, labels = [], []
    for unit, rate_hz in enumerate(rng.uniform(2, 12, units)):
        isi = rng.exponential(RATE / rate_hz, int(rate_hz * duration_s * 2) + 10) + 0.002 * RATE
        times = np.cumsum(isi).astype(np.int64)
        times = times[(times > 100) & (times < n - 100)]
        frames.append(times)
        labels.append(np.full(times.size, unit))
    frames, labels = np.concatenate(frames), np.concatenate(labels)
    order = np.argsort(frames, kind="stable")
    frames, labels = frames[order], labels[order]
    wave = _waveform()
    block = int(RATE)
    with open(path, "wb") as out:
        for start in range(0, n, block):
            stop = min(n, start + block)
            chunk = rng.normal(0, NOISE_UV, (stop - start + 61, channels)).astype(np.float32)
            inside = (frames - TROUGH >= start) & (frames - TROUGH < stop)
            for frame, unit in zip(frames[inside], labels[inside], strict=True):
                first = frame - TROUGH - start
                chunk[first : first + 61] += wave[:, None] * gains[unit][None, :]
            counts = np.clip(np.rint(chunk[: stop - start] * COUNTS_PER_UV), -32768, 32767).astype(np.int16)
            out.write(counts.tobytes())
    return {"frames": frames, "units": labels, "snr": amplitude / NOISE_UV, "positions": positions}


def accuracy(truth_frames, truth_units, n_units: int, sorted_frames, sorted_clusters) -> np.ndarray:
    """Per true unit, its best (Hungarian) cluster's accuracy: matches / (n_true + n_sorted - matches)."""
    from scipy.optimize import linear_sum_assignment

    order = np.argsort(sorted_frames, kind="stable")
    times, clusters = sorted_frames[order], sorted_clusters[order]
    n_clusters = int(clusters.max()) + 1 if clusters.size else 0
    nearest = np.clip(np.searchsorted(times, truth_frames), 1, max(1, times.size - 1))
    if times.size == 0:
        return np.zeros(n_units)
    before_closer = np.abs(times[nearest - 1] - truth_frames) <= np.abs(times[nearest] - truth_frames)
    pick = np.where(before_closer, nearest - 1, nearest)
    hit = np.abs(times[pick] - truth_frames) <= TOLERANCE
    matches = np.zeros((n_units, n_clusters))
    np.add.at(matches, (truth_units[hit], clusters[pick[hit]]), 1)
    n_true = np.bincount(truth_units, minlength=n_units)[:, None]
    n_sorted = np.bincount(clusters, minlength=n_clusters)[None, :]
    score = matches / np.maximum(n_true + n_sorted - matches, 1)
    rows, cols = linear_sum_assignment(-score)
    best = np.zeros(n_units)
    best[rows] = score[rows, cols]
    return best


def gpu_sort_check(
    duration_s: float = 60.0, channels: int = 384, units: int = 100, device: str = "cuda", seed: int = 0
) -> dict:
    """Generate, sort with Kilosort 4 on `device`, score: time, x real time, units found of those visible."""
    import torch
    from kilosort import run_kilosort

    with tempfile.TemporaryDirectory(prefix="ks4-gpu-check-") as tmp:
        dat = Path(tmp) / "recording.dat"
        truth = generate(dat, duration_s, channels, units, seed)
        xy = truth["positions"].astype(np.float32)
        probe = dict(chanMap=np.arange(channels), xc=xy[:, 0], yc=xy[:, 1], kcoords=np.zeros(channels))
        probe["n_chan"] = channels
        started = time.perf_counter()
        _, st, clu, *_, kept = run_kilosort(
            settings={"n_chan_bin": channels, "fs": RATE, "nblocks": 0},
            probe=probe,
            filename=dat,
            results_dir=Path(tmp) / "kilosort4",
            device=torch.device(device),
        )
        seconds = time.perf_counter() - started
    st, clu = st[kept], np.asarray(clu)[kept]  # without the duplicates Kilosort removed
    scores = accuracy(truth["frames"], truth["units"], units, st[:, 0].astype(np.int64), clu)
    visible = truth["snr"] > SNR_MIN
    return {
        "device": device,
        "duration_s": duration_s,
        "channels": channels,
        "seconds": round(seconds, 1),
        "x_real_time": round(duration_s / seconds, 2),
        "units_found": int(((scores >= ACCURACY_GOOD) & visible).sum()),
        "units_visible": int(visible.sum()),
        "clusters": int(np.unique(clu).size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if not kilosort_available():
        raise SystemExit("gpu_sort_check: kilosort and torch are not importable here: pip install kilosort")
    result = gpu_sort_check(args.duration, args.channels, args.units, args.device)
    print(
        f"kilosort4 on {result['device']}: {result['duration_s']:g} s of {result['channels']} channels in "
        f"{result['seconds']} s ({result['x_real_time']}x real time); units at accuracy >= {ACCURACY_GOOD}: "
        f"{result['units_found']} of {result['units_visible']} with SNR > {SNR_MIN:g} ({result['clusters']} "
        "clusters)"
    )


if __name__ == "__main__":
    main()
