"""Hypnogram states onto frames of the concatenated recording, through a segment table built here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.core.errors import UserError
from tasks.inputs.hypnogram import demo_hypnogram, read_hypnogram, state_frames

RATE = 100.0  # samples per second: frames are easy to count by hand


def segments() -> pd.DataFrame:
    """File a: 0-10 s, 3-4 s excluded; file b created 20 s after a (a 10 s gap), 10 s long."""
    rows = [
        ("a", "keep", 0, 300, 0, "2024-01-01 00:00:00"),
        ("a", "flat", 300, 400, -1, "2024-01-01 00:00:00"),
        ("a", "keep", 400, 1000, 300, "2024-01-01 00:00:00"),
        ("b", "keep", 0, 1000, 900, "2024-01-01 00:00:20"),
    ]
    table = pd.DataFrame(
        rows, columns=["fname", "type", "withinFileStartFrame", "withinFileEndFrame", "keepStartFrame", "t"]
    )
    table["nSegmentSamp"] = table["withinFileEndFrame"] - table["withinFileStartFrame"]
    table["imSampRate"] = RATE
    table["fileDuration"] = 10.0
    table["fileCreateTime"] = pd.to_datetime(table.pop("t"))
    return table


def hypnogram(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["state", "start_time", "end_time"])


def test_states_map_to_kept_frames_through_exclusions_and_gaps():
    hyp = hypnogram(
        [
            ("N1", 2.0, 5.0),  # 2-3 s kept (frames 200-300), 3-4 s excluded, 4-5 s -> frames 300-400
            ("N2", 5.0, 6.0),  # merges with the N1 bout: NREM 200-500
            ("aWk", 8.0, 25.0),  # 8-10 s of a (700-900), the gap, 20-25 s of b (900-1400)
            ("Art", 25.0, 26.0),  # ignored
            ("REM", 29.0, 40.0),  # 29-30 s of b, clipped at the file's end: 1800-1900
        ]
    )
    frames = state_frames(hyp, segments())
    assert sorted(frames) == ["NREM", "REM", "Wake"]
    np.testing.assert_array_equal(frames["NREM"], [[200, 500]])
    np.testing.assert_array_equal(frames["Wake"], [[700, 1400]])
    np.testing.assert_array_equal(frames["REM"], [[1800, 1900]])


def test_missing_and_malformed_hypnograms_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"hypnogram.htsv: hypnogram missing"):
        read_hypnogram(tmp_path / "hypnogram.htsv")
    path = tmp_path / "bad.htsv"
    path.write_text("state\tstart_time\tend_time\tduration\nN2\t0\t4\t4\nREM\tsoon\t8\t4\n")
    with pytest.raises(UserError, match=r"bad.htsv: line 3: start_time 'soon' is not a number"):
        read_hypnogram(path)
    path.write_text("state\tstart\tend_time\n")
    with pytest.raises(UserError, match="no column start_time"):
        read_hypnogram(path)


def test_demo_hypnogram_covers_the_files_span_and_every_state_falls_in_kept_data():
    table = demo_hypnogram(segments(), bout_s=1.0)
    assert table["start_time"].iloc[0] == 0.0 and table["end_time"].iloc[-1] == 30.0
    assert set(table["state"]) == {"N1", "N2", "aWk", "REM", "qWk", "Art"}
    frames = state_frames(table, segments())
    assert all(len(frames[state]) for state in ("NREM", "Wake", "REM"))
