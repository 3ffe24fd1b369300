"""`wisc-sort status` on real sortings: done, stale (opts edited after the run), missing, finalized."""

from __future__ import annotations

import json
import shutil

import pytest

from tasks.commands.cli import main
from tasks.commands.status import kept_hours, summarize_steps
from tasks.core.layout import SortingDir
from tasks.core.manifest import write_manifest
from tasks.steps.registry import PREPRO_STEPS, expected
from tests.support.pipeline_world import EXPERIMENT, PROBE, copy_sorting, edit_drift

pytestmark = pytest.mark.slow  # built from the first_run fixture (a real preprocessing run)


def place(project_dir, subject: str, probe: str = PROBE) -> SortingDir:
    return SortingDir.locate(project_dir, EXPERIMENT, "full", subject, probe)


def edit_motion(sorting: SortingDir) -> None:
    edit_drift(sorting, "estimate_motion_kwargs", bin_s=7.0)


def finalize_standin(sorting: SortingDir) -> None:
    """A sorting as finalize leaves it: recording.dat recorded by its manifest, then deleted; the journal
    done. The recording.dat here is a stand-in (writing a real one costs 0.5 GB per 20 s)."""
    dat = sorting.sorter_output / "recording.dat"
    dat.parent.mkdir(parents=True, exist_ok=True)
    dat.write_bytes(b"\0" * 4096)
    write_manifest(sorting, expected(sorting, "recording_dat"), "2026-01-01T00:00:00")
    dat.unlink()
    finalize = pytest.importorskip(
        "tasks.finalize.finalize", reason="finalize_state comes from branch finalize"
    )
    journal = finalize.journal_path(sorting.root)
    journal.write_text(json.dumps({"format": finalize.FORMAT, "phase": "done"}))


@pytest.fixture
def tree(first_run, tmp_path):
    """projects.yaml with two projects; four sortings in four states."""
    source, _ = first_run
    ssd, shared = tmp_path / "ssd", tmp_path / "shared"
    done, stale, missing = place(ssd, "DONE1"), place(ssd, "STALE1"), place(ssd, "MISSING1", "imec1")
    for sorting in (done, stale):
        copy_sorting(source, sorting)
    edit_motion(stale)
    missing.root.mkdir(parents=True)
    for name in ("opts.yaml", "segments.htsv", "exclusions.htsv"):
        shutil.copy2(source.root / name, missing.root / name)
    (tmp_path / "projects.yaml").write_text(
        f"project: ssd\nproject_directory: {ssd}\n...\nproject: shared\nproject_directory: {shared}\n...\n"
    )
    return tmp_path, {"done": done, "stale": stale, "missing": missing, "source": source}


def run_status(capsys, root, *extra: str) -> list[dict]:
    code = main(["status", "--projects-file", str(root / "projects.yaml"), "--json", *extra])
    out = capsys.readouterr().out
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_status_labels_done_stale_missing(tree, capsys):
    root, sortings = tree
    rows = {row["subject"]: row for row in run_status(capsys, root)}
    assert sorted(rows) == ["DONE1", "MISSING1", "STALE1"]
    steps = (*PREPRO_STEPS, "recording_dat", "sort")
    assert rows["DONE1"]["steps"] == {
        **dict.fromkeys(PREPRO_STEPS, "done"),
        "recording_dat": "missing",
        "sort": "missing",
    }
    # Editing a motion-estimation key after the run: motion and everything after it is stale, peaks are not.
    assert rows["STALE1"]["steps"] == {
        "peaks": "done",
        "peak_locations": "done",
        **dict.fromkeys(("motion", "motion_clean", "motion_plot", "preprocessed_probe"), "stale"),
        "recording_dat": "missing",
        "sort": "missing",
    }
    assert rows["MISSING1"]["steps"] == dict.fromkeys(steps, "missing")
    assert rows["MISSING1"]["probe"] == "imec1"
    hours = kept_hours(sortings["source"].segments)
    assert 0 < hours < 20 / 3600  # the demo's 20 s minus its flat bout
    for row in rows.values():
        assert row["hours"] == pytest.approx(hours)
        assert row["recording_dat"] is False
        assert row["problem"] == ""
    assert rows["DONE1"]["sizes"]["preprocessing"] > 0
    assert rows["MISSING1"]["sizes"]["preprocessing"] == 0


def test_status_lines_and_filters(tree, capsys):
    root, _ = tree
    projects = str(root / "projects.yaml")
    assert main(["status", "--projects-file", projects]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    stale = next(line for line in lines if "/STALE1" in line)
    assert f"ssd/{EXPERIMENT}/full/STALE1  {PROBE}" in stale
    assert "steps: 2/8 done; stale: motion, motion_clean, motion_plot, preprocessed_probe; missing: " in stale
    assert "no recording.dat" in stale
    assert [r["subject"] for r in run_status(capsys, root, "--subject", "DONE1")] == ["DONE1"]
    assert run_status(capsys, root, "--experiment", "other") == []
    assert run_status(capsys, root, "--project", "shared") == []
    assert len(run_status(capsys, root, "--project", "ssd")) == 3


def test_status_unknown_project_is_one_line_error(tree, capsys):
    root, _ = tree
    assert main(["status", "--projects-file", str(root / "projects.yaml"), "--project", "sdd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wisc-sort: error: unknown project `sdd`") and "ssd" in err
    assert len(err.strip().splitlines()) == 1


def test_status_broken_opts_reports_that_sorting_only(tree, capsys):
    root, sortings = tree
    sortings["stale"].opts.write_text("preprocessing: [unclosed\n")
    rows = {row["subject"]: row for row in run_status(capsys, root)}
    assert "opts.yaml: malformed YAML at line 2" in rows["STALE1"]["problem"]
    assert rows["DONE1"]["steps"]["peaks"] == "done"


def test_status_finalized_sorting_with_standin_recording_dat(tree, capsys):
    root, sortings = tree
    finalize_standin(sortings["done"])
    row = next(r for r in run_status(capsys, root) if r["subject"] == "DONE1")
    assert row["finalized"] == "finalized"
    assert row["steps"]["recording_dat"] == "deleted"
    assert row["recording_dat"] is False
    other = next(r for r in run_status(capsys, root) if r["subject"] == "STALE1")
    assert other["finalized"] == "no"


def test_summarize_steps():
    assert summarize_steps({"a": "done", "b": "done"}) == "2/2 done"
    assert summarize_steps({"a": "done", "b": "stale", "c": "missing", "d": "partial"}) == (
        "1/4 done; stale: b; partial: d; missing: c"
    )
