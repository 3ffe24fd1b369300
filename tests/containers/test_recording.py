"""Tests of containers.recording.chain: SpikeGLX files, the kept segments, and the preprocessing chain."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from spikeinterface.core.motion import Motion

from containers.recording.chain import (
    apply_chain,
    load_kept_recording,
    preprocess_for_motion,
    preprocess_full,
    read_spikeglx_file,
    split_chain,
)
from tasks.core.errors import UserError

META_DIR = Path("/work/shared/data/spikeglx-meta")
NP1 = "allan-longcol_g0_t0.imec0.ap.meta"  # NP1.0, calibrated rate 29999.941586


def write_spikeglx(folder: Path, meta_name: str, n_samples: int, seed: int, stem: str = "run_g0_t0") -> Path:
    """A genuine .meta beside a random int16 .bin of n_samples; returns the .bin path."""
    imec = folder / "run_g0" / "run_g0_imec0"
    imec.mkdir(parents=True, exist_ok=True)
    bin_path = imec / f"{stem}.imec0.ap.bin"
    meta_text = (META_DIR / meta_name).read_text()
    n_chans = int(re.search(r"^nSavedChans=(\d+)", meta_text, re.M).group(1))
    data = np.random.default_rng(seed).integers(-500, 500, size=(n_samples, n_chans), dtype="int16")
    data.tofile(bin_path)
    meta_text = re.sub(r"^fileSizeBytes=.*$", f"fileSizeBytes={data.nbytes}", meta_text, flags=re.M)
    bin_path.with_suffix(".meta").write_text(meta_text)
    return bin_path


def meta_value(meta_name: str, key: str) -> str:
    return re.search(rf"^{key}=(.*?)\r?$", (META_DIR / meta_name).read_text(), re.M).group(1)


@pytest.mark.parametrize(
    "meta_name, n_ap, uv_per_bit",
    [
        (NP1, 384, 0.6 / 512 / 500 * 1e6),
        ("NP1_saved_only_subset_of_channels.meta", 151, 0.6 / 512 / 500 * 1e6),
        ("p2_g0_t0.imec0.ap.meta", 384, 0.5 / 8192 / 80 * 1e6),  # NP2.0 single shank
        ("NP2_4_shanks.imec0.ap.meta", 384, 0.5 / 8192 / 80 * 1e6),
        ("NP2_2013_subset_channels.imec0.ap.meta", 120, None),
        ("NP2020_sample_g0_t0.imec0.ap.meta", 1536, None),  # Quad-Base: 4 SY channels dropped
    ],
)
def test_read_spikeglx_file(tmp_path, meta_name, n_ap, uv_per_bit):
    bin_path = write_spikeglx(tmp_path, meta_name, 40, seed=1)
    rec = read_spikeglx_file(bin_path)
    raw = np.fromfile(bin_path, dtype="int16").reshape(40, -1)
    assert rec.get_num_channels() == n_ap and rec.get_num_samples() == 40
    assert rec.sampling_frequency == float(meta_value(meta_name, "imSampRate"))
    assert np.array_equal(rec.get_traces(), raw[:, :n_ap])
    assert rec.has_probe() and rec.get_channel_locations().shape == (n_ap, 2)
    assert rec.get_property("inter_sample_shift") is not None
    if uv_per_bit is not None:
        assert np.allclose(rec.get_channel_gains(), uv_per_bit)
    assert np.allclose(rec.get_traces(return_in_uV=True), raw[:, :n_ap] * rec.get_channel_gains())


def test_read_spikeglx_file_groups_shanks(tmp_path):
    rec = read_spikeglx_file(write_spikeglx(tmp_path, "NP2_4_shanks.imec0.ap.meta", 10, seed=2))
    assert len(np.unique(rec.get_channel_groups())) == 4


def test_read_spikeglx_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_spikeglx_file(tmp_path / "missing.imec0.ap.bin")
    bin_path = write_spikeglx(tmp_path, NP1, 10, seed=3)
    bin_path.with_suffix(".meta").write_text("")
    with pytest.raises(UserError, match="empty"):
        read_spikeglx_file(bin_path)


def segment_table(bins: list[Path], cuts: list[list[tuple[int, int, str]]]) -> pd.DataFrame:
    rows = [
        dict(
            fname=b.name,
            type=kind,
            withinFileStartFrame=s,
            withinFileEndFrame=e,
            path=str(b),
            nSavedChans=385,
        )
        for b, file_cuts in zip(bins, cuts, strict=True)
        for s, e, kind in file_cuts
    ]
    return pd.DataFrame(rows)


def test_load_kept_recording_matches_numpy(tmp_path):
    sizes = [300, 250, 200]
    bins = [write_spikeglx(tmp_path, NP1, n, seed=i, stem=f"run_g0_t{i}") for i, n in enumerate(sizes)]
    cuts = [
        [(0, 50, "keep"), (50, 120, "artifact"), (120, 300, "keep")],  # one file, two kept pieces
        [(0, 250, "flat")],  # fully excluded
        [(0, 180, "keep"), (180, 200, "artifact")],
    ]
    rec = load_kept_recording(segment_table(bins, cuts))
    raws = [np.fromfile(b, dtype="int16").reshape(n, 385)[:, :384] for b, n in zip(bins, sizes, strict=True)]
    expected = np.concatenate([raws[0][:50], raws[0][120:], raws[2][:180]])
    assert rec.get_num_segments() == 1 and rec.get_num_samples() == 50 + 180 + 180
    assert np.array_equal(rec.get_traces(), expected)
    assert np.allclose(rec.get_traces(return_in_uV=True), expected * 0.6 / 512 / 500 * 1e6, rtol=1e-6)
    assert rec.has_probe()


def test_load_kept_recording_errors(tmp_path):
    bin_path = write_spikeglx(tmp_path, NP1, 100, seed=0)
    with pytest.raises(UserError, match="outside the file"):
        load_kept_recording(segment_table([bin_path], [[(0, 101, "keep")]]))
    with pytest.raises(UserError, match="no 'keep'"):
        load_kept_recording(segment_table([bin_path], [[(0, 100, "flat")]]))
    other = write_spikeglx(tmp_path / "b", "NP1_saved_only_subset_of_channels.meta", 100, seed=0)
    with pytest.raises(UserError, match="differ"):
        load_kept_recording(segment_table([bin_path, other], [[(0, 100, "keep")], [(0, 100, "keep")]]))


LAB_CHAIN = [
    dict(step_name="bandpass_filter", step_params=dict(freq_min=300.0, freq_max=6000.0)),
    dict(step_name="phase_shift", step_params={}),
    dict(step_name="common_reference", step_params=dict(reference="local", operator="median")),
    dict(step_name="drift_correction", step_params=dict(preset="nonrigid_accurate")),
    dict(step_name="whiten", step_params=dict(dtype="float32")),
    dict(step_name="scale", step_params=dict(gain=200.0, offset=0.0)),
]


def test_split_chain():
    before, drift, after = split_chain(LAB_CHAIN)
    assert [s["step_name"] for s in before] == ["bandpass_filter", "phase_shift", "common_reference"]
    assert drift == dict(preset="nonrigid_accurate")
    assert [s["step_name"] for s in after] == ["whiten", "scale"]
    assert split_chain(LAB_CHAIN[:3]) == (LAB_CHAIN[:3], None, [])


@pytest.mark.parametrize(
    "steps, match",
    [
        ([dict(step_name="bandpas_filter")], "unknown step_name"),
        ([dict(step_name="whiten", step_params=dict(dtyp="float32"))], "dtyp"),
        ([dict(step_name="detect_bad_channels", step_params=dict(methd="std"))], "methd"),
        ([dict(step_name="scale", params={})], "step_name and optional step_params"),
        ([LAB_CHAIN[3], LAB_CHAIN[3]], "2 times"),
    ],
)
def test_split_chain_rejects(steps, match):
    with pytest.raises(UserError, match=match):
        split_chain(steps)


def test_apply_chain_refuses_drift_correction(tmp_path):
    rec = read_spikeglx_file(write_spikeglx(tmp_path, NP1, 100, seed=0))
    with pytest.raises(UserError, match="split the chain"):
        apply_chain(rec, LAB_CHAIN)


def test_preprocess_full_uses_the_given_motion(tmp_path):
    bin_path = write_spikeglx(tmp_path, "NP2_2013_subset_channels.imec0.ap.meta", 6000, seed=0)
    rec = load_kept_recording(segment_table([bin_path], [[(0, 6000, "keep")]]))
    for_motion = preprocess_for_motion(rec, LAB_CHAIN)
    assert for_motion.get_dtype() == np.float32 and for_motion.get_num_channels() == 120
    depths = rec.get_channel_locations()[:, 1]
    times = np.array([0.05, 0.15])
    zero = Motion(np.zeros((2, 1)), times, np.array([depths.mean()]))
    big = Motion(np.full((2, 1), 60.0), times, np.array([depths.mean()]))
    kwargs = dict(border_mode="remove_channels", spatial_interpolation_method="kriging", sigma_um=20.0, p=1)
    full = preprocess_full(rec, LAB_CHAIN, zero, kwargs)
    assert full.get_dtype() == np.float32 and full.get_num_channels() == 120
    # Whitened then scaled by 200: unit variance x 200 (border effects aside).
    assert 100 < np.median(full.get_traces(start_frame=1000, end_frame=5000).std(axis=0)) < 300
    # The motion passed in is the one applied: 60 um of drift pushes border channels out.
    assert preprocess_full(rec, LAB_CHAIN, big, kwargs).get_num_channels() < 120
    with pytest.raises(ValueError):
        preprocess_full(rec, LAB_CHAIN, None, kwargs)
    shutil.rmtree(tmp_path / "run_g0")
