"""Tests for containers.demo.sglx_writer: our NP1.0 files as probeinterface, SpikeInterface and numpy
read them."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import numpy as np
import probeinterface
import pytest
import spikeinterface.extractors as se
from probeinterface.neuropixels_tools import build_neuropixels_probe
from spikeinterface.core import NumpyRecording

from containers.demo.sglx_writer import (
    MAX_INT,
    UV_PER_BIT,
    np1_meta,
    np1_probe,
    write_meta,
    write_spikeglx_file,
)

RATE = 30000.123
CREATED = datetime(2026, 1, 10, 9, 30, 5)
GENUINE = Path("/work/shared/data/spikeglx-meta")


def _gate_file(root: Path, trigger: int = 0) -> Path:
    return root / "run_g0" / "run_g0_imec0" / f"run_g0_t{trigger}.imec0.ap.bin"


def _traces(n: int, seed: int = 0) -> np.ndarray:
    # Spans most of the +-1.2 mV range without saturating.
    return np.random.default_rng(seed).uniform(-1100, 1100, size=(n, 384)).astype(np.float32)


def test_uv_per_bit_is_np1_gain() -> None:
    assert UV_PER_BIT == pytest.approx(0.6 / 512 / 500 * 1e6) == 2.34375


def test_meta_has_the_np1_fields(tmp_path: Path) -> None:
    bin_path = _gate_file(tmp_path)
    meta = np1_meta(3000, RATE, bin_path, CREATED, 1234)
    assert meta["nSavedChans"] == "385"
    assert meta["snsApLfSy"] == "384,0,1"
    assert float(meta["imSampRate"]) == RATE
    assert meta["fileSizeBytes"] == str(3000 * 385 * 2)
    assert float(meta["fileTimeSecs"]) == pytest.approx(3000 / RATE)
    assert meta["firstSample"] == "1234"
    assert meta["fileCreateTime"] == "2026-01-10T09:30:05"
    assert meta["fileName"] == bin_path.absolute().as_posix()
    assert (meta["typeThis"], meta["imDatPrb_type"], meta["imMaxInt"]) == ("imec", "0", "512")
    assert (meta["imAiRangeMax"], meta["imAiRangeMin"]) == ("0.6", "-0.6")
    imro = meta["imroTbl"][1:-1].split(")(")
    assert imro[0] == "0,384" and len(imro) == 385
    assert all(entry.split() == [str(c), "0", "0", "500", "250", "1"] for c, entry in enumerate(imro[1:]))
    chans = meta["snsChanMap"][1:-1].split(")(")
    assert chans[:2] == ["384,384,1", "AP0;0:0"] and chans[-1] == "SY0;768:768" and len(chans) == 386
    geom = meta["snsGeomMap"][1:-1].split(")(")
    assert len(geom) == 385 and geom[1:5] == ["0:27:0:1", "0:59:0:1", "0:11:20:1", "0:43:20:1"]
    assert "snsShankMap" not in meta
    old = np1_meta(3000, RATE, bin_path, CREATED, 0, geom_map=False, extra={"trigMode": "Timed"})
    assert "snsGeomMap" not in old and old["snsShankMap"].startswith("(1,2,480)(0:0:0:1)(0:1:0:1)(0:0:1:1)")
    assert old["trigMode"] == "Timed"


@pytest.mark.skipif(not GENUINE.is_dir(), reason="genuine .meta files not available")
@pytest.mark.parametrize(
    "genuine, geom_map",
    [
        ("NP2_2013_all_channels.imec0.ap.meta", True),
        ("non_human_primate_short_linear_probe_type_0.meta", False),
    ],
)
def test_meta_has_the_keys_of_genuine_files_of_its_era(tmp_path: Path, genuine: str, geom_map: bool) -> None:
    # 2023-08 SpikeGLX writes snsGeomMap, 2023-01 writes snsShankMap: ours must carry every key of each.
    lines = (GENUINE / genuine).read_text().splitlines()
    genuine_keys = {line.split("=", 1)[0] for line in lines if "=" in line}
    path = tmp_path / "x.imec0.ap.meta"
    write_meta(path, np1_meta(10, RATE, tmp_path / "x.imec0.ap.bin", CREATED, 0, geom_map=geom_map))
    ours = {line.split("=", 1)[0] for line in path.read_text().splitlines()}
    assert genuine_keys <= ours


def test_write_meta_sorts_and_marks_tilde_keys(tmp_path: Path) -> None:
    path = tmp_path / "x.imec0.ap.meta"
    write_meta(path, {"snsChanMap": "(1)", "b": "2", "~imroTbl": "(0,1)", "a": "x=y"}, crlf=True)
    raw = path.read_bytes()
    assert raw == b"a=x=y\r\nb=2\r\n~imroTbl=(0,1)\r\n~snsChanMap=(1)\r\n"
    parsed = probeinterface.neuropixels_tools.parse_spikeglx_meta(path)
    assert parsed == {"a": "x=y", "b": "2", "imroTbl": "(0,1)", "snsChanMap": "(1)"}


@pytest.mark.parametrize("geom_map", [True, False])
def test_probeinterface_builds_np1_geometry(tmp_path: Path, geom_map: bool) -> None:
    meta_path = tmp_path / "run_g0_t0.imec0.ap.meta"
    write_meta(meta_path, np1_meta(0, RATE, meta_path.with_suffix(".bin"), CREATED, 0, geom_map=geom_map))
    probe = probeinterface.read_spikeglx(meta_path)
    assert probe.get_contact_count() == 384
    reference = build_neuropixels_probe("NP1000").contact_positions[:384]  # bank 0 = the first 384 electrodes
    np.testing.assert_array_equal(probe.contact_positions, reference)
    assert set(probe.contact_positions[:, 0]) == {0.0, 16.0, 32.0, 48.0}  # staggered columns
    assert probe.contact_positions[:, 1].max() == 3820.0
    np.testing.assert_array_equal(np1_probe().contact_positions, reference)


def _read_counts(bin_path: Path) -> np.ndarray:
    return np.memmap(bin_path, dtype="<i2", mode="r").reshape(-1, 385)


@pytest.mark.parametrize("as_recording", [False, True])
def test_written_file_round_trips_in_uv(tmp_path: Path, as_recording: bool) -> None:
    n = 3500  # not a multiple of the chunk size
    traces = _traces(n)
    bin_path = _gate_file(tmp_path)
    source = NumpyRecording(traces, sampling_frequency=RATE) if as_recording else traces
    meta = write_spikeglx_file(
        bin_path, source, create_time=CREATED, sampling_rate=None if as_recording else RATE, chunk_frames=1000
    )
    counts = _read_counts(bin_path)
    assert counts.shape == (n, 385)
    assert not counts[:, 384].any()  # the SY channel
    assert np.abs(counts[:, :384] * UV_PER_BIT - traces).max() <= UV_PER_BIT / 2 + 1e-3
    assert int(meta["fileSizeBytes"]) == bin_path.stat().st_size
    assert meta["fileSHA1"] == hashlib.sha1(bin_path.read_bytes()).hexdigest().upper()
    assert bin_path.with_suffix(".meta").is_file()

    recording = se.read_spikeglx(tmp_path, stream_id="imec0.ap")
    assert recording.get_num_channels() == 384
    assert recording.get_sampling_frequency() == RATE
    assert recording.get_num_samples() == n
    uv = recording.get_traces(return_in_uV=True)
    assert np.abs(uv - traces).max() <= UV_PER_BIT / 2 + 1e-3
    np.testing.assert_array_equal(recording.get_channel_locations(), np1_probe().contact_positions)


def test_neo_reads_triggers_as_segments(tmp_path: Path) -> None:
    for trigger, n in ((0, 1000), (1, 1500)):
        write_spikeglx_file(
            _gate_file(tmp_path, trigger), _traces(n, trigger), create_time=CREATED, sampling_rate=RATE
        )
    recording = se.read_spikeglx(tmp_path, stream_id="imec0.ap")
    assert recording.get_num_segments() == 2
    assert [recording.get_num_samples(s) for s in range(2)] == [1000, 1500]


def test_out_of_range_saturates_like_the_adc(tmp_path: Path) -> None:
    traces = np.zeros((10, 384), dtype=np.float32)
    traces[0, 0], traces[1, 1] = 5000.0, -5000.0
    bin_path = _gate_file(tmp_path)
    write_spikeglx_file(bin_path, traces, create_time=CREATED, sampling_rate=RATE)
    counts = _read_counts(bin_path)
    assert (counts[0, 0], counts[1, 1]) == (MAX_INT - 1, -MAX_INT)


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="384"):
        write_spikeglx_file(_gate_file(tmp_path), np.zeros((10, 10)), create_time=CREATED, sampling_rate=RATE)
    with pytest.raises(ValueError, match="sampling_rate"):
        write_spikeglx_file(_gate_file(tmp_path), np.zeros((10, 384)), create_time=CREATED)
    with pytest.raises(ValueError, match=".ap.bin"):
        write_spikeglx_file(
            tmp_path / "x.lf.bin", np.zeros((10, 384)), create_time=CREATED, sampling_rate=1.0
        )
    assert not any(tmp_path.iterdir())
