"""`wisc-sort demo` end to end as a user runs it: generated SpikeGLX data through sorting, vs truth."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
WISC_SORT = str(Path(sys.executable).parent / "wisc-sort")


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

    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the demo world" in again.stdout
    assert "ran successfully" not in again.stdout  # every step was already complete
