"""The engine against SpikeInterface on generated SpikeGLX data: the lab's chains, two probes, bad channels.

Thresholds (issue 13): the float32 chain before drift correction within 1e-3 of the signal's RMS;
recording.dat int16 within +-1 of SpikeInterface's for >= 99.9% of the values. SpikeInterface is read in
1 s chunks (the pipeline's), the engine in 0.7 s chunks: chunk boundaries differ on purpose.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from spikeinterface.core import BaseRecording, write_binary_recording

from containers.engine import plan_chain, plan_recording, write_recording_dat
from containers.recording.chain import preprocess_for_motion, preprocess_full
from containers.steps.recording_dat import as_int16
from tests.support.engine_fixtures import (
    NP1_META,
    NP2_4SHANK_META,
    RATE,
    kept_pieces,
    write_sglx,
    zigzag_motion,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SI_CHUNK, ENGINE_CHUNK = int(RATE), int(0.7 * RATE)
FLOAT_TOLERANCE = 1e-3  # of the signal's RMS
DRIFT = "drift_correction"


def lab_steps(name: str) -> list[dict]:
    return yaml.safe_load((REPO / "opts" / f"sorting_{name}.yaml").read_text())["preprocessing"]


def interpolate_kwargs(steps: list[dict]) -> dict:
    return next(s for s in steps if s["step_name"] == DRIFT)["step_params"]["interpolate_motion_kwargs"]


def si_traces(rec: BaseRecording, chunk: int = SI_CHUNK) -> np.ndarray:
    frames = rec.get_num_samples()
    return np.concatenate(
        [rec.get_traces(start_frame=s, end_frame=min(s + chunk, frames)) for s in range(0, frames, chunk)]
    )


def engine_traces(chain, chunk: int = ENGINE_CHUNK) -> np.ndarray:
    return np.concatenate(
        [chain.compute(s, min(s + chunk, chain.num_frames)) for s in range(0, chain.num_frames, chunk)]
    )


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.sqrt(np.mean(theirs.astype(np.float64) ** 2)))


def per_shank(rec: BaseRecording, count: int) -> BaseRecording:
    groups = rec.get_channel_groups()
    keep = np.concatenate([np.flatnonzero(groups == g)[:count] for g in np.unique(groups)])
    return rec.select_channels(rec.channel_ids[keep])


@pytest.fixture(scope="module")
def np1(tmp_path_factory) -> BaseRecording:
    rec = write_sglx(tmp_path_factory.mktemp("np1"), NP1_META, int(3 * RATE), seed=1)
    return rec.select_channels(rec.channel_ids[:96])


@pytest.fixture(scope="module")
def np2_4shank(tmp_path_factory) -> BaseRecording:
    rec = write_sglx(tmp_path_factory.mktemp("np2"), NP2_4SHANK_META, int(3 * RATE), seed=2)
    return per_shank(rec, 16)


@pytest.mark.parametrize("options", ["chronic_df", "acute_df"])
def test_chain_before_motion_matches_si(np1, options):
    steps = lab_steps(options)
    si = preprocess_for_motion(np1, steps)
    chain = plan_chain(np1, steps, until="motion")
    assert np.array_equal(chain.channel_ids, si.channel_ids)
    np.testing.assert_array_equal(chain.channel_locations, si.get_channel_locations())
    error = relative_error(engine_traces(chain), si_traces(si))
    assert error <= FLOAT_TOLERANCE, f"engine differs from SpikeInterface by {error:.2e} of the RMS"


@pytest.mark.parametrize(
    "probe, options", [("np1", "chronic_df"), ("np2_4shank", "acute_df")], ids=["np1-chronic", "np2-acute"]
)
def test_recording_dat_matches_si(probe, options, request, tmp_path):
    rec = request.getfixturevalue(probe)
    steps = lab_steps(options)
    motion = zigzag_motion(rec.get_total_duration(), rec.get_channel_locations()[:, 1], bin_s=0.5)
    kwargs = interpolate_kwargs(steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SpikeInterface's job-kwargs notices
        si = as_int16(preprocess_full(rec, steps, motion, kwargs))
        write_binary_recording(
            si, tmp_path / "si.dat", dtype="int16", n_jobs=1, chunk_duration="1s", progress_bar=False
        )
    chain = plan_chain(rec, steps, motion, kwargs, dtype="int16")
    write_recording_dat(chain, tmp_path / "engine.dat", chunk_frames=ENGINE_CHUNK)
    assert np.array_equal(chain.channel_ids, si.channel_ids)  # the same border channels removed
    theirs = np.fromfile(tmp_path / "si.dat", dtype=np.int16).reshape(-1, si.get_num_channels())
    ours = np.fromfile(tmp_path / "engine.dat", dtype=np.int16).reshape(theirs.shape)
    within_one = np.mean(np.abs(ours.astype(np.int32) - theirs) <= 1)
    assert within_one >= 0.999, f"only {within_one:.4%} of the values within +-1"
    assert theirs.std() > 50  # whitened and scaled by 200: a real signal was compared


def test_bad_channels_and_global_median_match_si(tmp_path):
    full = write_sglx(tmp_path, NP2_4SHANK_META, int(3 * RATE), seed=3, dead=(5, 200), noisy=(60,))
    planted = set(full.channel_ids[[5, 200, 60]])
    rec = per_shank(full, 24)  # keeps probe channels 0-23, 48-71, 192-215, 240-263
    steps = [
        {"step_name": "detect_bad_channels", "step_params": {"seed": 0, "num_random_chunks": 30}},
        *lab_steps("chronic_df")[:2],  # bandpass_filter, phase_shift
        {"step_name": "common_reference", "step_params": {"reference": "global", "operator": "median"}},
    ]
    si = preprocess_for_motion(rec, steps)
    chain = plan_chain(rec, steps)
    assert planted <= set(rec.channel_ids) - set(si.channel_ids)
    assert np.array_equal(chain.channel_ids, si.channel_ids)
    error = relative_error(engine_traces(chain), si_traces(si))
    assert error <= FLOAT_TOLERANCE, f"engine differs from SpikeInterface by {error:.2e} of the RMS"


@pytest.mark.parametrize(
    "reference, operator", [("local", "average"), ("global", "average"), ("global", "median")]
)
def test_reference_variants_match_si(np1, reference, operator):
    rec = np1.select_channels(np1.channel_ids[:48])
    steps = [
        *lab_steps("chronic_df")[:2],
        {"step_name": "common_reference", "step_params": {"reference": reference, "operator": operator}},
    ]
    error = relative_error(
        engine_traces(plan_chain(rec, steps)), si_traces(preprocess_for_motion(rec, steps))
    )
    assert error <= FLOAT_TOLERANCE, f"engine differs from SpikeInterface by {error:.2e} of the RMS"


def test_engine_recording_reads_like_si_across_kept_pieces(np1):
    kept = kept_pieces(np1, [(0, 40000), (52000, 90000)])  # an excluded bout between two kept pieces
    steps = lab_steps("chronic_df")
    si = preprocess_for_motion(kept, steps)
    ours = plan_recording(kept, steps, until="motion")
    assert ours.get_num_samples() == si.get_num_samples() == 78000
    assert np.array_equal(ours.channel_ids, si.channel_ids)
    np.testing.assert_array_equal(ours.get_probe().contact_positions, si.get_probe().contact_positions)
    for start, end in [(0, 5000), (38000, 42000), (77000, 78000)]:  # the middle one spans the join
        theirs = si.get_traces(start_frame=start, end_frame=end)
        error = relative_error(ours.get_traces(start_frame=start, end_frame=end), theirs)
        assert error <= FLOAT_TOLERANCE, f"[{start}, {end}): {error:.2e} of the RMS"
