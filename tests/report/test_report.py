"""report.html from a sorting's manifests and files: step states (running, failed), the options diff, peak
counts with the excluded bout, a broken input costing one section only, `wisc-sort status` pointing to it."""

from __future__ import annotations

import json
import re

import pytest

from tasks.commands.cli import main
from tasks.report.write import refresh_report
from tests.support.pipeline_world import copy_sorting

pytestmark = pytest.mark.slow  # uses the session's --prepro-only run


@pytest.fixture
def sorting(demo_world, first_run, tmp_path):
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(first_run[0], sorting)
    return sorting


def _state(html: str, step: str) -> str:
    return re.search(rf"<td>{step}</td><td><span class='state (\w+)'>", html).group(1)


def test_report_says_what_ran_how_it_differs_and_where_the_bout_was(sorting):
    orphan = sorting.root / "report.wisc-tmp-4194000.html"  # left by a writer killed mid-write
    orphan.write_text("<html>")
    assert refresh_report(sorting, running="motion")
    html = sorting.report.read_text()
    assert [p.name for p in sorting.root.iterdir() if ".wisc-tmp-" in p.name] == []  # written atomically
    assert _state(html, "peaks") == "done" and _state(html, "motion") == "running"
    assert _state(html, "recording_dat") == "missing"  # --prepro-only
    # The trace each step recorded: wall time, memory, bytes, exit status, host, device.
    trace = json.loads(sorting.manifest("peaks").read_text())["trace"]
    assert {
        "wall_s",
        "cpu_s",
        "peak_rss_bytes",
        "io_read_bytes",
        "io_write_bytes",
        "exit_status",
        "host",
    } <= set(trace)
    assert "<h2 id='timeline'>Timeline</h2><svg" in html
    # The fast options differ from the shipped demo options in localization and motion bins.
    assert "Options (against the shipped sorting_demo.yaml)" in html
    assert "localize_peaks_kwargs.method</td><td>grid_convolution</td><td>center_of_mass" in html
    assert len(re.findall(r"<rect class=\"excluded\"", html)) == 1  # the world's flat bout
    assert "preprocessing/motion_summary.png" in html

    # A failed attempt, newer than the manifest, shows as failed with its error.
    later = "9999-01-01T00:00:0{}+00:00"
    failed = {"step": "motion", "started": later.format(0), "finished": later.format(1),
              "error": "ValueError: bad peaks", "trace": {"exit_status": 1, "wall_s": 1.0}}  # fmt: skip
    sorting.failure("motion").write_text(json.dumps(failed))
    assert refresh_report(sorting)
    html = sorting.report.read_text()
    assert _state(html, "motion") == "failed" and "ValueError: bad peaks" in html


def test_a_broken_input_costs_its_section_only_and_status_points_to_the_report(
    sorting, demo_world, tmp_path, capsys
):
    (sorting.preprocessing / "peaks.npy").write_bytes(b"not numpy")
    assert refresh_report(sorting)
    html = sorting.report.read_text()
    assert html.count("could not read") == 1 and "Steps</h2>" in html

    projects = str(demo_world.projects_file(tmp_path))
    capsys.readouterr()
    assert main(["status", "--projects-file", projects, "--project", "shared_ssd", "--json"]) == 0
    (entry,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entry["report"] == str(sorting.report)
    assert main(["status", "--projects-file", projects, "--project", "shared_ssd"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"report: {sorting.report}")
