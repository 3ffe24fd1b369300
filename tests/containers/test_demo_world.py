"""Tests for containers.demo.world: layout, configs, exclusions and ground truth agree with the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import spikeinterface.extractors as se
import yaml
from probeinterface.neuropixels_tools import parse_spikeglx_meta

from containers.demo.sglx_writer import UV_PER_BIT, np1_probe
from containers.demo.world import (
    DRIFT_MIN_PERIOD_S,
    DRIFT_UM,
    CorrelatedNoiseRecording,
    DemoWorld,
    write_demo_world,
)
from tasks.core.errors import UserError
from tasks.inputs.projects import load_projects

DURATION_S = 12.0
FLAT_S = 2.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    return write_demo_world(tmp_path_factory.mktemp("demo") / "world", DURATION_S, num_units=6, flat_s=FLAT_S)


def _counts(world: DemoWorld) -> list[np.ndarray]:
    return [np.memmap(p, dtype="<i2", mode="r").reshape(-1, 385) for p in world.bin_paths]


def _kept(world: DemoWorld) -> np.ndarray:
    """The KEPT timeline: files concatenated in order, the flat bout removed."""
    parts = _counts(world)
    f0, f1 = world.flat_frames
    return np.concatenate(parts[:-1] + [parts[-1][:f0], parts[-1][f1:]])


def test_files_follow_the_spikeglx_layout(world: DemoWorld) -> None:
    names = [p.relative_to(world.raw_dir).as_posix() for p in world.bin_paths]
    assert names == [
        "1-10-2026/SpikeGLX/1-10-2026_g0/1-10-2026_g0_imec0/1-10-2026_g0_t0.imec0.ap.bin",
        "1-10-2026/SpikeGLX/1-10-2026_g0/1-10-2026_g0_imec0/1-10-2026_g0_t1.imec0.ap.bin",
        "1-11-2026/SpikeGLX/1-11-2026_g0/1-11-2026_g0_imec0/1-11-2026_g0_t0.imec0.ap.bin",
    ]
    metas = [parse_spikeglx_meta(p.with_suffix(".meta")) for p in world.bin_paths]
    sizes = [p.stat().st_size for p in world.bin_paths]
    assert [int(m["fileSizeBytes"]) for m in metas] == sizes
    assert [m["fileName"] for m in metas] == [p.as_posix() for p in world.bin_paths]
    assert {m["imSampRate"] for m in metas} == {repr(world.sampling_rate)}
    samples = [s // 770 for s in sizes]
    assert sum(samples) == int(DURATION_S * world.sampling_rate)
    durations = [float(m["fileTimeSecs"]) for m in metas]
    assert durations == pytest.approx([n / world.sampling_rate for n in samples])
    # The second trigger follows the first (a 1 s timed-trigger gap); the next session starts a new day.
    first = [int(m["firstSample"]) for m in metas]
    assert first[1] == first[0] + samples[0] + int(world.sampling_rate)
    assert [m["fileCreateTime"][:10] for m in metas] == ["2026-01-10", "2026-01-10", "2026-01-11"]
    assert metas[0]["fileCreateTime"] < metas[1]["fileCreateTime"]


def test_spikeinterface_reads_every_file(world: DemoWorld) -> None:
    sessions = {p.parents[2] for p in world.bin_paths}
    per_file = []
    for folder in sorted(sessions):
        recording = se.read_spikeglx(folder, stream_id="imec0.ap")
        assert recording.get_num_channels() == 384
        assert recording.get_sampling_frequency() == world.sampling_rate
        per_file += [recording.get_num_samples(s) for s in range(recording.get_num_segments())]
    assert per_file == [c.shape[0] for c in _counts(world)]


def test_projects_and_subject_files_parse(world: DemoWorld) -> None:
    projects = list(yaml.safe_load_all(world.projects_file.read_text()))
    assert projects == [
        {"project": "shared", "project_directory": str(world.folder / "shared")},
        {"project": "shared_ssd", "project_directory": str(world.folder / "shared_ssd")},
    ]
    assert world.projects_file.read_text().count("\n...\n") == 2
    loaded = load_projects(world.projects_file)  # the pipeline's own reader agrees
    assert (loaded["shared"], loaded["shared_ssd"]) == (world.folder / "shared", world.folder / "shared_ssd")
    subject = yaml.safe_load(world.subject_file.read_text())
    assert world.subject_file.name == "DEMO1-Mouse.yml"
    sessions = subject["recording_sessions"]
    assert [s["id"] for s in sessions] == ["1-10-2026", "1-11-2026"]
    for session in sessions:
        assert Path(session["ap"]) == Path(session["lf"]) == world.raw_dir / session["id"] / "SpikeGLX"
        assert session["imSyncType"] == "barcode"
    experiment = subject["experiments"]["demo_experiment"]
    assert experiment["recording_session_ids"] == ["1-10-2026", "1-11-2026"]
    assert experiment["aliases"]["full"] == [{"start_file": "1-10-2026_g0_t0", "end_file": "1-11-2026_g0_t0"}]


def test_flat_bout_is_zeros_where_the_exclusion_says(world: DemoWorld) -> None:
    table = pd.read_csv(world.exclusions_file, sep="\t")
    assert list(table.columns) == ["fname", "withinFileStartTime", "withinFileEndTime", "type"]
    assert table.shape == (1, 4)
    row = table.iloc[0]
    assert (row.fname, row.type) == (world.bin_paths[-1].name, "flat")
    assert row.withinFileEndTime - row.withinFileStartTime == pytest.approx(FLAT_S)
    f0, f1 = (int(t * world.sampling_rate) for t in (row.withinFileStartTime, row.withinFileEndTime))
    assert (f0, f1) == world.flat_frames
    last = _counts(world)[-1]
    assert not last[f0:f1].any()
    assert last[f0 - 1, :384].any() and last[f1, :384].any()  # exactly the bout, not more
    kept = _kept(world)
    assert kept.shape[0] == world.kept_num_samples
    # No other flat stretch: every 0.1 s of the kept data carries signal.
    block = int(0.1 * world.sampling_rate)
    energy = np.abs(kept[: kept.shape[0] // block * block, :384]).reshape(-1, block * 384).max(axis=1)
    assert energy.min() > 0


def test_ground_truth_spikes_match_the_data(world: DemoWorld) -> None:
    truth = np.load(world.ground_truth_dir / "sorting.npz")
    frames, labels = truth["spike_frames"], truth["spike_unit_ids"]
    assert int(truth["num_samples"]) == world.kept_num_samples
    assert float(truth["sampling_frequency"]) == world.sampling_rate
    assert frames.min() >= 0 and frames.max() < world.kept_num_samples
    assert set(labels) <= set(truth["unit_ids"])
    units = pd.read_csv(world.ground_truth_dir / "units.csv")
    assert len(units) == world.num_units
    assert (units.num_spikes == np.bincount(labels, minlength=len(units))).all()

    # Spike-triggered average on the peak channel of the clearest unit shows its trough at the spike frame:
    # the frames are right across file boundaries and after the removed bout.
    kept = _kept(world)
    unit = units.loc[units.snr.idxmax()]
    own = frames[(labels == unit.unit_id) & (frames > 60) & (frames < world.kept_num_samples - 60)]
    assert own.size > 10 and (own > world.kept_num_samples // 2).any()
    average = np.mean([kept[f - 60 : f + 60, int(unit.peak_channel)] for f in own], axis=0) * UV_PER_BIT
    assert abs(int(np.argmin(average)) - 60) <= 2
    assert -average.min() > 0.7 * unit.peak_amplitude_uV


def test_ground_truth_motion_is_a_zigzag_in_the_kept_timeline(world: DemoWorld) -> None:
    motion = np.load(world.ground_truth_dir / "motion.npz")
    times, depths, displacement = motion["times_s"], motion["depths_um"], motion["displacement_um"]
    assert displacement.shape == (times.size, depths.size)
    assert np.all(np.diff(times) > 0) and times[0] == 0
    assert times[-1] < world.kept_num_samples / world.sampling_rate
    assert depths[0] == 0 and depths[-1] == 3820
    # A zigzag of DRIFT_UM peak to peak rising over half a period; shorter worlds see part of the rise.
    rise = DRIFT_UM * min(1.0, DURATION_S / (max(DURATION_S / 2, DRIFT_MIN_PERIOD_S) / 2))
    assert np.ptp(displacement) == pytest.approx(rise, rel=0.2)
    np.testing.assert_array_equal(displacement, displacement[:, :1].repeat(depths.size, axis=1))  # rigid
    # The bout's displacement samples are gone: one gap of 0.2 s replaces 2 s worth of samples.
    assert times.size == pytest.approx(5.0 * (DURATION_S - FLAT_S), abs=2)


def test_readme_says_what_is_where(world: DemoWorld) -> None:
    text = world.readme.read_text()
    for needle in ("projects.yaml", "ground_truth", "motion.npz", "sorting.npz", "units.csv", "KEPT"):
        assert needle in text


def test_existing_world_needs_overwrite(tmp_path: Path) -> None:
    folder = tmp_path / "world"
    write_demo_world(folder, duration_s=4.0, num_units=2, flat_s=0.4)
    (folder / "notes.txt").write_text("mine")
    (folder / "shared_ssd" / "old_sorting").mkdir()
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with pytest.raises(UserError, match="--overwrite"):
        write_demo_world(folder, duration_s=4.0, num_units=2, flat_s=0.4)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before

    world = write_demo_world(folder, duration_s=4.0, num_units=3, flat_s=0.4, seed=1, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"  # not ours: kept
    assert not (folder / "shared_ssd" / "old_sorting").exists()  # the old world's sortings go with it
    assert len(pd.read_csv(world.ground_truth_dir / "units.csv")) == 3


def test_overwrite_refuses_a_folder_that_is_not_a_demo_world(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "precious.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="not a demo world"):
        write_demo_world(tmp_path, duration_s=4.0, num_units=2, flat_s=0.4, overwrite=True)
    assert [p.name for p in tmp_path.rglob("*")] == ["raw", "precious.bin"]


@pytest.mark.parametrize("kwargs", [dict(duration_s=2.0), dict(duration_s=0.0), dict(num_units=0)])
def test_bad_arguments_write_nothing(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(UserError):
        write_demo_world(tmp_path / "world", **kwargs)
    assert not (tmp_path / "world").exists()


def test_noise_is_chunk_invariant_with_the_requested_levels() -> None:
    probe = np1_probe()
    levels = np.linspace(6.0, 8.0, 384)
    noise = CorrelatedNoiseRecording(probe, 30000.123, 100_000, levels, seed=3)
    whole = noise.get_traces(start_frame=10_000, end_frame=70_000)
    pieces = [noise.get_traces(start_frame=a, end_frame=b) for a, b in ((10_000, 31_000), (31_000, 70_000))]
    np.testing.assert_array_equal(whole, np.concatenate(pieces))
    np.testing.assert_allclose(whole.std(axis=0), levels, rtol=0.05)
    # Neighbours are correlated as exp(-distance / 25 um), far channels are not.
    distance = np.linalg.norm(probe.contact_positions[0] - probe.contact_positions[2])
    corr = np.corrcoef(whole[:, [0, 2, 300]].T)
    assert corr[0, 1] == pytest.approx(np.exp(-distance / 25), abs=0.05) and abs(corr[0, 2]) < 0.05
