"""The motion summary figure: raw and corrected peak maps, motion over time and along the probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from spikeinterface.core.motion import Motion

MAX_POINTS = 300_000
FIGSIZE_IN = (16, 10)
DPI = 120


def decimate_indices(n: int, max_points: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `max_points` of `n` items, uniformly at random (seeded), all if fewer."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _time_unit(duration_s: float) -> tuple[float, str]:
    return (3600.0, "h") if duration_s >= 2 * 3600 else (60.0, "min")


def plot_motion_summary(
    peaks: np.ndarray,
    peak_locations: np.ndarray,
    sampling_frequency: float,
    motion_raw: Motion,
    motion_clean: Motion,
    probe_depth_range_um: tuple[float, float],
    out_path: Path,
    title: str,
    max_points: int = MAX_POINTS,
) -> None:
    """Write the four-panel PNG (16x10 in, 120 dpi) to exactly `out_path`."""
    direction = motion_clean.direction
    keep = decimate_indices(len(peaks), max_points)
    times_s = peaks["sample_index"][keep] / sampling_frequency
    depths = peak_locations[direction][keep]
    amplitudes = np.abs(peaks["amplitude"][keep])
    bins_s = motion_clean.temporal_bins_s[0]
    duration_s = max(float(times_s.max()) if times_s.size else 0.0, float(bins_s[-1]))
    scale, unit = _time_unit(duration_s)
    shown = f"all {len(peaks):,} peaks"
    if keep.size < len(peaks):
        shown = f"{keep.size / len(peaks):.1%} of {len(peaks):,} peaks (random)"

    fig = Figure(figsize=FIGSIZE_IN, layout="constrained")
    fig.suptitle(title, parse_math=False)  # a path is text: `$` in a folder name is not mathtext
    (ax_raw, ax_corr), (ax_time, ax_probe) = fig.subplots(2, 2)
    ax_corr.sharex(ax_raw)
    ax_corr.sharey(ax_raw)
    ax_time.sharex(ax_raw)
    ax_probe.sharey(ax_raw)

    vmin, vmax = np.percentile(amplitudes, [5, 95]) if amplitudes.size else (0.0, 1.0)
    dense = keep.size > 100_000  # small markers for hours of peaks, visible ones for minutes
    scatter = dict(c=amplitudes, cmap="viridis", vmin=vmin, vmax=vmax, lw=0, rasterized=True)
    scatter |= dict(s=1.0, alpha=0.5) if dense else dict(s=4.0, alpha=0.8)
    points = ax_raw.scatter(times_s / scale, depths, **scatter)
    for j, depth in enumerate(motion_clean.spatial_bins_um):
        ax_raw.plot(bins_s / scale, depth + motion_clean.displacement[0][:, j], color="red", lw=1)
    ax_raw.set_title(f"Raw peaks, cleaned motion in red: {shown}")
    fig.colorbar(points, ax=ax_raw, label="|amplitude|", pad=0.01)

    corrected = depths
    if times_s.size:
        corrected = depths - motion_clean.get_displacement_at_time_and_depth(times_s, depths)
    ax_corr.scatter(times_s / scale, corrected, **scatter)
    ax_corr.set_title(f"Corrected with the cleaned motion: {shown}")

    ax_raw.set_ylabel(f"depth {direction} (um)")
    ax_raw.set_ylim(*probe_depth_range_um)
    for ax in (ax_raw, ax_corr):
        ax.set_xlabel(f"time ({unit})")
    _plot_motion_over_time(ax_time, motion_raw, motion_clean, scale)
    ax_time.set_xlabel(f"time ({unit})")
    _plot_motion_along_probe(ax_probe, motion_raw, motion_clean)
    ax_probe.set_ylabel(f"depth {direction} (um)")
    fig.savefig(out_path, dpi=DPI, format="png")


def _plot_motion_over_time(ax, motion_raw: Motion, motion_clean: Motion, scale: float) -> None:
    colors = _window_colors(motion_clean.spatial_bins_um.size)
    for j, depth in enumerate(motion_clean.spatial_bins_um):
        ax.plot(
            motion_raw.temporal_bins_s[0] / scale,
            motion_raw.displacement[0][:, j],
            color=colors[j],
            lw=0.6,
            alpha=0.5,
        )
        ax.plot(
            motion_clean.temporal_bins_s[0] / scale,
            motion_clean.displacement[0][:, j],
            color=colors[j],
            lw=2.2,
            label=f"{depth:.0f} um",
        )
    ax.set_ylabel("displacement (um)")
    ax.set_title("Motion per spatial window: raw thin, cleaned thick")
    if motion_clean.spatial_bins_um.size <= 12:
        ax.legend(title="window", fontsize="small", ncols=2)


def _plot_motion_along_probe(ax, motion_raw: Motion, motion_clean: Motion) -> None:
    depths = motion_clean.spatial_bins_um
    clean = motion_clean.displacement[0]
    ax.fill_betweenx(
        depths, clean.min(axis=0), clean.max(axis=0), color="tab:blue", alpha=0.25, label="range"
    )
    ax.plot(np.median(clean, axis=0), depths, "o-", color="tab:blue", label="median (cleaned)")
    ax.plot(np.median(motion_raw.displacement[0], axis=0), depths, "--", color="gray", label="median (raw)")
    ax.set_xlabel("displacement (um)")
    ax.set_title("Motion along the probe")
    ax.legend(fontsize="small")


def _window_colors(n: int) -> list:
    from matplotlib import colormaps

    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, max(n, 1))]
