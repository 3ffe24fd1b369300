"""End-to-end tests of `wisc-sort segments` and `refresh-cache` on good inputs (bad: test_cli_bad_inputs)."""

from __future__ import annotations

import io
import os

import pandas as pd
import pytest

from tests.support.cli import Result, assert_one_error, run_inprocess, run_subprocess, warning_lines
from tests.support.cli_world import snapshot

pytestmark = pytest.mark.usefixtures("clean_env")
# The SPEC's segment columns, written out here so that the test does not trust the code's own list.
SPEC_SEGMENT_COLUMNS = ["fname", "type", "withinFileStartFrame", "withinFileEndFrame", "nSegmentSamp",
                        "segmentDuration", "fileDuration"]  # fmt: skip
FULL_IMEC0 = ["r1_g0_t0", "r1_g0_t1", "r1_g0_t2", "r1_g0_t10", "r2_g0_t0", "r2_g1_t0"]


# --- the good path ------------------------------------------------------------------------------------------


def test_segments_prints_summary_first_file_and_table(world, capsys):
    result = run_inprocess(capsys, world.argv())
    assert (result.rc, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[0] == f"== {world.subject} imec0: {world.sorting_dir()}"
    # 6 files x 60000 samples, minus 0.5 s artifact and 0.25 s flat at 30 kHz.
    kept = 6 * 60000 - 15000 - 7500
    assert f"  6 files - 385 channels - 30000.000000 Hz - {kept:,} samples" in lines
    assert f"  {kept / 30000:.2f} s (0.00 hours) - int16 - 247.84 MiB ({kept * 385 * 2:,} bytes)" in lines
    assert "Excluded: artifact 0.50 s, flat 0.25 s" in lines
    first = lines.index("First file full path:")
    assert lines[first + 1] == f"  {world.bin('r1', 0, 0)}"
    table = lines[lines.index("AP segment table:") + 1 :]
    assert table[0].split() == SPEC_SEGMENT_COLUMNS
    rows = [line.split() for line in table[1:]]
    assert [(r[1], r[2]) for r in rows] == [
        ("r1_g0_t0.imec0.ap.bin", "keep"),
        ("r1_g0_t1.imec0.ap.bin", "keep"),
        ("r1_g0_t1.imec0.ap.bin", "artifact"),
        ("r1_g0_t1.imec0.ap.bin", "keep"),
        ("r1_g0_t2.imec0.ap.bin", "keep"),
        ("r1_g0_t10.imec0.ap.bin", "keep"),  # t10 after t2: triggers sort as numbers
        ("r2_g0_t0.imec0.ap.bin", "flat"),
        ("r2_g0_t0.imec0.ap.bin", "keep"),
        ("r2_g1_t0.imec0.ap.bin", "keep"),
    ]
    assert [int(r[3]) for r in rows[1:4]] == [0, 15000, 30000]


def test_segments_tsv_is_only_the_table(world, capsys):
    result = run_inprocess(capsys, world.argv("segments", "--tsv"))
    assert (result.rc, result.err) == (0, "")
    assert result.out.startswith("fname\ttype\t")
    table = pd.read_csv(io.StringIO(result.out), sep="\t")
    assert list(table.columns[:7]) == SPEC_SEGMENT_COLUMNS
    for column in ("subject", "session", "run", "gate", "trigger", "probe", "path", "nSavedChans",
                   "imSampRate", "nFileSamp", "fileCreateTime", "keepStartFrame"):  # fmt: skip
        assert column in table.columns
    stems = table["fname"].str.removesuffix(".imec0.ap.bin").drop_duplicates().tolist()
    assert stems == FULL_IMEC0
    # Segments tile every file exactly; keep rows are numbered consecutively.
    for _, rows in table.groupby("fname", sort=False):
        assert rows["withinFileStartFrame"].iloc[0] == 0
        assert (
            rows["withinFileStartFrame"].iloc[1:].to_numpy() == rows["withinFileEndFrame"].iloc[:-1]
        ).all()
        assert rows["withinFileEndFrame"].iloc[-1] == 60000
    keep = table[table["type"] == "keep"]
    assert keep["keepStartFrame"].tolist() == (keep["nSegmentSamp"].cumsum() - keep["nSegmentSamp"]).tolist()
    assert (table.loc[table["type"] != "keep", "keepStartFrame"] == -1).all()
    assert table.loc[table["type"] == "flat", "nSegmentSamp"].tolist() == [7500]


def test_time_window_alias_selects_overlapping_files(world, capsys):
    result = run_inprocess(capsys, world.argv("segments", "--tsv", alias="morning", probe="imec1"))
    assert result.rc == 0
    table = pd.read_csv(io.StringIO(result.out), sep="\t")
    assert table["fname"].tolist() == ["r1_g0_t1.imec1.ap.bin", "r1_g0_t2.imec1.ap.bin"]
    assert set(table["type"]) == {"keep"}  # imec1's exclusions file is empty


def test_lab_flag_spellings_give_the_same_output(world, capsys):
    expected = run_inprocess(capsys, world.argv()).out
    lab = ["segments", "--projectName", "shared_ssd", "--experimentName", world.experiment,
           "--aliasName", "full", "--input", f"{world.subject},imec0", *world.path_args()]  # fmt: skip
    result = run_inprocess(capsys, lab)
    assert (result.rc, result.out) == (0, expected)


def test_env_vars_configure_and_flags_override_them(world, capsys, monkeypatch, tmp_path):
    expected = run_inprocess(capsys, world.argv()).out
    target = ["segments", *world.target_args()]
    monkeypatch.setenv("WISC_PROJECTS_FILE", str(world.projects_file))
    monkeypatch.setenv("WISC_SUBJECTS_DIR", str(world.subjects_dir))
    assert run_inprocess(capsys, target).out == expected
    bogus = tmp_path / "elsewhere" / "projects.yaml"
    monkeypatch.setenv("WISC_PROJECTS_FILE", str(bogus))
    assert_one_error(run_inprocess(capsys, target), [f"projects file {bogus} not found"])
    overridden = run_inprocess(capsys, [*target, "--projects-file", str(world.projects_file)])
    assert (overridden.rc, overridden.out) == (0, expected)


def test_luigi_cfg_wisc_section_configures_a_subprocess(world, capsys, tmp_path):
    expected = run_inprocess(capsys, world.argv()).out
    cfg = tmp_path / "cfg" / "luigi.cfg"
    cfg.parent.mkdir()
    cfg.write_text(f"[wisc]\nprojects_file = {world.projects_file}\nsubjects_dir = {world.subjects_dir}\n")
    cwd = tmp_path / "cwd"  # no luigi.cfg here, unlike the repo root
    cwd.mkdir()
    result = run_subprocess(["segments", *world.target_args()], cwd, {"LUIGI_CONFIG_PATH": str(cfg)})
    assert (result.rc, result.err) == (0, "")
    assert result.out == expected
    # An env var beats luigi.cfg.
    bogus = tmp_path / "nowhere.yaml"
    env = {"LUIGI_CONFIG_PATH": str(cfg), "WISC_PROJECTS_FILE": str(bogus)}
    assert_one_error(run_subprocess(["segments", *world.target_args()], cwd, env), [str(bogus)])


def test_refresh_cache_then_segments_read_the_cache(world, capsys, tmp_path):
    baseline = run_inprocess(capsys, world.argv()).out
    result = run_inprocess(capsys, ["refresh-cache", *world.path_args()])
    assert result.rc == 0
    assert result.out.splitlines()[0] == "12 rows added, 0 removed, 0 changed"  # 6 triggers x 2 probes
    assert f"cache written: {world.cache_file}" in result.out
    assert world.cache_file.is_file()
    assert run_inprocess(capsys, world.argv()) == Result(0, baseline, "")

    touched = world.bin("r1", 0, 2, "imec1")
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    stale = run_inprocess(capsys, world.argv())
    assert (stale.rc, stale.out) == (0, baseline)
    [warning] = warning_lines(stale.err)
    assert "changed on disk since the cache was made" in warning and str(touched) in warning
    result = run_inprocess(capsys, ["refresh-cache", *world.path_args()])
    assert result.out.splitlines()[0] == "0 rows added, 0 removed, 1 changed"
    assert f"~ {world.subject} 7-10-2021 {touched}: binMtime" in result.out

    gone = world.bin("r2", 1, 0, "imec1")
    gone.unlink()
    gone.with_suffix(".meta").unlink()
    result = run_inprocess(capsys, ["refresh-cache", *world.path_args()])
    assert result.out.splitlines()[0] == "0 rows added, 1 removed, 0 changed"
    assert f"- {world.subject} 7-11-2021 {gone}" in result.out

    # A .bin whose size disagrees with its .meta: scanning refuses it, the cached table does not look.
    os.truncate(touched, 1000)
    before = snapshot(tmp_path)
    cached = run_inprocess(capsys, world.argv())
    assert (cached.rc, cached.out) == (0, baseline)
    assert str(touched) in warning_lines(cached.err)[0]
    scanned = run_inprocess(capsys, world.argv("segments", "--cache-file", str(tmp_path / "none.parquet")))
    assert_one_error(scanned, [str(touched), "fileSizeBytes=46200000"])
    assert snapshot(tmp_path) == before


def test_exclusions_with_a_bom_and_crlf_read_the_same(world, capsys):
    expected = run_inprocess(capsys, world.argv()).out
    path = world.exclusions_file()
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))  # as Excel saves it
    assert run_inprocess(capsys, world.argv()) == Result(0, expected, "")


def test_dropped_meta_outside_the_alias_ends_is_a_warning_only(world, capsys):
    world.bin("r1", 0, 2).with_suffix(".meta").write_text("")
    result = run_inprocess(capsys, world.argv("segments", "--tsv"))
    assert result.rc == 0
    [warning] = warning_lines(result.err)
    assert "empty or unreadable .meta" in warning and str(world.bin("r1", 0, 2)) in warning
    assert "r1_g0_t2.imec0.ap.bin" not in result.out
    assert pd.read_csv(io.StringIO(result.out), sep="\t")["fname"].nunique() == 5
