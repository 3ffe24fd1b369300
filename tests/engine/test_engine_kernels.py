"""Engine kernels and plumbing on small arrays: medians, int16 cast, FFT filter, kriging, bins, writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from probeinterface import generate_linear_probe
from scipy import signal
from spikeinterface.core import NumpyRecording
from spikeinterface.preprocessing import get_spatial_interpolation_kernel

from containers.engine import EngineUnsupported, kernels, plan_chain, write_recording_dat
from containers.engine.motion import KrigingKernel
from containers.engine.stages import AffineStage, FilterPart, TemporalStage, Window


@pytest.mark.parametrize("k", range(1, 14))
def test_neighbour_median_is_numpys_median(k):
    rng = np.random.default_rng(k)
    x = rng.integers(-5, 5, size=(40, 700)).astype(np.float32)  # small integers: many ties
    neighbours = np.stack([rng.choice(40, size=k, replace=False) for _ in range(30)])
    out = torch.empty((30, 700))
    kernels.neighbour_median(torch.from_numpy(x), torch.from_numpy(neighbours), out)
    np.testing.assert_array_equal(out.numpy(), np.median(x[neighbours], axis=1))


@pytest.mark.parametrize("channels", [7, 8])
def test_channel_median_is_numpys_median(channels):
    x = np.random.default_rng(0).normal(size=(channels, 500)).astype(np.float32)
    np.testing.assert_array_equal(kernels.channel_median(torch.from_numpy(x)).numpy(), np.median(x, axis=0))


def test_int16_cast_clips_then_rounds_half_to_even():
    values = np.array(
        [-40000.0, -32768.6, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 32766.5, 32767.4, 1e6], np.float32
    )
    expected = np.round(np.clip(values, -32768, 32767)).astype(
        np.int16
    )  # SpikeInterface: clip, astype(round)
    np.testing.assert_array_equal(kernels.to_int16(torch.from_numpy(values.copy())).numpy(), expected)


def test_fft_filter_matches_filtfilt_of_the_whole_signal_away_from_the_ends():
    fs, margin = 30000.0, 500
    sos = signal.iirfilter(5, [300.0, 12000.0], fs=fs, btype="bandpass", output="sos")
    x = np.random.default_rng(1).normal(size=(3, 20000)).astype(np.float32) + 50  # an offset, like raw data
    whole = signal.sosfiltfilt(sos, x, axis=1)
    stage = TemporalStage([FilterPart(sos, "sos", fs, margin)])
    start, end = 8000, 11000
    buffer = torch.from_numpy(x[:, start - margin : end + margin])
    out = stage.apply(buffer, Window(start - margin))[:, margin:-margin].numpy()
    np.testing.assert_allclose(out, whole[:, start:end], atol=1e-4 * whole.std())


def test_kriging_kernel_is_spikeinterfaces():
    locations = generate_linear_probe(num_elec=24, ypitch=20).contact_positions
    target = locations + np.array([0.0, 13.0])  # the top ones fall outside: zero columns
    ours = KrigingKernel(locations, sigma_um=20.0, p=1)(locations, target)
    theirs = get_spatial_interpolation_kernel(locations, target, method="kriging", sigma_um=20.0, p=1)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert not ours[:, -1].any()


def test_affine_stage_uses_each_frames_bin():
    matrices = [np.eye(2, dtype=np.float32) * (b + 1) for b in range(3)]
    stage = AffineStage(lambda b: matrices[b], np.array([0, 10, 20]))
    x = torch.ones((2, 14))
    out = stage.apply(x, Window(start=8)).numpy()  # frames 8..21: bins 0, 1, 2
    np.testing.assert_array_equal(out[0], [1, 1] + [2] * 10 + [3, 3])


def small_recording(num_channels: int = 8, frames: int = 12000) -> NumpyRecording:
    traces = np.random.default_rng(2).normal(0, 20, (frames, num_channels)).astype(np.int16)
    rec = NumpyRecording(traces, sampling_frequency=30000.0)
    probe = generate_linear_probe(num_elec=num_channels, ypitch=20)
    probe.set_device_channel_indices(np.arange(num_channels))
    rec.set_probe(probe)
    rec.set_channel_gains(2.5)
    rec.set_channel_offsets(0.0)
    return rec


@pytest.mark.parametrize(
    "step, message",
    [
        ({"step_name": "zscore"}, "zscore: not implemented"),
        (
            {"step_name": "bandpass_filter", "step_params": {"direction": "forward"}},
            "bandpass_filter.direction",
        ),
        (
            {"step_name": "common_reference", "step_params": {"reference": "single"}},
            "common_reference.reference",
        ),
        ({"step_name": "whiten", "step_params": {"dtype": "int16", "int_scale": 200}}, "whiten.dtype"),
    ],
)
def test_unsupported_step_or_parameter_raises(step, message):
    with pytest.raises(EngineUnsupported, match=message):
        plan_chain(small_recording(), [step])


def test_recording_without_gains_is_unsupported():
    rec = small_recording()
    rec.delete_property("gain_to_uV")
    with pytest.raises(EngineUnsupported, match="recording.gain_to_uV"):
        plan_chain(rec, [])


def test_write_recording_dat_is_the_chain_chunk_by_chunk(tmp_path):
    rec = small_recording()
    steps = [
        {"step_name": "highpass_filter", "step_params": {"freq_min": 300.0}},
        {"step_name": "scale", "step_params": {"gain": 3.0}},
    ]
    chain = plan_chain(rec, steps, dtype="int16")
    seen: list[float] = []
    write_recording_dat(chain, tmp_path / "r.dat", chunk_frames=5000, on_progress=seen.append)
    written = np.fromfile(tmp_path / "r.dat", dtype=np.int16).reshape(-1, chain.num_channels)
    frames = rec.get_num_samples()
    chunks = [chain.compute(start, min(start + 5000, frames)) for start in range(0, frames, 5000)]
    np.testing.assert_array_equal(written, np.concatenate(chunks))
    # Other chunk boundaries only move float rounding: at most one int16 step.
    assert np.abs(written.astype(int) - chain.compute(0, frames)).max() <= 1
    assert seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(ValueError, match="dtype='int16'"):
        write_recording_dat(plan_chain(rec, steps), tmp_path / "f.dat")


def test_threads_over_time_pieces_give_the_single_thread_output():
    rec = small_recording(frames=30000)
    steps = [
        {"step_name": "bandpass_filter", "step_params": {"freq_min": 300.0, "freq_max": 6000.0}},
        {"step_name": "common_reference", "step_params": {"reference": "local", "operator": "median"}},
    ]
    one, two = plan_chain(rec, steps, n_jobs=1), plan_chain(rec, steps, n_jobs=2)
    block = two.read(200, 29900)  # margin 500: both recording ends cut it
    assert len(two._pieces(block)) == 4  # an edge piece at each end, the rest in 2 (threads)
    ours = two.process(block)
    theirs = one.compute(200, 29900)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * theirs.std())
