"""Raw data that changed after the first run (a `.bin` grows, shrinks, is replaced, disappears; a `.meta` is
edited): `wisc-sort sort` stops before any compute, in one line naming the file and the change, writes
nothing, and names `--refresh-segments`; with it, the files as they are now are adopted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tasks.core.layout import SortingDir
from tasks.inputs.raw_check import record_path
from tasks.inputs.resolve import Target, resolve
from tasks.inputs.segments import read_segments
from tasks.settings import load_paths
from tasks.steps.setup import prepare_sorting
from tests.support.cli import run_cli
from tests.support.cli_world import N_CHANS, N_SAMP, SESSIONS, build_cli_world, snapshot, write_sglx

REPO = Path(__file__).resolve().parents[2]
DEMO_OPTS = REPO / "opts" / "sorting_demo.yaml"
WISC_ENV = ("WISC_PROJECTS_FILE", "WISC_SUBJECTS_DIR", "WISC_EXCLUSIONS_PROJECT", "WISC_CACHE_FILE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in WISC_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def made(tmp_path):
    """A world and its imec0 sorting as the first `wisc-sort sort` leaves it before computing (setup)."""
    world = build_cli_world(tmp_path / "world")
    paths = load_paths(projects_file=world.projects_file, subjects_dir=world.subjects_dir)
    target = Target("shared_ssd", world.experiment, "full", world.subject, "imec0")
    prepare_sorting(resolve(paths, target), DEMO_OPTS)
    return world, paths, target, SortingDir(world.sorting_dir())


def created(bin_file: Path) -> str:
    stem = bin_file.name.split(".")[0]
    return next(c for files in SESSIONS.values() for r, g, t, c in files if f"{r}_g{g}_t{t}" == stem)


def grow(bin_file: Path) -> str:  # a re-copy that is longer (.bin and .meta agree)
    write_sglx(bin_file, created=created(bin_file), n_samp=N_SAMP + 3000)
    return f"grew from {N_SAMP * 2 * N_CHANS:,} to {(N_SAMP + 3000) * 2 * N_CHANS:,} bytes"


def grow_bin_only(bin_file: Path) -> str:  # SpikeGLX still writing, or a botched append
    with open(bin_file, "ab") as f:
        f.write(b"\0" * 2 * N_CHANS * 10)
    return "grew from"


def shrink(bin_file: Path) -> str:
    write_sglx(bin_file, created=created(bin_file), n_samp=N_SAMP - 3000)
    return "shrank from"


def replace(bin_file: Path) -> str:  # another file of the same size in its place
    time.sleep(0.01)
    tmp = bin_file.with_name("other.tmp")
    tmp.write_bytes(b"\1" * bin_file.stat().st_size)
    os.replace(tmp, bin_file)
    return "replaced or rewritten (same size"


def remove(bin_file: Path) -> str:
    bin_file.unlink()
    bin_file.with_suffix(".meta").unlink()
    return "gone"


def edit_rate(bin_file: Path) -> str:
    meta = bin_file.with_suffix(".meta")
    text = meta.read_text()
    line = next(x for x in text.splitlines() if x.startswith("imSampRate="))
    meta.write_text(text.replace(line, "imSampRate=30000.5"))
    return f"edited (imSampRate {float(line.split('=')[1])} -> 30000.5)"


def edit_notes(bin_file: Path) -> str:  # a key the segment table does not carry (e.g. the channel map)
    meta = bin_file.with_suffix(".meta")
    meta.write_text(meta.read_text() + "userNotes=fixed by hand\n")
    return "edited (its text differs"


# Every change against the record; a few against a sorting made before it (the segment table's columns).
CASES = [(c, True) for c in (grow, grow_bin_only, shrink, replace, remove, edit_rate, edit_notes)] + [
    (c, False) for c in (grow, replace, remove, edit_rate)
]


@pytest.mark.parametrize(
    "change, record", CASES, ids=[f"{c.__name__}-{'recorded' if r else 'no_record'}" for c, r in CASES]
)
def test_changed_raw_file_stops_the_run_before_anything(made, capsys, change, record):
    world, _, _, sorting = made
    if not record:
        record_path(sorting).unlink()
    bin_file = world.bin("r1", 0, 1)
    what = change(bin_file)
    before = snapshot(world.root)
    code, out, err = run_cli(world.argv("sort", "--prepro-only"), capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    target = bin_file.with_suffix(".meta") if "edited" in what else bin_file
    assert f"{target}: {what}" in line, line
    assert f"raw data changed since {sorting.segments} was made" in line
    assert "--refresh-segments" in line and "Nothing was run or overwritten" in line
    assert snapshot(world.root) == before  # nothing written, the changed file untouched


def test_unchanged_raw_files_pass_and_an_old_sorting_gets_its_record(made):
    world, paths, target, sorting = made
    record_path(sorting).unlink()
    report = prepare_sorting(resolve(paths, target), None)
    assert not [m for m in report.messages if "changed" in m]
    assert record_path(sorting).exists()


def test_refresh_segments_adopts_the_files_as_they_are_now(made):
    world, paths, target, sorting = made
    old_table = sorting.segments.read_text()
    grow(world.bin("r1", 0, 1))
    report = prepare_sorting(resolve(paths, target), None, refresh_segments=True)
    assert any("grew from" in m and "every step reruns" in m for m in report.messages)
    rows = read_segments(sorting.segments)
    assert rows.loc[rows["fname"] == "r1_g0_t1.imec0.ap.bin", "nFileSamp"].iloc[0] == N_SAMP + 3000
    (backup,) = (sorting.root / "segments.bak").iterdir()
    assert (backup / "segments.htsv").read_text() == old_table  # the old copy is kept
    assert (backup / "raw_files.json").exists()
    assert prepare_sorting(resolve(paths, target), None).messages == []  # the new state is the record


def test_refresh_after_a_meta_edit_the_table_cannot_show_reruns_every_step(made):
    """Only the `.meta` text changed (not a column of segments.htsv): the signatures cannot tell, so the
    refresh moves every step's outputs aside itself."""
    world, paths, target, sorting = made
    peaks = sorting.preprocessing / "peaks.npy"
    peaks.parent.mkdir()
    peaks.write_bytes(b"made from the old .meta")
    sorting.pipeline.joinpath("peaks.json").write_text("{}")
    edit_notes(world.bin("r1", 0, 1))
    prepare_sorting(resolve(paths, target), None, refresh_segments=True)
    assert not peaks.exists() and not sorting.manifest("peaks").exists()
    (backup,) = (sorting.root / "preprocessing.bak").iterdir()
    assert (backup / "peaks.npy").read_bytes() == b"made from the old .meta"
