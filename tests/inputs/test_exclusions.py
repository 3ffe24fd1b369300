"""Tests for reading `<probe>.ap.artifacts.htsv` exclusion files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.errors import UserError
from tasks.inputs.exclusions import COLUMNS, exclusions_path, read_exclusions

AP0 = "9-29-2022_g0_t5.imec0.ap.bin"
AP0_T2 = "9-30-2022_g0_t2.imec0.ap.bin"
LF0 = "9-29-2022_g0_t5.imec0.lf.bin"
AP1 = "9-29-2022_g0_t5.imec1.ap.bin"


def experiment_files() -> pd.DataFrame:
    """The only column read_exclusions uses from the file table is `fname`."""
    return pd.DataFrame({"fname": [AP0, AP0_T2, LF0, AP1], "stream": ["ap", "ap", "lf", "ap"]})


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "imec0.ap.artifacts.htsv"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_exclusions_path_follows_the_lab_layout():
    assert exclusions_path(Path("/shared"), "nod", "CNPIX10-Charles", "imec1") == Path(
        "/shared/nod/CNPIX10-Charles/imec1.ap.artifacts.htsv"
    )


def test_missing_file_prints_a_command_that_creates_a_valid_empty_file(tmp_path):
    path = tmp_path / "nod" / "S1" / "imec0.ap.artifacts.htsv"
    with pytest.raises(UserError) as err:
        read_exclusions(path, experiment_files())
    message = str(err.value)
    assert str(path) in message and "printf" in message and "\n" not in message
    command = message[message.index("mkdir") :]
    subprocess.run(["bash", "-c", command], check=True)
    assert read_exclusions(path, experiment_files()).empty
    assert path.read_text() == "\t".join(COLUMNS) + "\n"


@pytest.mark.parametrize("text", ["", "\n\n", "fname\twithinFileStartTime\twithinFileEndTime\ttype\n"])
def test_empty_or_header_only_file_means_no_exclusions(tmp_path, text):
    path = tmp_path / "e.htsv"
    path.write_text(text)
    frame = read_exclusions(path, experiment_files())
    assert frame.empty and list(frame.columns) == COLUMNS


def test_reads_both_spellings_keeps_order_lf_and_other_probe_rows(tmp_path):
    path = write(
        tmp_path,
        "fname\tfileStartTime\tfileEndTime\ttype",  # the how-to's spelling
        f"{AP0}\t5340.0\t7200.0\tflat",
        "",
        f"{AP0_T2}\t6324\t6329.5\tartifact",
        f"{LF0}\t3200.0\t7200.0\tflat",
        f"{AP1}\t1\t2\tflat",
    )
    frame = read_exclusions(path, experiment_files())
    assert list(frame.columns) == COLUMNS
    assert frame["fname"].tolist() == [AP0, AP0_T2, LF0, AP1]
    assert frame["withinFileEndTime"].tolist() == [7200.0, 6329.5, 7200.0, 2.0]
    assert frame["type"].tolist() == ["flat", "artifact", "flat", "flat"]
    assert frame.index.tolist() == [1, 2, 3, 4]  # data rows, blank line skipped


def test_columns_in_any_order_with_crlf_and_extra_columns(tmp_path):
    path = tmp_path / "e.htsv"
    path.write_bytes(
        f"type\tnote\twithinFileEndTime\tfname\twithinFileStartTime\r\nflat\tx\t2\t{AP0}\t1\r\n".encode()
    )
    frame = read_exclusions(path, experiment_files())
    assert frame.iloc[0].tolist() == [AP0, 1.0, 2.0, "flat"]


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        (
            "nope_g0_t5.imec0.ap.bin\t1\t2\tflat",
            r"data row 2 \(line 3\): file `nope_g0_t5.imec0.ap.bin` is in no session",
        ),
        ("9-29-2022_g0_t5.imec0.ap\t1\t2\tflat", rf"data row 2 .*Did you mean {AP0}"),
        (f"{AP0}\t5\t5\tflat", r"data row 2 \(line 3\): end time 5 is not after start time 5"),
        (f"{AP0}\t9\t5\tflat", r"data row 2 .*not after"),
        (f"{AP0}\t-1\t5\tflat", r"data row 2 \(line 3\) column withinFileStartTime: `-1` must be .*>= 0"),
        (f"{AP0}\t1\tabc\tflat", r"data row 2 \(line 3\) column withinFileEndTime: `abc` is not a number"),
        (f"{AP0}\t1\tnan\tflat", r"column withinFileEndTime: `nan` must be a finite number"),
        (f"{AP0}\t1\t2\t", r"data row 2 .*empty `type`"),
        (f"{AP0}\t1\t2", r"data row 2 .*3 tab-separated cells"),
        (f"{AP0}\t1\t2\tflat\textra", r"data row 2 .*5 tab-separated cells"),
    ],
)
def test_bad_rows_name_the_file_and_row(tmp_path, row, pattern):
    path = write(tmp_path, "\t".join(COLUMNS), f"{AP0}\t1\t2\tflat", row)
    with pytest.raises(UserError, match=pattern) as err:
        read_exclusions(path, experiment_files())
    assert str(err.value).startswith(str(path))


def test_missing_column_names_it_and_space_separated_header_gets_a_hint(tmp_path):
    path = write(tmp_path, "fname\twithinFileStartTime\ttype", f"{AP0}\t1\tflat")
    with pytest.raises(UserError, match=r"header line 1 lacks column\(s\) withinFileEndTime"):
        read_exclusions(path, experiment_files())
    path = write(tmp_path, "fname withinFileStartTime withinFileEndTime type", f"{AP0} 1 2 flat")
    with pytest.raises(UserError, match="tabs, not spaces"):
        read_exclusions(path, experiment_files())


def test_both_spellings_at_once_is_an_error(tmp_path):
    path = write(tmp_path, "fname\tfileStartTime\twithinFileStartTime\twithinFileEndTime\ttype")
    with pytest.raises(UserError, match="`withinFileStartTime` twice"):
        read_exclusions(path, experiment_files())
