"""`wisc-sort scan-artifacts`: planted flat, saturated and transient bouts in generated SpikeGLX files are
found within 0.5 s of their edges, clean data gets no proposal, the user's exclusions file is never touched,
and `segments --with-proposed` shows the table the proposal would make."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.inputs.artifacts import ARTIFACT_DEFAULTS, RawFile, proposed_path, scan_file
from tests.support.cli import run_cli
from tests.support.sglx_fixtures import default_meta_text, write_file

RATE = 30000.0
N_AP = 16  # few channels: the scan reads every AP channel, and 16 test the same thing as 384
NOISE = 3.0  # counts: NP1.0's ~7 uV at 2.34 uV per count
TOLERANCE_S = 0.5
# (type, start s, end s) planted in the 24 s file
PLANTED = [("flat", 4.03, 6.61), ("saturated", 10.27, 12.02), ("transient", 16.31, 17.58)]
SUBJECT, EXPERIMENT, PROBE = "ART1-Mouse", "artifacts_exp", "imec0"


def _traces(seconds: float, seed: int, planted: list[tuple[str, float, float]]) -> np.ndarray:
    """AP noise with a few large single-channel spikes, the SY word counting, and the planted bouts."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    data = rng.normal(0, NOISE, size=(n, N_AP + 1)).astype(np.float32)
    data[:, :N_AP] += rng.normal(0, 0.5, size=(n, 1))  # some genuine common noise
    for t in rng.integers(0, n - 60, size=int(seconds * 40)):  # spikes: big on 2 channels, nothing shared
        c = rng.integers(0, N_AP - 1)
        data[t : t + 30, c : c + 2] -= 120 * np.hanning(30)[:, None]
    for kind, start_s, end_s in planted:
        a, b = int(start_s * RATE), int(end_s * RATE)
        if kind == "flat":  # a disconnected headstage: each channel stuck at a constant
            data[a:b, :N_AP] = rng.integers(-3, 3, size=N_AP)
        elif kind == "saturated":  # railing: most channels at one of the ADC's rails
            data[a:b, : N_AP - 2] = np.where(rng.random(N_AP - 2) < 0.5, 511, -512)
        else:  # a movement artifact: a large 15 Hz swing on every channel at once
            t = np.arange(b - a) / RATE
            envelope = np.clip(np.minimum(t, t[::-1]) / 0.01, 0, 1)  # 10 ms ramps
            data[a:b, :N_AP] += (25 * NOISE * np.sin(2 * np.pi * 15 * t + 0.5) * envelope)[:, None]
    data[:, N_AP] = np.arange(n) % 64  # the sync word: never flat, never AP
    return np.clip(np.round(data), -512, 511).astype(np.int16)


def _write(root: Path, trigger: int, traces: np.ndarray, run: str = "r") -> Path:
    n = traces.shape[0]
    meta = default_meta_text(n_chans=N_AP + 1, rate=RATE, n_samples=n)
    path = write_file(root, run, 0, trigger, PROBE, meta_text=meta)
    traces.tofile(path)
    return path


def _raw(path: Path, n: int) -> RawFile:
    return RawFile(path, n, N_AP + 1, N_AP, RATE, 512)


def test_planted_bouts_are_found_within_half_a_second_of_their_edges(tmp_path):
    traces = _traces(24.0, seed=0, planted=PLANTED)
    path = _write(tmp_path, 0, traces)
    bouts = scan_file(_raw(path, len(traces)), dict(ARTIFACT_DEFAULTS))
    found = [(b.kind, b.start / RATE, b.end / RATE) for b in bouts]
    assert [kind for kind, _, _ in found] == [kind for kind, _, _ in PLANTED], found
    for (kind, start, end), (_, true_start, true_end) in zip(found, PLANTED, strict=True):
        errors = (abs(start - true_start), abs(end - true_end))
        assert max(errors) <= TOLERANCE_S, (kind, start, end)


def test_clean_data_gets_no_proposal(tmp_path):
    for seed in (1, 2):
        traces = _traces(12.0, seed=seed, planted=[])
        assert scan_file(_raw(_write(tmp_path, seed, traces), len(traces)), dict(ARTIFACT_DEFAULTS)) == []


def test_a_bout_at_the_file_edges_runs_to_them(tmp_path):
    traces = _traces(6.0, seed=3, planted=[("flat", 0.0, 1.2), ("saturated", 4.9, 6.0)])
    bouts = scan_file(_raw(_write(tmp_path, 0, traces), len(traces)), dict(ARTIFACT_DEFAULTS))
    assert [(b.kind, b.start) for b in bouts][0] == ("flat", 0) and bouts[-1].end == len(traces)
    assert abs(bouts[0].end / RATE - 1.2) <= TOLERANCE_S and abs(bouts[-1].start / RATE - 4.9) <= TOLERANCE_S


# --- the command ----------------------------------------------------------------------------------------


def _world(tmp_path: Path) -> tuple[list[str], Path]:
    """projects (shared, ssd), a subject with one session of two files, the user's exclusions (one row)."""
    session = tmp_path / "raw" / "s1" / "SpikeGLX"
    _write(session, 0, _traces(24.0, seed=0, planted=PLANTED))
    _write(session, 1, _traces(8.0, seed=4, planted=[]))
    (tmp_path / "projects.yaml").write_text(
        f"project: shared\nproject_directory: {tmp_path / 'shared'}\n...\n"
        f"project: ssd\nproject_directory: {tmp_path / 'ssd'}\n...\n"
    )
    (tmp_path / "subjects").mkdir()
    (tmp_path / "subjects" / f"{SUBJECT}.yml").write_text(
        f"recording_sessions:\n  - id: s1\n    ap: {session}/\n    lf: {session}/\n    imSyncType: barcode\n"
        f"experiments:\n  {EXPERIMENT}:\n    recording_session_ids: [s1]\n    aliases:\n"
        "      full:\n        - start_file: r_g0_t0\n          end_file: r_g0_t1\n"
    )
    user = tmp_path / "shared" / EXPERIMENT / SUBJECT / f"{PROBE}.ap.artifacts.htsv"
    user.parent.mkdir(parents=True)
    user.write_text(
        "fname\twithinFileStartTime\twithinFileEndTime\ttype\nr_g0_t0.imec0.ap.bin\t4.5\t5.0\tmine\n"
    )
    argv = ["--project", "ssd", "--experiment", EXPERIMENT, "--input", f"{SUBJECT},{PROBE}"]
    argv += ["--projects-file", str(tmp_path / "projects.yaml"), "--subjects-dir", str(tmp_path / "subjects")]
    return argv, user


def _hash(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_scan_writes_the_proposal_beside_the_users_file_and_never_touches_it(tmp_path, capsys):
    argv, user = _world(tmp_path)
    before = _hash(user)
    code, out, err = run_cli(["scan-artifacts", *argv], capsys)
    assert code == 0, err
    assert _hash(user) == before
    proposed = proposed_path(user)
    assert proposed.name == "imec0.ap.artifacts.proposed.htsv" and proposed.parent == user.parent
    table = pd.read_csv(proposed, sep="\t")
    assert list(table.columns) == ["fname", "withinFileStartTime", "withinFileEndTime", "type"]
    assert list(table["type"]) == ["flat", "saturated", "transient"]
    assert set(table["fname"]) == {"r_g0_t0.imec0.ap.bin"}  # the clean file: nothing
    for row, (_, start, end) in zip(table.itertuples(), PLANTED, strict=True):
        assert abs(row.withinFileStartTime - start) <= TOLERANCE_S and abs(row.withinFileEndTime - end) <= 0.5
    assert "proposed 3 bouts (1 flat, 1 saturated, 1 transient)" in out and str(proposed) in out

    # The segment table with the proposal: the user's row wins where they overlap, the rest are added.
    code, out, err = run_cli(["segments", *argv, "--tsv", "--with-proposed"], capsys)
    assert code == 0, err
    merged = pd.read_csv(io.StringIO(out), sep="\t")
    assert list(merged["type"]) == ["keep", "flat", "mine", "flat", "keep", "saturated", "keep", "transient",
                                    "keep", "keep"]  # fmt: skip
    code, out, _ = run_cli(["segments", *argv, "--tsv"], capsys)
    assert list(pd.read_csv(io.StringIO(out), sep="\t")["type"]) == ["keep", "mine", "keep", "keep"]
    assert _hash(user) == before

    # Rescanning replaces only the proposal.
    assert run_cli(["scan-artifacts", *argv], capsys)[0] == 0 and _hash(user) == before


def test_with_proposed_before_any_scan_says_what_to_run(tmp_path, capsys):
    argv, _ = _world(tmp_path)
    code, out, err = run_cli(["segments", *argv, "--with-proposed"], capsys)
    assert code == 2 and "run `wisc-sort scan-artifacts`" in err and err.count("\n") == 1


def test_thresholds_come_from_the_options_and_typos_are_errors(tmp_path, capsys):
    argv, user = _world(tmp_path)
    opts = tmp_path / "opts.yaml"
    shipped = Path(__file__).resolve().parents[2] / "opts" / "sorting_demo.yaml"
    opts.write_text(shipped.read_text() + "artifacts:\n  flat_channel_fraction: 1.5\n")
    code, _, err = run_cli(["scan-artifacts", *argv, "--opts", str(opts)], capsys)
    assert code == 2 and "artifacts.flat_channel_fraction" in err and not proposed_path(user).exists()
    opts.write_text(shipped.read_text() + "artifacts:\n  flat_sdt: 1.0\n")
    code, _, err = run_cli(["scan-artifacts", *argv, "--opts", str(opts)], capsys)
    assert code == 2 and "did you mean flat_std" in err
    # A looser transient threshold than the signal's: only flat and saturated stay.
    opts.write_text(shipped.read_text() + "artifacts:\n  transient_threshold: 1000\n")
    code, out, err = run_cli(["scan-artifacts", *argv, "--opts", str(opts)], capsys)
    assert code == 0, err
    assert list(pd.read_csv(proposed_path(user), sep="\t")["type"]) == ["flat", "saturated"]


@pytest.mark.slow
def test_on_the_demo_it_finds_the_flat_bout(demo_world, tmp_path, capsys):
    shutil.copytree(demo_world.folder / "shared", tmp_path / "shared")  # the scan writes beside exclusions
    argv = demo_world.argv(tmp_path)
    argv[0] = "scan-artifacts"
    argv = [a for a in argv if a not in ("--local-scheduler",)]
    argv = argv[: argv.index("--n-jobs")] + argv[argv.index("--n-jobs") + 2 :]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    user = tmp_path / "shared" / "demo_experiment" / "DEMO1-Mouse" / "imec0.ap.artifacts.htsv"
    truth = pd.read_csv(user, sep="\t").iloc[0]
    table = pd.read_csv(proposed_path(user), sep="\t")
    assert list(table["type"]) == ["flat"], out
    row = table.iloc[0]
    assert row["fname"] == truth["fname"]
    assert abs(row["withinFileStartTime"] - truth["withinFileStartTime"]) <= TOLERANCE_S
    assert abs(row["withinFileEndTime"] - truth["withinFileEndTime"]) <= TOLERANCE_S
