"""The step contract's signatures, manifests, status and supersession, on real files."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from tasks.core import atomic
from tasks.core.layout import SortingDir
from tasks.core.manifest import is_complete, read_manifest, status, supersede, write_manifest
from tasks.steps.registry import PREPRO_STEPS, STEPS, expected, prepro_steps

OPTS = {
    "preprocessing": [
        {"step_name": "bandpass_filter", "step_params": {"freq_min": 300.0, "freq_max": 6000.0}},
        {
            "step_name": "drift_correction",
            "step_params": {
                "preset": None,
                "detect_kwargs": {"detect_threshold": 5.0},
                "localize_peaks_kwargs": {"method": "grid_convolution"},
                "estimate_motion_kwargs": {"bin_s": 10.0},
                "clean_motion_kwargs": {"speed_threshold": 5.0, "sigma_smooth_s": 10.0},
                "interpolate_motion_kwargs": {"border_mode": "remove_channels"},
            },
        },
        {"step_name": "whiten", "step_params": {"dtype": "float32"}},
    ],
    "sorting": {"sorter_name": "tridesclous2", "sorter_params": {}},
}


def make_sorting(tmp_path, opts=OPTS) -> SortingDir:
    sorting = SortingDir(tmp_path / "sorting.imec0")
    sorting.root.mkdir(parents=True)
    sorting.opts.write_text(yaml.safe_dump(opts, sort_keys=False))
    sorting.segments.write_text("fname\ttype\na.bin\tkeep\n")
    return sorting


def edit(sorting: SortingDir, change) -> None:
    opts = yaml.safe_load(sorting.opts.read_text())
    change(opts["preprocessing"][1]["step_params"])
    sorting.opts.write_text(yaml.safe_dump(opts, sort_keys=False))
    # mtime granularity: make sure the cached reader sees a new stamp even within the same tick
    os.utime(sorting.opts, ns=(sorting.opts.stat().st_mtime_ns + 10**6,) * 2)


def signatures(sorting: SortingDir) -> dict[str, str]:
    return {step: expected(sorting, step).signature for step in PREPRO_STEPS}


def changed_by(tmp_path, change) -> set[str]:
    sorting = make_sorting(tmp_path)
    before = signatures(sorting)
    edit(sorting, change)
    after = signatures(sorting)
    return {step for step in PREPRO_STEPS if before[step] != after[step]}


def test_motion_edit_invalidates_motion_and_downstream_only(tmp_path):
    changed = changed_by(tmp_path, lambda p: p["estimate_motion_kwargs"].update(bin_s=30.0))
    assert changed == {"motion", "motion_clean", "motion_plot", "preprocessed_probe"}


def test_cleaning_edit_invalidates_cleaning_and_downstream_only(tmp_path):
    changed = changed_by(tmp_path, lambda p: p["clean_motion_kwargs"].update(speed_threshold=3.0))
    assert changed == {"motion_clean", "motion_plot", "preprocessed_probe"}


def test_detection_edit_invalidates_everything(tmp_path):
    changed = changed_by(tmp_path, lambda p: p["detect_kwargs"].update(detect_threshold=7.0))
    assert changed == set(PREPRO_STEPS)


def test_interpolation_edit_invalidates_only_the_probe(tmp_path):
    changed = changed_by(
        tmp_path, lambda p: p["interpolate_motion_kwargs"].update(border_mode="force_extrapolate")
    )
    assert changed == {"preprocessed_probe"}


def test_segments_change_invalidates_everything(tmp_path):
    sorting = make_sorting(tmp_path)
    before = signatures(sorting)
    sorting.segments.write_text("fname\ttype\na.bin\tkeep\nb.bin\tkeep\n")
    assert all(before[s] != sig for s, sig in signatures(sorting).items())


def test_no_drift_correction_means_no_motion_steps(tmp_path):
    opts = copy.deepcopy(OPTS)
    del opts["preprocessing"][1]
    sorting = make_sorting(tmp_path, opts)
    assert prepro_steps(opts) == ("preprocessed_probe",)
    assert STEPS["preprocessed_probe"].upstream(opts) == ("segments",)
    assert expected(sorting, "preprocessed_probe").upstream.keys() == {"segments"}


def fake_run(sorting: SortingDir, step: str, content: bytes = b"x", environment: str = "") -> None:
    """Write a step's outputs the way the step program does (atomically), then its manifest."""
    for rel in STEPS[step].outputs:
        with atomic.atomic_path(sorting.path(rel)) as tmp:
            tmp.write_bytes(content)
    write_manifest(sorting, expected(sorting, step, environment), started="t0")


def test_status_done_stale_partial_missing(tmp_path):
    sorting = make_sorting(tmp_path)
    assert status(sorting, "peaks") == "missing"
    sorting.preprocessing.mkdir()
    (sorting.preprocessing / "peaks.npy").write_bytes(b"half")
    assert status(sorting, "peaks") == "partial"  # outputs without a manifest: a killed run
    fake_run(sorting, "peaks")
    assert status(sorting, "peaks") == "done" and is_complete(sorting, "peaks")
    (sorting.preprocessing / "peaks.npy").write_bytes(b"truncated or replaced")
    assert status(sorting, "peaks") == "partial"
    fake_run(sorting, "peaks")
    edit(sorting, lambda p: p["detect_kwargs"].update(detect_threshold=9.0))
    assert status(sorting, "peaks") == "stale" and not is_complete(sorting, "peaks")


def test_supersede_keeps_outputs_and_the_options_that_made_them(tmp_path):
    sorting = make_sorting(tmp_path)
    fake_run(sorting, "motion", b"old motion")
    made_with = read_manifest(sorting, "motion")["options"]
    backup = supersede(sorting, "motion", stamp="20260101T000000")
    assert backup == sorting.root / "preprocessing.bak" / "20260101T000000"
    assert (backup / "motion_non_rigid.npz").read_bytes() == b"old motion"
    assert yaml.safe_load((backup / "motion.options.yaml").read_text())["options"] == made_with
    assert (backup / "motion.manifest.json").exists()
    assert not sorting.manifest("motion").exists() and status(sorting, "motion") == "missing"
    assert supersede(sorting, "motion") is None  # nothing left to move


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "out.npy"
    with pytest.raises(RuntimeError), atomic.atomic_path(final) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert not final.exists() and list(tmp_path.iterdir()) == []


def test_remove_stale_tmp(tmp_path):
    (tmp_path / f"peaks{atomic.TMP_MARK}123.npy").write_bytes(b"x")
    (tmp_path / "peaks.npy-luigi-tmp-1234").write_bytes(b"x")
    (tmp_path / "peaks.npy").write_bytes(b"keep")
    assert len(atomic.remove_stale_tmp(tmp_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["peaks.npy"]


def test_image_pins_the_steps_it_ran_and_the_local_executor_accepts_them(tmp_path):
    sorting = make_sorting(tmp_path)
    fake_run(sorting, "peaks", environment="docker:sha256:aaa")
    fake_run(sorting, "peak_locations")  # a later step run locally on the docker-made peaks
    assert read_manifest(sorting, "peaks")["environment"] == "docker:sha256:aaa"
    assert status(sorting, "peaks", "docker:sha256:aaa") == "done"
    assert status(sorting, "peaks", "docker:sha256:bbb") == "stale"  # a rebuilt image reruns it
    assert status(sorting, "peaks") == "done"  # any environment: what the manifest recorded
    assert status(sorting, "peak_locations") == "done"  # upstream signatures leave the image out
    edit(sorting, lambda p: p["detect_kwargs"].update(detect_threshold=9.0))
    assert status(sorting, "peaks") == "stale" and status(sorting, "peak_locations") == "stale"
