"""Tests for the AP segment table: coverage, exclusion precedence, frame maps, TSV round trip, summary."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.core.errors import UserError, WiscWarning
from tasks.inputs.segments import (
    KEEP,
    SEGMENT_COLUMNS,
    build_segment_table,
    check_consistent,
    file_to_frame,
    format_summary,
    frame_to_file,
    read_segments,
    write_segments,
)

TYPES = ["flat", "artifact", "noise"]


def ap_files(n_samps: list[int], rate: float = 2500.37, chans: list[int] | None = None) -> pd.DataFrame:
    """A file table with the contract's columns for AP files of imec0, one per entry of `n_samps`."""
    n = len(n_samps)
    chans = chans or [385] * n
    n_file = np.asarray(n_samps, dtype=np.int64)
    return pd.DataFrame(
        {
            "subject": "S1",
            "session": "7-10-2021",
            "run": "7-10-2021",
            "gate": 0,
            "trigger": np.arange(n),
            "probe": "imec0",
            "stream": "ap",
            "fname": [f"7-10-2021_g0_t{i}.imec0.ap.bin" for i in range(n)],
            "path": [
                f"/data/7-10-2021_g0/7-10-2021_g0_imec0/7-10-2021_g0_t{i}.imec0.ap.bin" for i in range(n)
            ],
            "nSavedChans": np.asarray(chans, dtype=np.int64),
            "imSampRate": float(rate),
            "fileSizeBytes": n_file * 2 * np.asarray(chans),
            "fileTimeSecs": n_file / rate,
            "firstSample": np.cumsum(n_file) - n_file,
            "fileCreateTime": pd.Timestamp("2021-07-10 09:00:00") + pd.to_timedelta(np.arange(n), unit="h"),
            "nApChans": 384,
            "nLfChans": 0,
            "nSyChans": 1,
            "imDatPrb_type": "0",
            "nFileSamp": n_file,
            "fileDuration": n_file / rate,
            "binSize": n_file * 2 * np.asarray(chans),
            "binMtime": 1.6e9 + np.arange(n, dtype=float),
        }
    )


def exclusions(rows: list[tuple[str, float, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["fname", "withinFileStartTime", "withinFileEndTime", "type"])


def oracle(files: pd.DataFrame, excl: pd.DataFrame) -> list[np.ndarray]:
    """Per-sample labels by brute force: paint exclusions last-listed first, so the first listed wins."""
    labels = []
    for _, f in files.iterrows():
        lab = np.full(int(f["nFileSamp"]), KEEP, dtype=object)
        rate = f["imSampRate"]
        for _, ex in excl[excl["fname"] == f["fname"]].iloc[::-1].iterrows():
            lab[int(ex["withinFileStartTime"] * rate) : int(ex["withinFileEndTime"] * rate)] = ex["type"]
        labels.append(lab)
    return labels


def build_quietly(files: pd.DataFrame, excl: pd.DataFrame | None) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WiscWarning)
        return build_segment_table(files, excl)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_samps = draw(st.lists(st.integers(1, 3000), min_size=1, max_size=6))
    rate = draw(st.floats(50.0, 5000.0).filter(lambda r: r != int(r)))
    files = ap_files(n_samps, rate)
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        i = draw(st.integers(0, len(n_samps) - 1))
        dur = n_samps[i] / rate
        # Edges on purpose: file start, exact file end, past the end, sub-sample lengths.
        start = draw(st.one_of(st.just(0.0), st.floats(0.0, dur * 1.2), st.just(dur)))
        length = draw(st.one_of(st.floats(1e-6, 0.5 / rate), st.floats(1e-6, dur), st.just(dur * 2)))
        rows.append((files["fname"][i], start, start + length, draw(st.sampled_from(TYPES))))
    # Rows of files outside the table (other probe, LF) must be ignored.
    rows.append(("7-10-2021_g0_t0.imec1.ap.bin", 0.0, 1.0, "flat"))
    rows.append(("7-10-2021_g0_t0.imec0.lf.bin", 0.0, 1.0, "flat"))
    order = draw(st.permutations(range(len(rows))))
    return files, exclusions([rows[k] for k in order])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_segments_cover_each_file_once_with_first_listed_exclusion_winning(scenario):
    files, excl = scenario
    seg = build_quietly(files, excl)
    expected = oracle(files, excl)
    assert list(seg.columns[: len(SEGMENT_COLUMNS)]) == SEGMENT_COLUMNS
    assert list(dict.fromkeys(seg["fname"])) == list(files["fname"])  # file order, each file contiguous
    assert (seg["nSegmentSamp"] > 0).all()
    for (_, f), labels in zip(files.iterrows(), expected, strict=True):
        rows = seg[seg["fname"] == f["fname"]]
        assert rows["withinFileStartFrame"].iloc[0] == 0
        assert rows["withinFileEndFrame"].iloc[-1] == f["nFileSamp"]
        assert (
            rows["withinFileStartFrame"].to_numpy()[1:] == rows["withinFileEndFrame"].to_numpy()[:-1]
        ).all()
        assert (rows["type"].to_numpy()[1:] != rows["type"].to_numpy()[:-1]).all()  # merged runs
        painted = np.repeat(rows["type"].to_numpy(dtype=object), rows["nSegmentSamp"].to_numpy())
        assert (painted == labels).all()
    n_keep = sum(int((lab == KEEP).sum()) for lab in expected)
    assert seg.loc[seg["type"] == KEEP, "nSegmentSamp"].sum() == n_keep
    assert (seg.loc[seg["type"] != KEEP, "keepStartFrame"] == -1).all()


@settings(max_examples=80, deadline=None)
@given(scenarios())
def test_frame_maps_round_trip_over_every_kept_frame(scenario):
    files, excl = scenario
    seg = build_quietly(files, excl)
    labels = oracle(files, excl)
    want_file = np.concatenate([np.full(int((lab == KEEP).sum()), i) for i, lab in enumerate(labels)])
    want_frame = np.concatenate([np.flatnonzero(lab == KEEP) for lab in labels])
    total = len(want_frame)
    frames = np.arange(total, dtype=np.int64)
    fnames, within = frame_to_file(seg, frames)
    assert (fnames == files["fname"].to_numpy()[want_file]).all()
    assert (within == want_frame).all()
    for name in files["fname"]:
        mask = fnames == name
        if mask.any():
            assert (file_to_frame(seg, name, within[mask]) == frames[mask]).all()
    with pytest.raises(ValueError):
        frame_to_file(seg, total)
    with pytest.raises(ValueError):
        frame_to_file(seg, -1)


@settings(max_examples=20, deadline=None)
@given(scenarios())
def test_write_read_round_trip_preserves_values_and_dtypes(scenario):
    seg = build_quietly(*scenario)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "segments.htsv"
        write_segments(seg, path)
        back = read_segments(path)
        assert [p.name for p in Path(tmp).iterdir()] == ["segments.htsv"]  # no temporary left behind
    pd.testing.assert_frame_equal(back, seg)


def test_columns_are_segment_columns_then_file_table_then_keep_start():
    files = ap_files([100, 50])
    seg = build_segment_table(files, exclusions([]))
    rest = [c for c in files.columns if c not in SEGMENT_COLUMNS]
    assert list(seg.columns) == SEGMENT_COLUMNS + rest + ["keepStartFrame"]
    assert seg["type"].tolist() == [KEEP, KEEP]
    assert seg["keepStartFrame"].tolist() == [0, 100]


def test_overlap_of_different_types_goes_to_the_first_listed():
    files = ap_files([1000], rate=100.0)
    name = files["fname"][0]
    seg = build_segment_table(files, exclusions([(name, 2.0, 5.0, "artifact"), (name, 1.0, 6.0, "flat")]))
    assert seg[["type", "withinFileStartFrame", "withinFileEndFrame"]].values.tolist() == [
        [KEEP, 0, 100],
        ["flat", 100, 200],
        ["artifact", 200, 500],
        ["flat", 500, 600],
        [KEEP, 600, 1000],
    ]


def test_touching_exclusions_of_one_type_merge_and_whole_file_exclusion_has_no_keep():
    files = ap_files([1000, 1000], rate=100.0)
    a, b = files["fname"]
    seg = build_segment_table(
        files, exclusions([(a, 0.0, 3.0, "flat"), (a, 3.0, 10.0, "flat"), (b, 9.0, 10.0, "x")])
    )
    assert seg[["fname", "type", "nSegmentSamp"]].values.tolist() == [
        [a, "flat", 1000],
        [b, KEEP, 900],
        [b, "x", 100],
    ]
    assert seg["keepStartFrame"].tolist() == [-1, 0, -1]


def test_exclusion_past_the_end_is_clipped_with_a_warning_naming_file_and_row():
    files = ap_files([1000], rate=100.0)
    name = files["fname"][0]
    excl = exclusions([(name, 1.0, 2.0, "flat"), (name, 8.0, 99.0, "flat")])
    excl.index = pd.Index([1, 2], name="row")
    with pytest.warns(WiscWarning, match=rf"row 2 .*{name}.*clipped"):
        seg = build_segment_table(files, excl)
    assert seg["withinFileEndFrame"].tolist() == [100, 200, 800, 1000]
    with pytest.warns(WiscWarning, match="ignored"):
        build_segment_table(files, exclusions([(name, 50.0, 60.0, "flat")]))


def test_file_to_frame_rejects_excluded_and_unknown_frames():
    files = ap_files([1000], rate=100.0)
    name = files["fname"][0]
    seg = build_segment_table(files, exclusions([(name, 1.0, 2.0, "flat")]))
    assert file_to_frame(seg, name, 250) == 150
    assert frame_to_file(seg, 150) == (name, 250)
    with pytest.raises(ValueError, match="excluded `flat`"):
        file_to_frame(seg, name, np.array([50, 150]))
    with pytest.raises(ValueError, match="outside"):
        file_to_frame(seg, name, 1000)
    with pytest.raises(ValueError, match="not in the segment table"):
        file_to_frame(seg, "other.imec0.ap.bin", 0)
    with pytest.raises(ValueError, match="integers"):
        frame_to_file(seg, np.array([1.5]))


def test_different_channel_counts_or_rates_name_both_files():
    files = ap_files([10, 10], chans=[385, 277])
    with pytest.raises(UserError, match=r"t1\.imec0\.ap\.bin has 277 .*t0\.imec0\.ap\.bin"):
        check_consistent(files)
    with pytest.raises(UserError):
        build_segment_table(files, None)
    files = ap_files([10, 10], rate=30000.0)
    files.loc[1, "imSampRate"] = 30000.0 * (1 + 2e-3)
    with pytest.raises(UserError, match=r"t1\.imec0\.ap\.bin samples at .*t0\.imec0\.ap\.bin"):
        check_consistent(files)
    files.loc[1, "imSampRate"] = 30000.0 * (1 + 5e-4)  # calibration differences are fine
    check_consistent(files)


def test_summary_reports_counts_duration_size_exclusions_and_first_path():
    files = ap_files([3600 * 100, 1800 * 100], rate=100.0)
    a = files["fname"][0]
    seg = build_segment_table(files, exclusions([(a, 0.0, 600.0, "flat"), (a, 700.0, 710.0, "artifact")]))
    text = format_summary(seg)
    kept = (5400 - 610) * 100
    assert "2 files - 385 channels" in text
    assert f"{kept:,} samples" in text
    assert "4,790.00 s (1.33 hours)" in text
    assert f"({kept * 385 * 2:,} bytes)" in text and "MiB" in text
    assert "flat 600.00 s, artifact 10.00 s" in text
    assert files["path"][0] in text
    assert "Excluded: none" in format_summary(build_segment_table(files, None))
