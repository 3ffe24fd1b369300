"""Tests for containers.steps.recording_dat: recording.dat from SpikeGLX files, preflight, no partial
output."""

from __future__ import annotations

import copy
import resource
import signal
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from spikeinterface.core.motion import Motion

from containers.demo.sglx_writer import write_spikeglx_file
from containers.motion.stages import save_motion
from containers.recording.chain import load_kept_recording, preprocess_full
from containers.runtime.progress import ProgressFile
from containers.runtime.stepping import StepContext, StepSettings
from containers.steps.common import CLEAN_MOTION
from containers.steps.recording_dat import TARGET
from containers.steps.recording_dat import run as recording_dat
from tasks.core.diskspace import MARGIN_BYTES
from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.inputs.segments import build_segment_table, n_kept_samples, write_segments
from tasks.inputs.spikeglx import SessionFolders, scan_session
from tests.support.disks import mounted_tmpfs

OPTS = Path(__file__).parents[2] / "opts"
RATE = 30000.0
SECONDS = (0.7, 0.6)  # 384 channels: the chain costs ~2 s per second of data on this machine
EXCLUDED_S = (0.1, 0.2)  # within the second file: 1.2 s kept, the first 1 s chunk crosses the files
# Small, smooth displacement (um) over two depth windows: kriging moves every channel a little.
CLEAN = Motion(
    [np.array([[0.0, 2.0], [3.0, 5.0], [6.0, 4.0]])], [np.array([0.3, 0.9, 1.5])], np.array([800.0, 2800.0])
)
RAW = Motion([np.array([[40.0, -40.0]] * 3)], [np.array([0.3, 0.9, 1.5])], np.array([800.0, 2800.0]))


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    session = tmp_path_factory.mktemp("raw") / "S1"
    rng = np.random.default_rng(7)
    for trigger, seconds in enumerate(SECONDS):
        n = int(seconds * RATE)
        traces = rng.normal(0.0, 40.0, size=(n, 384)).astype(np.float32)
        traces += 300 * np.sin(np.arange(n) / RATE * 2 * np.pi * 5)[:, None]  # slow swing for the bandpass
        write_spikeglx_file(
            session / "run_g0" / "run_g0_imec0" / f"run_g0_t{trigger}.imec0.ap.bin",
            traces,
            create_time=datetime(2026, 1, 1, 0, 0, trigger * 2),
            sampling_rate=RATE,
        )
    files = scan_session("S", SessionFolders("S1", session, session), streams=("ap",))
    exclusions = pd.DataFrame(
        {
            "fname": [files["fname"].iloc[1]],
            "withinFileStartTime": [EXCLUDED_S[0]],
            "withinFileEndTime": [EXCLUDED_S[1]],
            "type": ["artifact"],
        }
    )
    return build_segment_table(files, exclusions)


ENGINES = ("torch", "spikeinterface")


def _opts(name: str, engine: str = "torch") -> dict:
    """A shipped options file (engine: torch) or the same chain computed by SpikeInterface itself."""
    opts = yaml.safe_load((OPTS / f"sorting_{name}.yaml").read_text())
    opts["engine"] = engine
    for step in opts["preprocessing"]:
        if step["step_name"] == "whiten":  # a fixed seed: the whitening matrix comes from random chunks
            # Few small chunks: the default 20 x 10000 samples would cost more than the write here.
            step["step_params"].update(seed=0, num_chunks_per_segment=3, chunk_size=6000)
    return opts


def _context(
    root: Path, segments: pd.DataFrame, opts: dict, n_jobs: int = 1, reserve_gb: float = 0.0
) -> StepContext:
    sorting = SortingDir(root / "sorting.imec0")
    sorting.pipeline.mkdir(parents=True)
    sorting.opts.write_text(yaml.safe_dump(opts, sort_keys=False))
    write_segments(segments, sorting.segments)
    sorting.preprocessing.mkdir()
    save_motion(CLEAN, sorting.preprocessing / CLEAN_MOTION)
    save_motion(RAW, sorting.preprocessing / "motion_non_rigid.npz")  # must NOT be used
    progress = ProgressFile(sorting.progress("recording_dat"), "write recording.dat")
    settings = StepSettings(n_jobs=n_jobs, disk_reserve_bytes=int(reserve_gb * 2**30))
    return StepContext(sorting, copy.deepcopy(opts), settings, progress)


def _expected_chunks(
    segments: pd.DataFrame, opts: dict, chunk: int
) -> tuple[int, list[tuple[int, np.ndarray]]]:
    """SpikeInterface's own chain on the same files in 1 s chunks, rounded and clipped to int16."""
    drift = next(s for s in opts["preprocessing"] if s["step_name"] == "drift_correction")
    rec = preprocess_full(
        load_kept_recording(segments),
        opts["preprocessing"],
        CLEAN,
        drift["step_params"]["interpolate_motion_kwargs"],
    )
    n = rec.get_num_samples()
    chunks = []
    for start in (0, n - n % chunk):  # the first (across the two files) and the last, as the writer cuts
        traces = rec.get_traces(start_frame=start, end_frame=min(start + chunk, n))
        chunks.append((start, np.clip(np.rint(traces), -32768, 32767).astype(np.int16)))
    return rec.get_num_channels(), chunks


def _check_written(ctx: StepContext, segments: pd.DataFrame, opts: dict) -> np.ndarray:
    n_channels, chunks = _expected_chunks(segments, opts, int(RATE))
    path = ctx.sorting.path(TARGET)
    n_kept = n_kept_samples(segments)
    assert n_kept == round((sum(SECONDS) - EXCLUDED_S[1] + EXCLUDED_S[0]) * RATE)
    assert path.stat().st_size == n_kept * n_channels * 2
    data = np.memmap(path, dtype=np.int16, mode="r").reshape(n_kept, n_channels)
    for start, expected in chunks:
        written = data[start : start + expected.shape[0]]
        if opts["engine"] == "spikeinterface":  # the reference path: SpikeInterface's values exactly
            np.testing.assert_array_equal(written, expected)
        else:  # the engine: within +-1 of SpikeInterface's int16 for >= 99.9% of samples (issue 13)
            off = np.abs(written.astype(np.int32) - expected)
            assert off.max() <= 3 and np.mean(off <= 1) >= 0.999, (off.max(), np.mean(off <= 1))
    assert ctx.extra["engine"]["used"] == opts["engine"]
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    assert ctx.extra["num_channels"] == n_channels and ctx.extra["num_samples"] == n_kept
    assert ctx.extra["dtype"] == "int16" and ctx.extra["sampling_frequency"] == pytest.approx(RATE)
    assert ctx.extra["motion_used"] == f"preprocessing/{CLEAN_MOTION}"
    return data


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_demo_chain_in_uv(tmp_path: Path, segments: pd.DataFrame, engine: str) -> None:
    opts = _opts("demo", engine)
    ctx = _context(tmp_path, segments, opts)
    recording_dat(ctx)
    data = _check_written(ctx, segments, opts)
    # The chain runs in uV (1 uV per unit): the 40 uV noise survives the filters at tens of units.
    assert ctx.extra["gain_to_uV"] == 1.0
    assert 10 < data[: int(RATE)].std() < 100
    assert ctx.extra["clipped_fraction_estimate"] == 0.0
    assert ctx.extra["clipped_estimate_seconds"] == pytest.approx(n_kept_samples(segments) / RATE)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_lab_chain_whitened_and_scaled(tmp_path: Path, segments: pd.DataFrame, engine: str) -> None:
    opts = _opts("chronic_df", engine)
    ctx = _context(tmp_path, segments, opts)
    recording_dat(ctx)
    data = _check_written(ctx, segments, opts)
    assert ctx.extra["gain_to_uV"] is None  # whitened: no longer uV
    assert 100 < data[: int(RATE)].std() < 400  # ~unit variance x gain 200


def _nothing_written(ctx: StepContext) -> bool:
    folder = ctx.sorting.path(TARGET).parent
    return not folder.exists() or not any(folder.iterdir())


def test_reserve_larger_than_free_space_refuses(
    tmp_path: Path, segments: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context(tmp_path, segments, _opts("demo"), reserve_gb=10**9)  # a billion GiB: more than any disk
    with pytest.raises(
        UserError, match=r"sorter_output: needs .* for recording.dat, .* free \(reserve 954 PiB\)"
    ):
        recording_dat(ctx)
    assert _nothing_written(ctx)


def test_small_drive_refuses(tmp_path: Path, segments: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(tmp_path, segments, _opts("demo"))
    with mounted_tmpfs(ctx.sorting.root / "si_output", 5):
        with pytest.raises(UserError, match=r"needs 9\d\.?\d* MiB for recording.dat, 5 MiB free: free space"):
            recording_dat(ctx)
        assert _nothing_written(ctx)
    assert MARGIN_BYTES + n_kept_samples(segments) * 384 * 2 > 90 * 2**20  # the 9x MiB above


def test_failed_write_leaves_no_temporary_file(
    tmp_path: Path, segments: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real write error: the process may not write files past 1 MiB (EFBIG, as a full disk gives ENOSPC).
    ctx = _context(tmp_path, segments, _opts("demo"))
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error instead of a killed process
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, limits[1]))
        with pytest.raises(OSError, match="File too large"):
            recording_dat(ctx)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert _nothing_written(ctx)


@pytest.mark.slow
def test_parallel_write_matches(tmp_path: Path, segments: pd.DataFrame) -> None:
    opts = _opts("demo", "spikeinterface")  # SpikeInterface's processes; the engine's threads: above
    ctx = _context(tmp_path, segments, opts, n_jobs=2)
    recording_dat(ctx)
    _check_written(ctx, segments, opts)


def test_a_step_the_engine_lacks_falls_back_with_one_line_and_a_manifest_entry(
    tmp_path: Path, segments: pd.DataFrame, capsys: pytest.CaptureFixture
) -> None:
    """An exotic SpikeInterface step in the chain: the whole chain runs in SpikeInterface, said once."""
    opts = _opts("demo")
    opts["preprocessing"].insert(0, {"step_name": "center", "step_params": {"mode": "median"}})
    ctx = _context(tmp_path, segments, opts)
    with pytest.warns(
        UserWarning, match=r"torch engine does not support center.*SpikeInterface runs the chain"
    ):
        recording_dat(ctx)
    assert ctx.extra["engine"]["used"] == "spikeinterface" and ctx.extra["engine"]["requested"] == "torch"
    assert "center" in ctx.extra["engine"]["reason"]
    assert ctx.engine == "spikeinterface"
