"""`wisc-sort demo` end to end as a user runs it: generated SpikeGLX data through sorting, vs truth."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import WISC_SORT

pytestmark = pytest.mark.slow


def test_demo_sorts_and_reports_ground_truth_then_reruns_nothing(tmp_path):
    argv = [WISC_SORT, "demo", "--folder", str(tmp_path / "demo"), "--duration", "20", "--n-jobs", "2"]
    first = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "AP segment table:" in out and "flat" in out
    assert "motion summary:" in out and "motion_summary.png" in out
    error = float(re.search(r"motion vs ground truth: RMS error ([0-9.]+) um", out).group(1))
    assert error < 8.0  # 25 um zigzag; measured ~2 um
    found = re.search(r"units with accuracy >= 0.8: (\d+) of (\d+) units with SNR > 5", out)
    assert found, out[-2000:]
    well_sorted, gradable = int(found.group(1)), int(found.group(2))
    # 15 s kept of 384 channels is little for a sorter (~100 spikes per unit): a loose floor.
    assert gradable > 0 and well_sorted >= 0.25 * gradable

    # Postprocessing: auto pre-labels (no human curates a demo), a hypnogram, metrics per state.
    assert "hypnogram for the demo" in out and "auto pre-labels" in out
    metrics_csv = re.search(r"metrics: (\S+metrics.csv)", out).group(1)
    import numpy as np
    import pandas as pd

    table = pd.read_csv(metrics_csv, index_col="cluster_id")
    clusters = np.load(Path(metrics_csv).parents[1] / "si_output" / "sorter_output" / "spike_clusters.npy")
    assert sorted(table.index) == sorted(np.unique(clusters))
    for column in ("num_spikes", "firing_rate", "snr", "isi_violations_ratio", "amplitude_cutoff", "group"):
        assert column in table
    for state in ("NREM", "Wake", "REM"):
        assert table[f"firing_rate_{state}"].notna().any()
    assert set(table["group_source"]) == {"auto"}

    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the demo world" in again.stdout
    assert "ran successfully" not in again.stdout  # every step was already complete
