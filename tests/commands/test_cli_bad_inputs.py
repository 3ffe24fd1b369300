"""Every bad input to `wisc-sort segments`, `refresh-cache` and `sort --prepro-only`: one error line, no
traceback, nothing written."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.support.cli import Result, assert_one_error, run_inprocess, run_subprocess, warning_lines
from tests.support.cli_world import CliWorld, snapshot, write_sglx

pytestmark = pytest.mark.usefixtures("clean_env")
REPO = Path(__file__).resolve().parents[2]
CHRONIC = REPO / "opts" / "sorting_chronic_df.yaml"

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
