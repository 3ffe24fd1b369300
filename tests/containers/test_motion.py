"""Tests of containers.motion.stages: the stages on a generated drifting recording, cleaning, saving,
presets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from spikeinterface.core.motion import Motion

from containers.motion import stages as m
from containers.recording.chain import preprocess_for_motion
from tasks.core.errors import UserError, WiscWarning
from tests.support.si_fixtures import DRIFT_UM, drifting_case

JOB = dict(n_jobs=1, progress_bar=False)
CHAIN = [
    dict(step_name="bandpass_filter", step_params=dict(freq_min=300.0, freq_max=6000.0)),
    dict(step_name="common_reference", step_params=dict(reference="global", operator="median")),
    dict(
        step_name="drift_correction",
        step_params=dict(
            detect_kwargs=dict(
                method="locally_exclusive",
                radius_um=50.0,
                peak_sign="neg",
                detect_threshold=5.0,
                exclude_sweep_ms=0.1,
            ),
            # monopolar_triangulation (the lab's) is ~20x slower here; grid_convolution is as accurate (SPEC).
            localize_peaks_kwargs=dict(method="grid_convolution", radius_um=75.0),
            estimate_motion_kwargs=dict(
                method="decentralized",
                bin_s=2.0,
                bin_um=1.0,
                rigid=False,
                win_step_um=100.0,
                win_scale_um=150.0,
                histogram_depth_smooth_um=5.0,
                max_displacement_um=60.0,
                corr_threshold=0.7,
                convergence_method="lsqr_robust",
                conv_engine="numpy",
            ),
            clean_motion_kwargs=dict(speed_threshold=5.0, sigma_smooth_s=2.0),
        ),
    ),
]


@pytest.fixture(scope="module")
def estimated(tmp_path_factory):
    case = drifting_case(tmp_path_factory.getbasetemp() / "si_drifting")
    params = m.resolve_drift_params(CHAIN[-1]["step_params"])
    rec = preprocess_for_motion(case.recording, CHAIN)
    peaks = m.detect_peaks_stage(rec, params["detect_kwargs"], JOB)
    locations = m.localize_peaks_stage(rec, peaks, params["localize_peaks_kwargs"], JOB)
    motion = m.estimate_motion_stage(rec, peaks, locations, params["estimate_motion_kwargs"], JOB)
    return case, params, peaks, locations, motion


@pytest.mark.slow
def test_stages_recover_known_drift(estimated):
    case, params, peaks, locations, motion = estimated
    assert len(peaks) == len(locations) > 1000
    assert motion.spatial_bins_um.size > 1  # non-rigid
    truth = (case.displacement_um, case.times_s, case.depths_um)
    # Measured 1.2 um raw, 2.5 um cleaned (smoothing blunts the zigzag's corners) on a 40 um zigzag.
    assert m.motion_error_um(motion, *truth) < 4.0
    assert m.motion_error_um(m.clean_motion_stage(motion, params["clean_motion_kwargs"]), *truth) < 5.0
    # The bound is meaningful: reporting no motion at all is far off.
    still = Motion(np.zeros_like(motion.displacement[0]), motion.temporal_bins_s[0], motion.spatial_bins_um)
    assert m.motion_error_um(still, *truth) > DRIFT_UM / 4


def _motion(displacement: np.ndarray, bin_s: float = 10.0) -> Motion:
    displacement = displacement if displacement.ndim == 2 else displacement[:, None]
    times = bin_s / 2 + bin_s * np.arange(displacement.shape[0])
    return Motion(displacement, times, np.linspace(0, 3000, displacement.shape[1]))


def test_clean_removes_spike_and_keeps_smooth_motion():
    times = 5.0 + 10.0 * np.arange(360)
    smooth = 20 * np.sin(2 * np.pi * times / 2000.0) + 25.0  # nonzero at both ends on purpose
    spiky = smooth.copy()
    spiky[100:103] += 120.0  # 12 um/s jumps, over the 5 um/s threshold
    kwargs = dict(speed_threshold=5.0, sigma_smooth_s=10.0)
    cleaned = m.clean_motion_stage(_motion(np.column_stack([spiky, smooth])), kwargs).displacement[0]
    assert np.abs(spiky - smooth).max() == pytest.approx(120.0)
    assert np.abs(cleaned[:, 0] - smooth).max() < 1.0
    # Smooth motion, edges included (SI's zero-padded smoothing pulled them toward 0), is kept.
    assert np.abs(cleaned[:, 1] - smooth).max() < 0.5


def test_clean_odd_number_of_jumps_masks_the_shorter_excursion():
    disp = np.zeros(50)
    disp[10:13] = 100.0  # a short excursion ...
    disp[40:] = 100.0  # ... and a step that stays: 3 jumps in all
    cleaned = m.clean_displacement(disp[:, None], 10.0, speed_threshold=5.0, sigma_smooth_s=None)[:, 0]
    assert np.allclose(cleaned[:40], 0.0) and np.allclose(cleaned[40:], 100.0)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    motion = Motion(
        [rng.normal(size=(7, 3)), rng.normal(size=(4, 3))],
        [np.arange(7.0), np.arange(4.0)],
        np.array([100.0, 600.0, 1100.0]),
        direction="y",
        interpolation_method="nearest",
    )
    path = tmp_path / "motion_non_rigid.npz.tmp"  # a temporary name is kept as given
    m.save_motion(motion, path)
    loaded = m.load_motion(path)
    assert path.exists() and loaded == motion
    assert loaded.num_segments == 2 and loaded.interpolation_method == "nearest" and loaded.direction == "y"


def test_motion_error_removes_offset_and_interpolates_truth():
    motion = _motion(np.tile(np.linspace(0, 9, 10)[:, None], (1, 3)) + 7.0, bin_s=1.0)
    times = np.arange(0, 11.0)
    truth = np.column_stack([times - 0.5, times - 0.5])  # linear: exact at the bin centres
    assert m.motion_error_um(motion, truth, times, np.array([0.0, 3000.0])) == pytest.approx(0.0, abs=1e-9)
    assert m.motion_error_um(motion, times - 0.5, times, np.array([0.0])) == pytest.approx(0.0, abs=1e-9)
    assert m.motion_error_um(motion, np.zeros(11), times, np.array([0.0])) > 2.0


def test_resolve_preset_merges_explicit_keys():
    p = m.resolve_drift_params(dict(preset="nonrigid_accurate", detect_kwargs=dict(detect_threshold=5.0)))
    assert p["detect_kwargs"] == dict(
        method="locally_exclusive",
        peak_sign="neg",
        detect_threshold=5.0,
        exclude_sweep_ms=0.8,
        radius_um=80.0,
    )
    assert p["estimate_motion_kwargs"] == dict(method="decentralized", direction="y", rigid=False)
    assert p["interpolate_motion_kwargs"]["border_mode"] == "remove_channels"
    assert p["clean_motion_kwargs"] == m.CLEAN_DEFAULTS and p["notes"] == {}


def test_resolve_dredge_quirk_and_method_change():
    p = m.resolve_drift_params(dict(preset="dredge"))
    assert p["estimate_motion_kwargs"]["batching_mode"] == "full"
    assert "batching_mode" in " ".join(p["notes"])
    with pytest.raises(UserError, match="batching_mode"):
        m.resolve_drift_params(dict(preset="dredge", estimate_motion_kwargs=dict(batching_mode="offline")))
    # Another method than the preset's: the preset's dredge-only keys are dropped.
    p = m.resolve_drift_params(
        dict(preset="dredge", estimate_motion_kwargs=dict(method="decentralized", bin_s=10.0))
    )
    assert p["estimate_motion_kwargs"] == dict(method="decentralized", bin_s=10.0)


def test_resolve_without_preset_and_plain_values():
    p = m.resolve_drift_params(dict(preset=None, localize_peaks_kwargs=dict(radius_um=60.0)))
    assert p["detect_kwargs"] == dict(method="locally_exclusive")
    assert p["localize_peaks_kwargs"] == dict(method="center_of_mass", radius_um=60.0)
    weights = m.resolve_drift_params(dict(preset="kilosort_like"))["localize_peaks_kwargs"]["weight_method"]
    assert weights["sigma_list_um"] == [5.0, 10.0, 15.0, 20.0, 25.0]  # YAML/JSON-friendly


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(preset="fastest"), "preset"),
        (dict(motion_params={}), "unknown key"),
        (dict(detect_kwargs=dict(detect_treshold=5)), "detect_treshold"),
        (dict(estimate_motion_kwargs=dict(method="decentralized", margin_um=0)), "hist_margin_um"),
        (dict(estimate_motion_kwargs=dict(method="decentralised")), "decentralised"),
        (dict(clean_motion_kwargs=dict(speed=5)), "clean_motion_kwargs"),
        (dict(interpolate_motion_kwargs=dict(sigma=20)), "sigma"),
    ],
)
def test_resolve_rejects_bad_keys(params, match):
    with pytest.raises(UserError, match=match):
        m.resolve_drift_params(params)


def test_torch_fallback_and_dependency_check(monkeypatch):
    monkeypatch.setattr(
        m, "torch_available", lambda: False
    )  # an environment without torch (TORCH=none image)
    lab = CHAIN[-1]["step_params"]["estimate_motion_kwargs"] | dict(conv_engine="torch")
    with pytest.warns(WiscWarning, match="numpy"):
        p = m.resolve_drift_params(dict(estimate_motion_kwargs=lab))
    assert p["estimate_motion_kwargs"]["conv_engine"] == "numpy"
    assert "conv_engine" in " ".join(p["notes"])
    m.check_motion_dependencies(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dredge = m.resolve_drift_params(dict(preset="dredge"))
    with pytest.raises(UserError, match="torch"):
        m.check_motion_dependencies(dredge)
