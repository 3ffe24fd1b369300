"""Stage-aware reruns of the preprocessing steps end to end: real CLI, Luigi, steps, SpikeInterface."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tasks.core.manifest import read_manifest, status
from tasks.steps.registry import PREPRO_STEPS, STEPS
from tests.support.pipeline_world import copy_sorting, edit_drift, fast_options, write_options

pytestmark = pytest.mark.slow


def fresh_copy(demo_world, first_run, tmp_path):
    source, opts = first_run
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(source, sorting)
    return sorting, opts


def manifests(sorting) -> dict[str, str]:
    return {step: sorting.manifest(step).read_text() for step in PREPRO_STEPS}


def rerun_and_diff(demo_world, sorting, tmp_path) -> set[str]:
    before = manifests(sorting)
    # No --opts: the sorting's own opts.yaml is the truth.
    assert demo_world.run(tmp_path, "--prepro-only") == 0
    after = manifests(sorting)
    assert all(status(sorting, step) == "done" for step in PREPRO_STEPS)
    return {step for step in PREPRO_STEPS if before[step] != after[step]}


def test_first_run_writes_setup_and_every_target(first_run):
    sorting, _ = first_run
    for path in (sorting.opts, sorting.exclusions, sorting.segments):
        assert path.stat().st_size > 0
    for step in PREPRO_STEPS:
        assert status(sorting, step) == "done", step
        for rel in STEPS[step].outputs:
            assert sorting.path(rel).stat().st_size > 0
    # Setup is written before anything is computed.
    peaks_started = read_manifest(sorting, "peaks")["started"]
    assert sorting.segments.stat().st_mtime < sorting.manifest("peaks").stat().st_mtime
    assert peaks_started
    # The probe was made from the CLEANED motion.
    assert read_manifest(sorting, "preprocessed_probe")["motion_used"].endswith("motion_non_rigid_clean.npz")
    assert json.loads(sorting.path("preprocessed_si_probe.json").read_text())["probes"]


def test_motion_edit_reruns_motion_cleaning_plot_not_peaks(demo_world, first_run, tmp_path):
    sorting, _ = fresh_copy(demo_world, first_run, tmp_path)
    peaks = sorting.preprocessing / "peaks.npy"
    inode, mtime = peaks.stat().st_ino, peaks.stat().st_mtime_ns
    old = edit_drift(sorting, "estimate_motion_kwargs", bin_s=4.0)
    changed = rerun_and_diff(demo_world, sorting, tmp_path)
    assert changed == {"motion", "motion_clean", "motion_plot", "preprocessed_probe"}
    assert (peaks.stat().st_ino, peaks.stat().st_mtime_ns) == (inode, mtime)
    (backup,) = _single_backup(sorting, "motion")
    made_with = yaml.safe_load((backup / "motion.options.yaml").read_text())["options"]
    assert made_with["estimate_motion_kwargs"]["bin_s"] == old["bin_s"]
    assert (backup / "motion_non_rigid.npz").exists()


def _single_backup(sorting, step: str):
    found = [
        d for d in (sorting.root / "preprocessing.bak").iterdir() if (d / f"{step}.options.yaml").exists()
    ]
    assert len(found) == 1, found
    return found


def test_cleaning_edit_reruns_only_cleaning_and_after(demo_world, first_run, tmp_path):
    sorting, _ = fresh_copy(demo_world, first_run, tmp_path)
    edit_drift(sorting, "clean_motion_kwargs", speed_threshold=3.0)
    assert rerun_and_diff(demo_world, sorting, tmp_path) == {
        "motion_clean",
        "motion_plot",
        "preprocessed_probe",
    }
    _single_backup(sorting, "motion_clean")


def test_detection_edit_reruns_everything(demo_world, first_run, tmp_path):
    sorting, _ = fresh_copy(demo_world, first_run, tmp_path)
    edit_drift(sorting, "detect_kwargs", detect_threshold=6.0)
    assert rerun_and_diff(demo_world, sorting, tmp_path) == set(PREPRO_STEPS)
    assert (sorting.root / "preprocessing.bak").is_dir()


def test_no_edit_is_a_no_op(demo_world, first_run, tmp_path):
    sorting, _ = fresh_copy(demo_world, first_run, tmp_path)
    files = {
        p: p.stat().st_mtime_ns for p in sorting.root.rglob("*") if p.is_file() and ".pipeline" not in p.parts
    }
    assert rerun_and_diff(demo_world, sorting, tmp_path) == set()
    assert {p: p.stat().st_mtime_ns for p in files} == files
    assert not (sorting.root / "preprocessing.bak").exists()


def test_different_opts_file_is_refused_unless_replace(demo_world, first_run, tmp_path, capsys):
    sorting, opts_path = fresh_copy(demo_world, first_run, tmp_path)
    changed = fast_options()
    drift = changed["preprocessing"][3]["step_params"]
    drift["clean_motion_kwargs"]["speed_threshold"] = 3.0
    other = write_options(tmp_path / "other.yaml", changed)
    before, manifests_before = sorting.opts.read_text(), manifests(sorting)
    assert demo_world.run(tmp_path, "--opts", str(other), "--prepro-only") == 2
    err = capsys.readouterr().err.strip().splitlines()
    key = "preprocessing[3].step_params.clean_motion_kwargs.speed_threshold"
    assert len(err) == 1 and key in err[0] and "--replace-opts" in err[0]
    assert sorting.opts.read_text() == before and manifests(sorting) == manifests_before
    # The same file as the sorting's copy is fine.
    assert demo_world.run(tmp_path, "--opts", str(opts_path), "--prepro-only") == 0
    # --replace-opts adopts it, keeps the old copy, and reruns what the change touches.
    assert demo_world.run(tmp_path, "--opts", str(other), "--prepro-only", "--replace-opts") == 0
    (backup,) = (sorting.root / "opts.bak").iterdir()
    assert (backup / "opts.yaml").read_text() == before
    after = manifests(sorting)
    assert {s for s in PREPRO_STEPS if after[s] != manifests_before[s]} == {
        "motion_clean",
        "motion_plot",
        "preprocessed_probe",
    }


def test_changed_exclusions_are_shown_and_adopted_only_with_refresh(demo_world, first_run, tmp_path, capsys):
    sorting, _ = fresh_copy(demo_world, first_run, tmp_path)
    shared = tmp_path / "shared"
    shutil.copytree(demo_world.folder / "shared", shared)
    exclusions = next(shared.rglob("imec0.ap.artifacts.htsv"))
    first_file = sorted(demo_world.folder.joinpath("raw").rglob("*_t0.imec0.ap.bin"))[0].name
    with exclusions.open("a") as f:
        f.write(f"{first_file}\t1.0\t2.0\tartifact\n")
    segments_before, manifests_before = sorting.segments.read_text(), manifests(sorting)

    assert demo_world.run(tmp_path, "--prepro-only") == 0
    out = capsys.readouterr().out
    assert f"+ {first_file} 1.0-2.0 s artifact" in out and "--refresh-segments" in out
    assert sorting.segments.read_text() == segments_before and manifests(sorting) == manifests_before

    assert demo_world.run(tmp_path, "--prepro-only", "--refresh-segments") == 0
    assert "artifact" in sorting.segments.read_text() and "artifact" in sorting.exclusions.read_text()
    (backup,) = (sorting.root / "segments.bak").iterdir()
    assert (backup / "segments.htsv").read_text() == segments_before
    after = manifests(sorting)
    assert all(after[step] != manifests_before[step] for step in PREPRO_STEPS)
