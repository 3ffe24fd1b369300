"""Tests for subject files, file ordering and alias selection."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.errors import UserError, WiscWarning
from tasks.inputs.subjects import (
    Experiment,
    SubAlias,
    list_subjects,
    load_subject,
    order_files,
    select_alias,
)

# The how-to's example, `---` and `...` included.
HOWTO = """\
---
recording_sessions:
  - id: 7-10-2021
    ap: /archive/CNPIX10-Charles/7-10-2021/SpikeGLX/
    lf: /archive/CNPIX10-Charles/7-10-2021/SpikeGLX/
    imSyncType: barcode
  - id: 7-11-2021
    ap: /archive/CNPIX10-Charles/7-11-2021/SpikeGLX/
    lf: /archive/CNPIX10-Charles/7-11-2021/SpikeGLX/
    imSyncType: barcode
experiments:
  novel_objects_deprivation:
    recording_session_ids:
      - 7-10-2021
      - 7-11-2021
    aliases:
      full:
        - start_file: 7-10-2021_g0_t0
          end_file: 7-11-2021_g1_t8
      night:
        - start_time: 2021-07-10 20:00:00
          end_time: 2021-07-11 08:00:00
...
"""


def subject_file(tmp_path: Path, text: str, name: str = "CNPIX10-Charles", suffix: str = ".yml") -> Path:
    path = tmp_path / f"{name}{suffix}"
    path.write_text(text)
    return path


def files_of(specs: list[tuple[str, str, int, int, str]], probe: str = "imec0") -> pd.DataFrame:
    """File-table rows (session, run, gate, trigger, fileCreateTime) of one probe's AP files, 1 h each."""
    rows = []
    for session, run, gate, trigger, created in specs:
        fname = f"{run}_g{gate}_t{trigger}.{probe}.ap.bin"
        rows.append(
            {"subject": "S", "session": session, "run": run, "gate": gate, "trigger": trigger, "probe": probe,
             "stream": "ap", "fname": fname, "path": f"/d/{fname}", "fileCreateTime": pd.Timestamp(created),
             "fileDuration": 3600.0}
        )  # fmt: skip
    return pd.DataFrame(rows)


def experiment(aliases: dict[str, list[SubAlias]], sessions: tuple[str, ...] = ("d1", "d2")) -> Experiment:
    return Experiment("exp", list(sessions), aliases, Path("/subjects/S.yml"))


# Two sessions; in d1 the run `b` starts before run `a`; triggers t9 and t10 and gates g2 and g10.
FILES = files_of(
    [
        ("d2", "z", 0, 0, "2021-07-11 00:00"),
        ("d1", "a", 0, 10, "2021-07-10 23:00"),
        ("d1", "a", 0, 9, "2021-07-10 22:00"),
        ("d1", "a", 10, 0, "2021-07-11 03:00"),
        ("d1", "a", 2, 0, "2021-07-11 02:00"),
        ("d1", "b", 0, 0, "2021-07-10 09:00"),
        ("d1", "b", 0, 1, "2021-07-10 10:00"),
    ]
)
ORDER = ["b_g0_t0", "b_g0_t1", "a_g0_t9", "a_g0_t10", "a_g2_t0", "a_g10_t0", "z_g0_t0"]


def stems(frame: pd.DataFrame) -> list[str]:
    return [f.split(".")[0] for f in frame["fname"]]


def test_loads_the_howto_example(tmp_path):
    subject_file(tmp_path, HOWTO)
    subject = load_subject(tmp_path, "CNPIX10-Charles")
    assert subject.name == "CNPIX10-Charles"
    assert list(subject.sessions) == ["7-10-2021", "7-11-2021"]
    session = subject.sessions["7-11-2021"]
    assert (
        session.ap == Path("/archive/CNPIX10-Charles/7-11-2021/SpikeGLX/") and session.imSyncType == "barcode"
    )
    exp = subject.experiment("novel_objects_deprivation")
    assert exp.recording_session_ids == ["7-10-2021", "7-11-2021"]
    assert exp.alias("full") == [SubAlias(start_file="7-10-2021_g0_t0", end_file="7-11-2021_g1_t8")]
    assert exp.alias("night") == [
        SubAlias(start_time=datetime(2021, 7, 10, 20), end_time=datetime(2021, 7, 11, 8))
    ]


def test_list_subjects_accepts_yml_and_yaml(tmp_path):
    subject_file(tmp_path, HOWTO, "A")
    subject_file(tmp_path, HOWTO, "B", ".yaml")
    (tmp_path / "notes.txt").write_text("x")
    assert list_subjects(tmp_path) == ["A", "B"]
    assert load_subject(tmp_path, "B").path.suffix == ".yaml"


def test_missing_subject_lists_known_and_suggests(tmp_path):
    subject_file(tmp_path, HOWTO)
    with pytest.raises(
        UserError, match=r"CNPIX10-Charle\.yml.*CNPIX10-Charles.*Did you mean CNPIX10-Charles"
    ):
        load_subject(tmp_path, "CNPIX10-Charle")


def test_unknown_experiment_and_alias_name_the_file_and_known_ones(tmp_path):
    path = subject_file(tmp_path, HOWTO)
    subject = load_subject(tmp_path, "CNPIX10-Charles")
    with pytest.raises(
        UserError, match=rf"{path}: .*no experiment `nod` \(known: novel_objects_deprivation\)"
    ):
        subject.experiment("nod")
    with pytest.raises(
        UserError, match=rf"{path}: .*no alias `ful` \(known: full, night\).*Did you mean full"
    ):
        subject.experiment("novel_objects_deprivation").alias("ful")


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        (
            "      - 7-11-2021\n",
            "      - 7-12-2021\n",
            r"recording_session_ids: unknown session id `7-12-2021`",
        ),
        (
            "      full:\n        - start_file",
            "      full:\n          start_file",
            r"aliases.full: must be a .*list",
        ),
        (
            "          end_file: 7-11-2021_g1_t8\n",
            "",
            r"aliases.full\[0\]: give exactly one pair.*got start_file\)",
        ),
        (
            "          end_file: 7-11-2021_g1_t8\n",
            "          end_file: 7-11-2021_g1_t8\n          start_time: 2021-07-10 20:00:00\n"
            "          end_time: 2021-07-11 08:00:00\n",
            r"aliases.full\[0\]: give exactly one pair",
        ),
        ("          end_file:", "          endfile:", r"aliases.full\[0\]: unknown key\(s\) endfile"),
        (
            "end_time: 2021-07-11 08:00:00",
            "end_time: 2021-07-10 08:00:00",
            r"night\[0\]: end_time .* not after",
        ),
        (
            "end_time: 2021-07-11 08:00:00",
            "end_time: 2021-07-11 08:00:00+02:00",
            r"night\[0\] key end_time.*zone",
        ),
        (
            "end_time: 2021-07-11 08:00:00",
            "end_time: tomorrow",
            r"night\[0\] key end_time: `tomorrow` is not",
        ),
        (
            "    imSyncType: barcode\n  - id: 7-11",
            "    imSyncType: gps\n  - id: 7-11",
            r"\[0\] key imSyncType: `gps`",
        ),
        (
            "    lf: /archive/CNPIX10-Charles/7-10-2021/SpikeGLX/\n",
            "",
            r"recording_sessions\[0\]: missing key `lf`",
        ),
        ("  - id: 7-11-2021", "  - id: 7-10-2021", r"session id `7-10-2021` appears twice"),
    ],
)
def test_invalid_subject_files_name_file_and_key(tmp_path, old, new, pattern):
    assert old in HOWTO
    path = subject_file(tmp_path, HOWTO.replace(old, new, 1))
    with pytest.raises(UserError, match=pattern) as err:
        load_subject(tmp_path, "CNPIX10-Charles")
    assert str(err.value).startswith(str(path))


def test_malformed_yaml_reports_the_line(tmp_path):
    path = subject_file(tmp_path, HOWTO.replace("    aliases:\n", "    aliases: [\n", 1))
    with pytest.raises(UserError, match=rf"{path}: malformed YAML at line \d+"):
        load_subject(tmp_path, "CNPIX10-Charles")
    subject_file(tmp_path, "recording_sessions:\n  - id: a\n   ap: x\n")
    with pytest.raises(UserError, match="malformed YAML at line 3"):
        load_subject(tmp_path, "CNPIX10-Charles")


def test_unknown_top_level_key_warns(tmp_path):
    subject_file(tmp_path, HOWTO.replace("experiments:", "note: hi\nexperiments:"))
    with pytest.warns(WiscWarning, match="unknown key.*note"):
        load_subject(tmp_path, "CNPIX10-Charles")


def test_order_files_sessions_runs_by_first_creation_then_gate_and_trigger_numerically():
    assert stems(order_files(FILES, ["d1", "d2"])) == ORDER
    assert stems(order_files(FILES, ["d2", "d1"])) == ORDER[-1:] + ORDER[:-1]
    with pytest.raises(ValueError):
        order_files(FILES, ["d1"])


def test_order_files_ties_between_runs_by_name():
    files = files_of([("d1", "r2", 0, 0, "2021-07-10 09:00"), ("d1", "r1", 0, 0, "2021-07-10 09:00")])
    assert stems(order_files(files, ["d1"])) == ["r1_g0_t0", "r2_g0_t0"]


def test_start_and_end_file_are_inclusive_positions_in_file_order():
    exp = experiment({"x": [SubAlias(start_file="a_g0_t9", end_file="a_g10_t0")]})
    assert stems(select_alias(FILES, exp, "x")) == ORDER[2:6]
    exp = experiment({"x": [SubAlias(start_file="b_g0_t1", end_file="b_g0_t1.imec0.ap.bin")]})
    assert stems(select_alias(FILES, exp, "x")) == ["b_g0_t1"]


def test_sub_aliases_union_is_ordered_without_duplicates():
    subs = [
        SubAlias(start_file="z_g0_t0", end_file="z_g0_t0"),
        SubAlias(start_file="a_g0_t10", end_file="a_g2_t0"),
        SubAlias(start_file="b_g0_t1", end_file="a_g0_t10"),
    ]
    assert stems(select_alias(FILES, experiment({"x": subs}), "x")) == ORDER[1:5] + ORDER[6:]


def test_time_windows_select_overlapping_files():
    # 09:30-10:00 overlaps b_g0_t0 (09:00-10:00) only; a file ending exactly at the start is left out.
    subs = [SubAlias(start_time=datetime(2021, 7, 10, 9, 30), end_time=datetime(2021, 7, 10, 10, 0))]
    assert stems(select_alias(FILES, experiment({"x": subs}), "x")) == ["b_g0_t0"]
    subs = [SubAlias(start_time=datetime(2021, 7, 10, 22, 59), end_time=datetime(2021, 7, 11, 0, 1))]
    assert stems(select_alias(FILES, experiment({"x": subs}), "x")) == ["a_g0_t9", "a_g0_t10", "z_g0_t0"]


def test_only_the_experiment_sessions_are_selected():
    exp = experiment(
        {"x": [SubAlias(start_time=datetime(2021, 7, 1), end_time=datetime(2021, 8, 1))]}, ("d2",)
    )
    assert stems(select_alias(FILES, exp, "x")) == ["z_g0_t0"]


@pytest.mark.parametrize(
    ("sub", "pattern"),
    [
        (
            SubAlias(start_file="a_g0_t11", end_file="z_g0_t0"),
            r"x\[0\] key start_file: no file `a_g0_t11`.*Did you",
        ),
        (SubAlias(start_file="b_g0_t0", end_file="q_g0_t0"), r"x\[0\] key end_file: no file `q_g0_t0`"),
        (
            SubAlias(start_file="z_g0_t0", end_file="b_g0_t0"),
            r"x\[0\]: start_file `z_g0_t0` comes after end_file",
        ),
        (
            SubAlias(start_time=datetime(2020, 1, 1), end_time=datetime(2020, 1, 2)),
            r"x\[0\]: matches no file of this probe \(7 files, spanning 2021-07-10 09:00:00",
        ),
    ],
)
def test_alias_errors_name_the_subject_file_and_alias(sub, pattern):
    with pytest.raises(UserError, match=pattern) as err:
        select_alias(FILES, experiment({"x": [sub]}), "x")
    assert str(err.value).startswith("/subjects/S.yml: experiments.exp.aliases.x")


def test_a_stem_shared_by_two_sessions_is_ambiguous():
    files = files_of([("d1", "r", 0, 0, "2021-07-10 09:00"), ("d2", "r", 0, 0, "2021-07-11 09:00")])
    with pytest.raises(UserError, match="names 2 files"):
        select_alias(files, experiment({"x": [SubAlias(start_file="r_g0_t0", end_file="r_g0_t0")]}), "x")
