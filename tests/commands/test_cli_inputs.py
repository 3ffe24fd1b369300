"""End-to-end tests of `wisc-sort segments`, `refresh-cache`, every bad input: one error line, no writes."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.commands.cli import main
from tests.support.cli import WISC_SORT
from tests.support.cli_world import CliWorld, build_cli_world, snapshot, write_sglx

REPO = Path(__file__).resolve().parents[2]
CHRONIC = REPO / "opts" / "sorting_chronic_df.yaml"
# The SPEC's segment columns, written out here so that the test does not trust the code's own list.
SPEC_SEGMENT_COLUMNS = ["fname", "type", "withinFileStartFrame", "withinFileEndFrame", "nSegmentSamp",
                        "segmentDuration", "fileDuration"]  # fmt: skip
FULL_IMEC0 = ["r1_g0_t0", "r1_g0_t1", "r1_g0_t2", "r1_g0_t10", "r2_g0_t0", "r2_g1_t0"]
WISC_ENV = ("WISC_PROJECTS_FILE", "WISC_SUBJECTS_DIR", "WISC_EXCLUSIONS_PROJECT", "WISC_CACHE_FILE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """main() exports WISC_* for Luigi workers: undo that after each test, and start without any."""
    for name in (*WISC_ENV, "LUIGI_CONFIG_PATH"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def world(tmp_path) -> CliWorld:
    return build_cli_world(tmp_path / "world")


@dataclass
class Result:
    rc: int
    out: str
    err: str


def run_inprocess(capsys, argv: list[str]) -> Result:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    return Result(rc, captured.out, captured.err)


def run_subprocess(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Result:
    clean = {k: v for k, v in os.environ.items() if k not in (*WISC_ENV, "LUIGI_CONFIG_PATH")}
    proc = subprocess.run(
        [str(WISC_SORT), *argv], cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("wisc-sort: warning:")]


def assert_one_error(result: Result, expect: list[str]) -> str:
    """Non-zero exit, no traceback, nothing on stdout, one `wisc-sort: error:` line holding `expect`."""
    assert result.rc != 0, result
    assert "Traceback" not in result.out + result.err
    assert result.out == ""
    others = [line for line in result.err.splitlines() if not line.startswith("wisc-sort: warning:")]
    assert len(others) == 1, result.err
    assert others[0].startswith("wisc-sort: error: "), result.err
    for text in expect:
        assert text in others[0], (text, others[0])
    return others[0]


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


# --- bad inputs ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    """`setup` breaks the world and returns the argv; `expect` gives substrings of the error line."""

    setup: Callable[[CliWorld], list[str]]
    expect: Callable[[CliWorld], list[str]]
    warns: Callable[[CliWorld], list[str]] = field(default=lambda w: [])


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _then(action: Callable[[CliWorld], object], *extra: str, **target: str) -> Callable[[CliWorld], list]:
    def setup(w: CliWorld) -> list[str]:
        action(w)
        return w.argv("segments", *extra, **target)

    return setup


def _with_alias(yaml_text: str, alias: str) -> Callable[[CliWorld], list[str]]:
    return _then(lambda w: w.write_subject(yaml_text), alias=alias)


def _exclusion(row: tuple[str, ...]) -> Callable[[CliWorld], list[str]]:
    return _then(lambda w: w.write_exclusions([("r1_g0_t0.imec0.ap.bin", "0", "1", "artifact"), row]))


def _latin1(path: Path, line_start: str) -> None:
    """Add an accented comment (in latin-1, as a Windows editor may save it) to the line starting so."""
    raw = path.read_bytes()
    index = raw.index(line_start.encode()) + len(line_start)
    comment = b"  # r\xe9f" if path.suffix != ".htsv" else b"\xe9"
    path.write_bytes(raw[:index] + comment + raw[index:])


def _rewrite(w: CliWorld, **fields: object) -> None:
    """Rewrite r2_g0_t0.imec0 (the 5th file of `full`) with other .meta values, consistent with its .bin."""
    write_sglx(w.bin("r2", 0, 0), created="2021-07-11T10:00:00", **fields)


def _unreadable(meta: Path) -> None:
    meta.chmod(0)
    if os.access(meta, os.R_OK):  # root reads anything: make it a folder, which no one can read as a file
        meta.unlink()
        meta.mkdir()


def _start_meta(w: CliWorld) -> Path:
    return w.bin("r1", 0, 0).with_suffix(".meta")


def _start_dropped(w: CliWorld) -> list[str]:
    return [f"{w.subject_file}: experiments.{w.experiment}.aliases.full[0] key start_file", "`r1_g0_t0`"]


CASES: dict[str, Case] = {
    "projects_yaml_malformed": Case(
        _then(lambda w: _edit(w.projects_file, "project_directory: ssd", "project_directory: [ssd")),
        lambda w: [f"{w.projects_file}: malformed YAML at line 6"],
    ),
    "subject_yaml_malformed": Case(
        _then(lambda w: _edit(w.subject_file, "imSyncType: barcode", "imSyncType: barcode: no")),
        lambda w: [f"{w.subject_file}: malformed YAML at line 6"],
    ),
    "unknown_project": Case(
        lambda w: w.argv(project="shared_sdd"), lambda w: ["unknown project `shared_sdd`", "shared_ssd"]
    ),
    "unknown_subject": Case(
        lambda w: ["segments", *w.target_args()[:-1], "nobody,imec0", *w.path_args()],
        lambda w: [f"no subject file {w.subjects_dir / 'nobody.yml'}"],
    ),
    "malformed_input": Case(
        lambda w: ["segments", *w.target_args()[:-1], "nobody-imec0", *w.path_args()],
        lambda w: ["--input 'nobody-imec0'", "SUBJECT,PROBE"],
    ),
    "unknown_probe": Case(lambda w: w.argv(probe="imec7"), lambda w: ["probe 'imec7'", "imec0, imec1"]),
    "unknown_experiment": Case(
        lambda w: [arg if arg != w.experiment else "novel_object" for arg in w.argv()],
        lambda w: [f"{w.subject_file}: subject `{w.subject}` has no experiment `novel_object`"],
    ),
    "unknown_alias": Case(
        lambda w: w.argv(alias="fulll"), lambda w: ["no alias `fulll`", "Did you mean full"]
    ),
    "start_file_after_end_file": Case(
        _with_alias(
            "      backwards:\n        - start_file: r2_g0_t0\n          end_file: r1_g0_t1\n", "backwards"
        ),
        lambda w: ["aliases.backwards[0]", "start_file `r2_g0_t0` comes after end_file `r1_g0_t1`"],
    ),
    "alias_matches_no_file": Case(
        _with_alias(
            "      gap:\n        - start_time: 2021-07-10 12:00:00\n          end_time: 2021-07-10 13:00\n",
            "gap",
        ),
        lambda w: ["aliases.gap[0]: matches no file"],
    ),
    "start_file_unknown": Case(
        _with_alias("      typo:\n        - start_file: r1_g0_t3\n          end_file: r1_g0_t10\n", "typo"),
        lambda w: ["aliases.typo[0] key start_file", "no file `r1_g0_t3`"],
    ),
    "missing_session_folder": Case(
        _then(lambda w: w.session_dirs["7-11-2021"].rename(w.session_dirs["7-11-2021"].with_name("moved"))),
        lambda w: ["session 7-11-2021", f"folder {w.session_dirs['7-11-2021']} does not exist"],
    ),
    "empty_meta_empties_alias_start": Case(
        _then(lambda w: _start_meta(w).write_text("")),
        _start_dropped,
        lambda w: ["empty or unreadable .meta", str(w.bin("r1", 0, 0))],
    ),
    "unreadable_meta": Case(
        _then(lambda w: _unreadable(_start_meta(w))),
        _start_dropped,
        lambda w: ["cannot read the .meta", str(w.bin("r1", 0, 0))],
    ),
    "truncated_bin": Case(
        _then(lambda w: os.truncate(w.bin("r1", 0, 1), 46200000 - 770)),
        lambda w: [f"{w.bin('r1', 0, 1)}: the .bin is 46199230 bytes", "fileSizeBytes=46200000"],
    ),
    "different_channel_counts": Case(
        _then(lambda w: _rewrite(w, nSavedChans=384, snsApLfSy="383,0,1")),
        lambda w: [f"{w.bin('r2', 0, 0)} has 384 saved channels", "385"],
    ),
    "different_sampling_rates": Case(
        _then(lambda w: _rewrite(w, imSampRate=25000.0)),
        lambda w: [f"{w.bin('r2', 0, 0)} samples at 25000.0 Hz"],
    ),
    "missing_exclusions_file": Case(
        _then(lambda w: w.exclusions_file().unlink()),
        lambda w: [f"exclusions file {w.exclusions_file()} not found", "mkdir -p", "printf"],
    ),
    "exclusion_of_no_session": Case(
        _exclusion(("r3_g0_t0.imec0.ap.bin", "0", "1", "artifact")),
        lambda w: [f"{w.exclusions_file()}: data row 2 (line 3)", "`r3_g0_t0.imec0.ap.bin`"],
    ),
    "exclusion_end_not_after_start": Case(
        _exclusion(("r1_g0_t1.imec0.ap.bin", "1.5", "1.5", "artifact")),
        lambda w: [f"{w.exclusions_file()}: data row 2 (line 3)", "end time 1.5 is not after start time 1.5"],
    ),
    "exclusion_negative_time": Case(
        _exclusion(("r1_g0_t1.imec0.ap.bin", "-0.5", "1", "artifact")),
        lambda w: [f"{w.exclusions_file()}: data row 2 (line 3) column withinFileStartTime", "`-0.5`"],
    ),
    "exclusion_not_a_number": Case(
        _exclusion(("r1_g0_t1.imec0.ap.bin", "0", "1,5", "artifact")),
        lambda w: [f"{w.exclusions_file()}: data row 2 (line 3) column withinFileEndTime", "`1,5`"],
    ),
    "subject_duplicate_alias": Case(
        _with_alias("      full:\n        - start_file: r1_g0_t0\n          end_file: r1_g0_t1\n", "full"),
        lambda w: [f"{w.subject_file}: malformed YAML at line 23: duplicate key 'full'"],
    ),
    "projects_duplicate_key": Case(
        _then(
            lambda w: _edit(w.projects_file, "project: shared_ssd\n", "project: shared_ssd\nproject: other\n")
        ),
        lambda w: [f"{w.projects_file}: malformed YAML at line 5: duplicate key 'project'"],
    ),
    "projects_not_utf8": Case(
        _then(lambda w: _latin1(w.projects_file, "project: shared_ssd")),
        lambda w: [f"{w.projects_file}: line 4 has byte 0xe9", "UTF-8"],
    ),
    "subject_not_utf8": Case(
        _then(lambda w: _latin1(w.subject_file, "imSyncType: barcode")),
        lambda w: [f"{w.subject_file}: line 6 has byte 0xe9", "UTF-8"],
    ),
    "exclusions_not_utf8": Case(
        _then(lambda w: _latin1(w.exclusions_file(), "artifact")),
        lambda w: [f"{w.exclusions_file()}: line 2 has byte 0xe9", "UTF-8"],
    ),
    "cache_path_is_a_folder": Case(
        lambda w: (w.cache_file.mkdir(), ["refresh-cache", *w.path_args()])[1],
        lambda w: [f"{w.cache_file} is not a file"],
    ),
}
SUBPROCESS_CASES = ["projects_yaml_malformed", "truncated_bin", "missing_exclusions_file", "unknown_alias"]


def _check_case(case: Case, world: CliWorld, result: Result) -> None:
    assert_one_error(result, case.expect(world))
    warned = " ".join(warning_lines(result.err))
    for text in case.warns(world):
        assert text in warned, (text, result.err)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_error_line_and_writes_nothing(name, world, capsys, tmp_path):
    case = CASES[name]
    argv = case.setup(world)
    before = snapshot(tmp_path)
    _check_case(case, world, run_inprocess(capsys, argv))
    assert snapshot(tmp_path) == before
    assert not world.sorting_dir(argv[argv.index("--alias") + 1] if "--alias" in argv else "full").exists()


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_from_the_console_script(name, world, tmp_path):
    case = CASES[name]
    argv = case.setup(world)
    before = snapshot(tmp_path)
    result = run_subprocess(argv, cwd=tmp_path)
    assert result.rc == 2
    _check_case(case, world, result)
    assert snapshot(tmp_path) == before


# --- bad options files for `sort --prepro-only` ---------------------------------------------------------


def _set(path: list, value: object) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


OPTION_CASES = {
    "unknown_key": (_set(["preprocessing", 4, "step_params", "colour"], "red"),
                    "preprocessing[4].whiten.colour: unknown key"),
    "wrong_type": (_set(["preprocessing", 0, "step_params", "freq_min"], "low"),
                   "preprocessing[0].bandpass_filter.freq_min: expected a number"),
    "unknown_preset": (_set(["preprocessing", 3, "step_params", "preset"], "fastest"),
                       "preprocessing[3].drift_correction.preset: unknown preset 'fastest'"),
    "gain_not_scaleproc": (_set(["sorting", "sorter_params", "scaleproc"], 100.0),
                           "preprocessing[5].scale.gain: 200.0 differs from sorting.sorter_params.scaleproc"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(OPTION_CASES))
def test_sort_with_bad_options_fails_before_writing(name, world, capsys, tmp_path):
    edit, expected = OPTION_CASES[name]
    data = yaml.safe_load(CHRONIC.read_text())
    assert [s["step_name"] for s in data["preprocessing"]][3:6] == ["drift_correction", "whiten", "scale"]
    edit(data)
    opts = tmp_path / "bad_opts.yaml"
    opts.write_text(yaml.safe_dump(data, sort_keys=False))
    before = snapshot(tmp_path)
    result = run_inprocess(capsys, world.argv("sort", "--prepro-only", "--opts", str(opts)))
    assert_one_error(result, [f"{opts}: {expected}"])
    assert snapshot(tmp_path) == before
    assert not world.sorting_dir().exists()
