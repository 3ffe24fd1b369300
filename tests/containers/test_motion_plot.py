"""Tests of containers.motion.plot: the summary PNG and the scatter decimation."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from spikeinterface.core.motion import Motion

from containers.motion.plot import DPI, FIGSIZE_IN, MAX_POINTS, decimate_indices, plot_motion_summary


def test_decimate_indices_caps_and_is_seeded():
    assert np.array_equal(decimate_indices(10, max_points=20), np.arange(10))
    picked = decimate_indices(1_000_000, max_points=MAX_POINTS)
    assert picked.size == MAX_POINTS == np.unique(picked).size
    assert np.all(np.diff(picked) > 0) and picked[-1] < 1_000_000
    assert np.array_equal(picked, decimate_indices(1_000_000))  # seeded: same plot every run
    # Uniform: each tenth of the recording keeps about a tenth of the points.
    counts = np.bincount(picked // 100_000)
    assert np.all(np.abs(counts - MAX_POINTS / 10) < 0.05 * MAX_POINTS / 10)


def synthetic(n_peaks: int, duration_s: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    fs = 30000.0
    peaks = np.zeros(
        n_peaks, dtype=[("sample_index", "int64"), ("channel_index", "int64"), ("amplitude", "float64")]
    )
    peaks["sample_index"] = np.sort(rng.integers(0, int(duration_s * fs), n_peaks))
    peaks["amplitude"] = -rng.gamma(3.0, 30.0, n_peaks)
    times_s = peaks["sample_index"] / fs
    drift = 15 * np.sin(2 * np.pi * times_s / duration_s)
    locations = np.zeros(n_peaks, dtype=[("x", "float64"), ("y", "float64")])
    locations["y"] = rng.choice(np.linspace(100, 3700, 40), n_peaks) + drift + rng.normal(0, 3, n_peaks)
    bins = np.arange(0.5, duration_s / 60) * 60.0 if duration_s > 120 else np.arange(1.0, duration_s, 2.0)
    depths = np.array([500.0, 1500.0, 2500.0, 3500.0])
    clean = np.repeat((15 * np.sin(2 * np.pi * bins / duration_s))[:, None], depths.size, axis=1)
    raw = clean + np.random.default_rng(1).normal(0, 2, clean.shape)
    return peaks, locations, fs, Motion(raw, bins, depths), Motion(clean, bins, depths)


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("n_peaks, duration_s", [(5_000, 300.0), (400_000, 48 * 3600.0)])
def test_plot_motion_summary_writes_png(tmp_path, n_peaks, duration_s):
    peaks, locations, fs, raw, clean = synthetic(n_peaks, duration_s)
    out = tmp_path / "motion_summary.png.tmp"  # written at exactly the given name, as PNG
    plot_motion_summary(peaks, locations, fs, raw, clean, (0.0, 3840.0), out, "CNPIX10 imec0 - test")
    width, height = png_size(out)
    assert abs(width - FIGSIZE_IN[0] * DPI) <= 2 and abs(height - FIGSIZE_IN[1] * DPI) <= 2
