"""How well a sort found the known units: phy/Kilosort output against ground-truth spike trains."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.phy.validation import validate_sorter_output

ACCURACY_GOOD = 0.8
SNR_MIN = 5.0


def _column(path: Path) -> np.ndarray:
    return np.load(path).reshape(-1)  # Kilosort and phy write (n, 1)


def sorter_output_sorting(sorter_output: Path, sampling_frequency: float):
    """The phy folder's spikes (after curation: spike_clusters.npy, which phy rewrites) as a NumpySorting."""
    from spikeinterface.core import NumpySorting

    sorter_output = Path(sorter_output)
    validate_sorter_output(sorter_output, None)
    times = _column(sorter_output / "spike_times.npy").astype(np.int64)
    clusters = _column(sorter_output / "spike_clusters.npy").astype(np.int64)
    return NumpySorting.from_samples_and_labels([times], [clusters], sampling_frequency)


def compare_to_ground_truth(
    sorter_output: Path,
    gt_spike_frames: np.ndarray,
    gt_unit_ids: np.ndarray,
    sampling_frequency: float,
    snr_by_unit: Mapping[int, float] | None = None,
) -> tuple[pd.DataFrame, str]:
    """Per ground-truth unit: accuracy, recall, precision of its best (Hungarian) match; and a summary,
    "units with accuracy >= 0.8: N of M units with SNR > 5" (of all M units when no SNR is given).

    `gt_spike_frames`/`gt_unit_ids`: one entry per true spike, frames in the sorted recording's timeline
    (the demo world's ground_truth/sorting.npz `spike_frames`, `spike_unit_ids`; SNR from units.csv).
    """
    from spikeinterface.comparison import compare_sorter_to_ground_truth
    from spikeinterface.core import NumpySorting

    gt = NumpySorting.from_samples_and_labels(
        [np.asarray(gt_spike_frames, dtype=np.int64)],
        [np.asarray(gt_unit_ids, dtype=np.int64)],
        sampling_frequency,
    )
    tested = sorter_output_sorting(sorter_output, sampling_frequency)
    comparison = compare_sorter_to_ground_truth(gt, tested, exhaustive_gt=True)
    table = comparison.get_performance(method="by_unit")[["accuracy", "recall", "precision"]].astype(float)
    table.index = table.index.astype(np.int64)
    table.index.name = "gt_unit_id"
    match = comparison.hungarian_match_12
    table["matched_cluster"] = [int(match[u]) if match[u] != -1 else -1 for u in gt.unit_ids]
    table["num_spikes"] = [gt.get_unit_spike_train(u).size for u in gt.unit_ids]
    good = table["accuracy"] >= ACCURACY_GOOD
    if snr_by_unit is None:
        summary = f"units with accuracy >= {ACCURACY_GOOD}: {int(good.sum())} of {len(table)} units"
    else:
        table["snr"] = [float(snr_by_unit.get(int(u), np.nan)) for u in table.index]
        visible = table["snr"] > SNR_MIN
        summary = (
            f"units with accuracy >= {ACCURACY_GOOD}: {int((good & visible).sum())} of "
            f"{int(visible.sum())} units with SNR > {SNR_MIN:g}"
        )
    return table, summary


def read_demo_ground_truth(ground_truth_dir: Path) -> tuple[np.ndarray, np.ndarray, float, dict[int, float]]:
    """The demo world's truth (containers.demo.world): spike frames, unit ids, sampling rate, SNR by unit."""
    ground_truth_dir = Path(ground_truth_dir)
    with np.load(ground_truth_dir / "sorting.npz") as gt:
        frames, units, rate = gt["spike_frames"], gt["spike_unit_ids"], float(gt["sampling_frequency"])
    snr = pd.read_csv(ground_truth_dir / "units.csv").set_index("unit_id")["snr"]
    return frames, units, rate, {int(u): float(s) for u, s in snr.items()}
