"""`wisc-sort demo` end to end as a user runs it: generated SpikeGLX data through sorting, vs truth."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import WISC_SORT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One `wisc-sort demo` on a 20 s world: its folder, argv and what the terminal showed."""
    tmp_path = tmp_path_factory.mktemp("demo_run")
    argv = [WISC_SORT, "demo", "--folder", str(tmp_path / "demo"), "--duration", "20", "--n-jobs", "2"]
    first = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    return tmp_path, argv, first


def test_demo_sorts_and_reports_ground_truth_then_reruns_nothing(demo_run):
    tmp_path, argv, first = demo_run
    out = first.stdout
    assert "AP segment table:" in out and "flat" in out
    assert "motion summary:" in out and "motion_summary.png" in out
    # The options it used, and why they differ from the chronic defaults.
    assert "bin_s 5.0 (chronic: 60.0)" in out and "sigma_smooth_s 2.0 (chronic: 60.0)" in out
    error = float(re.search(r"motion vs ground truth: RMS error ([0-9.]+) um", out).group(1))
    assert error < 1.5  # 25 um zigzag (20 s of its 60 s period); the default 120 s demo measures 0.5 um
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
    assert re.search(r"steps: \d+ ran", again.stdout) is None, again.stdout  # every step was already complete
    assert "steps: all" in again.stdout


def test_report_html_of_the_demo_opens_in_chromium_without_errors(demo_run):
    """report.html of the demo sorting, as a user opens it from the share: loads, every image shows, no
    console error; full-page screenshot in test-artifacts/report.png."""
    from tasks.core.layout import SortingDir
    from tasks.steps.registry import STEPS
    from tests.support.browser import ARTIFACTS, browser
    from tests.support.pipeline_world import wait_until

    tmp_path, _, first = demo_run
    report = Path(re.findall(r"^report: (\S+report.html)$", first.stdout, re.MULTILINE)[-1])
    sorting = report.parent
    # Each step's manifest records what its run cost (Nextflow's trace), which the timeline shows.
    manifests = [path for step in STEPS if (path := SortingDir(sorting).manifest(step)).exists()]
    assert len(manifests) >= 8  # peaks ... sort (no NWB export in the demo)
    for manifest in manifests:
        trace = json.loads(manifest.read_text())["trace"]
        assert trace["wall_s"] > 0 and trace["cpu_s"] >= 0 and trace["peak_rss_bytes"] > 2**20, manifest
        assert trace["exit_status"] == 0 and trace["host"] and trace["device"] == "cpu"
        assert trace["io_write_bytes"] >= 0 and trace["io_rchar"] > 0
    driver = browser(1300, 1000, console=True)
    try:
        driver.get(report.as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1300, min(height + 40, 12000))  # the whole page: lazy images load too
        text = driver.find_element("tag name", "body").text
        for heading in ("Recording and segments", "Steps", "Timeline", "Options", "Motion and peaks",
                        "Sort and curation", "Postprocessing postpro_demo", "Finalize"):  # fmt: skip
            assert heading in text, heading
        assert "could not read" not in text
        script = "return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])"
        wait_until(lambda: all(width for _, width in driver.execute_script(script)), 20)
        images = driver.execute_script(script)
        assert len(images) > 3 and all(width for _, width in images), images  # motion plot, summary plots
        assert driver.find_elements("css selector", "svg rect.excluded")  # the flat bout on the peak counts
        states = [e.text for e in driver.find_elements("css selector", "#steps ~ table .state")]
        assert states and set(states) == {"done"}, states
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "report.png"
        driver.save_screenshot(str(shot))
        print(f"report screenshot: {shot}")
    finally:
        driver.quit()
