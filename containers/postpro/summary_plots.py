"""summary_plots/: one figure per metric against firing rate (coloured by curation group), one per unit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.steps.postpro_stages import METRICS_CSV, PLOTS_DIR, PostproSet

GROUP_COLOURS = {
    "good": "#1b9e77",
    "mua": "#d95f02",
    "noise": "#7570b3",
    "unsorted": "#777777",
    "": "#bbbbbb",
}
SKIP_COLUMNS = {"firing_rate", "auto_label", "group", "group_source"}


def _figure(width: float = 6.0, height: float = 4.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=100)


def metric_figure(table: pd.DataFrame, column: str, path: Path) -> None:
    """One metric against firing rate (log x), a colour per group, group names by their points."""
    plt, fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    values = pd.to_numeric(table[column], errors="coerce")
    rate = pd.to_numeric(table.get("firing_rate", pd.Series(np.nan, index=table.index)), errors="coerce")
    groups = table["group"].fillna("").astype(str) if "group" in table else pd.Series("", index=table.index)
    n_nan = int(values.isna().sum())
    for group in sorted(groups.unique()):
        mask = (groups == group) & values.notna() & rate.notna()
        if not mask.any():
            continue
        colour = GROUP_COLOURS.get(group, "#e7298a")
        ax.scatter(rate[mask], values[mask], s=18, color=colour, alpha=0.8, edgecolors="none")
        # The label sits at the group's median point: no legend to hunt for.
        ax.annotate(
            f"{group or 'unlabelled'} ({int(mask.sum())})",
            (float(rate[mask].median()), float(values[mask].median())),
            color=colour,
            fontsize=10,
            fontweight="bold",
            xytext=(6, 6),
            textcoords="offset points",
        )
    if (rate > 0).any():
        ax.set_xscale("log")
    ax.set_xlabel("firing rate (Hz)")
    ax.set_ylabel(column)
    ax.set_title(f"{column} vs firing rate — {len(table)} units, {n_nan} NaN")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def unit_figure(analyzer, unit_id, row: pd.Series, path: Path) -> None:
    """Template on its best channels, ISI histogram, amplitudes over time, location on the probe."""
    plt, fig = _figure(11, 7)
    templates = analyzer.get_extension("templates").get_data()
    index = list(analyzer.unit_ids).index(unit_id)
    template = templates[index]
    best = np.argsort(np.ptp(template, axis=0))[::-1][:4]
    rate = analyzer.sampling_frequency
    times_ms = (np.arange(template.shape[0]) - analyzer.get_extension("templates").nbefore) / rate * 1e3
    ax = fig.add_subplot(2, 2, 1)
    for rank, channel in enumerate(best):
        ax.plot(
            times_ms,
            template[:, channel],
            lw=2 if rank == 0 else 1,
            label=f"ch {analyzer.channel_ids[channel]}",
        )
    ax.set_title("template, 4 largest channels")
    ax.set_xlabel("ms")
    ax.legend(fontsize=8, frameon=False)
    spikes = analyzer.sorting.get_unit_spike_train(unit_id) / rate
    ax = fig.add_subplot(2, 2, 2)
    isi_ms = np.diff(spikes) * 1e3
    ax.hist(isi_ms[isi_ms < 50], bins=np.arange(0, 50.5, 0.5), color="#444444")
    ax.axvline(1.5, color="red", lw=1)
    ax.text(1.7, ax.get_ylim()[1] * 0.9, "1.5 ms", color="red", fontsize=9)
    ax.set_title("ISI histogram (< 50 ms)")
    ax.set_xlabel("ms")
    ax = fig.add_subplot(2, 2, 3)
    if analyzer.has_extension("spike_amplitudes"):
        amplitudes = analyzer.get_extension("spike_amplitudes").get_data(outputs="by_unit")[0][unit_id]
        ax.scatter(spikes, amplitudes, s=2, color="#444444")
        ax.set_title("amplitude over time")
    else:
        ax.hist(spikes, bins=50, color="#444444")
        ax.set_title("spikes over time")
    ax.set_xlabel("s")
    ax = fig.add_subplot(2, 2, 4)
    positions = analyzer.get_channel_locations()
    ax.scatter(positions[:, 0], positions[:, 1], s=4, color="#cccccc")
    if analyzer.has_extension("unit_locations"):
        loc = analyzer.get_extension("unit_locations").get_data()[index]
        ax.scatter([loc[0]], [loc[1]], s=80, marker="*", color="#d95f02")
        ax.set_ylim(loc[1] - 300, loc[1] + 300)
    ax.set_title("location on the probe (um)")
    group = row.get("group", "") or "unlabelled"
    source = row.get("group_source", "")
    fig.suptitle(
        f"unit {unit_id} — {group}{f' ({source})' if source else ''} — "
        f"{row.get('num_spikes', len(spikes))} spikes, "
        f"{row.get('firing_rate', np.nan):.2f} Hz, snr {row.get('snr', np.nan):.1f}",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def make_plots(pset: PostproSet, analyzer, opts: dict) -> dict:
    """Write summary_plots/ into a temporary folder, then rename it into place."""
    table = pd.read_csv(pset.folder / METRICS_CSV, index_col="cluster_id")
    final = pset.folder / PLOTS_DIR
    tmp = pset.folder / f"{PLOTS_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "units").mkdir(parents=True)
    columns = [c for c in table.columns if c not in SKIP_COLUMNS and pd.api.types.is_numeric_dtype(table[c])]
    for column in columns:
        metric_figure(table, column, tmp / f"{column}.png")
    limit = (opts.get("plots") or {}).get("max_unit_plots")
    units = list(table.index)
    if limit is not None:  # the units with the most spikes first: a capped set should show the real ones
        order = table["num_spikes"] if "num_spikes" in table else pd.Series(0, index=table.index)
        units = list(order.sort_values(ascending=False, kind="stable").index[: int(limit)])
    for unit in units:
        unit_figure(analyzer, unit, table.loc[unit], tmp / "units" / f"unit_{unit}.png")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return {"metric_plots": len(columns), "unit_plots": len(units)}
