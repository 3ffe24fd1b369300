"""Tests for tasks.inputs.cache: Parquet round trip, refresh diffs and the stale-file warning."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest

from tasks.core.errors import UserError, WiscWarning
from tasks.inputs.cache import read_cached, refresh_cache
from tasks.inputs.spikeglx import SessionFolders, scan_subject
from tests.support.sglx_fixtures import write_file


def folders(root: Path, *ids: str) -> list[SessionFolders]:
    return [SessionFolders(i, root / i, root / i) for i in ids]


def make_subject(root: Path, ids: tuple[str, ...] = ("d1", "d2"), n_triggers: int = 2) -> list[Path]:
    files = []
    for i, sid in enumerate(ids):
        for t in range(n_triggers):
            for stream in ("ap", "lf"):
                fields = {"fileCreateTime": f"2021-03-0{i + 1}T0{t}:00:00"}
                files.append(write_file(root / sid, f"run{sid}", 0, t, stream=stream, fields=fields))
    return files


def read_quiet(cache: Path, subject: str, ids: list[str]) -> pd.DataFrame | None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_cached(cache, subject, ids)


def test_round_trip(tmp_path: Path) -> None:
    make_subject(tmp_path / "S1")
    make_subject(tmp_path / "S2", ids=("x",))
    cache = tmp_path / "cache" / "files.parquet"
    subjects = {"S1": folders(tmp_path / "S1", "d1", "d2"), "S2": folders(tmp_path / "S2", "x")}
    diff = refresh_cache(cache, subjects)
    assert (len(diff.added), len(diff.removed), diff.n_changed) == (12, 0, 0)
    assert diff.summary().startswith("12 rows added, 0 removed, 0 changed")
    assert [p.name for p in cache.parent.iterdir()] == ["files.parquet"]  # no temporary file left
    expected = scan_subject("S1", subjects["S1"])
    pdt.assert_frame_equal(read_quiet(cache, "S1", ["d1", "d2"]), expected)
    # Sessions come back in the order asked for.
    both = read_quiet(cache, "S1", ["d2", "d1"])
    assert both["session"].tolist() == ["d2"] * 4 + ["d1"] * 4
    pdt.assert_frame_equal(
        read_quiet(cache, "S1", ["d2"]), expected[expected["session"] == "d2"].reset_index(drop=True)
    )


def test_missing_cache_or_sessions_give_none(tmp_path: Path) -> None:
    cache = tmp_path / "files.parquet"
    assert read_cached(cache, "S1", ["d1"]) is None
    make_subject(tmp_path, ids=("d1",))
    refresh_cache(cache, {"S1": folders(tmp_path, "d1")})
    assert read_quiet(cache, "S1", ["d1", "d9"]) is None
    assert read_quiet(cache, "S9", ["d1"]) is None
    assert len(read_quiet(cache, "S1", ["d1"])) == 4


def test_session_without_files_is_cached(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cache = tmp_path / "files.parquet"
    refresh_cache(cache, {"S1": folders(tmp_path, "empty")})
    df = read_quiet(cache, "S1", ["empty"])
    assert df is not None and df.empty and "nFileSamp" in df.columns


def test_refresh_diff_add_remove_change(tmp_path: Path) -> None:
    files = make_subject(tmp_path)
    cache = tmp_path / "files.parquet"
    subjects = {"S1": folders(tmp_path, "d1", "d2")}
    refresh_cache(cache, subjects)
    new = write_file(tmp_path / "d2", "rund2", 0, 7)
    files[0].unlink()
    files[0].with_suffix(".meta").unlink()
    grown = files[1]  # re-acquired: twice the samples, a new create time
    write_file(
        tmp_path / "d1",
        "rund1",
        0,
        0,
        stream="lf",
        fields={"fileSizeBytes": 6000 * 770, "fileCreateTime": "2022-01-01T00:00:00"},
    )
    diff = refresh_cache(cache, subjects)
    assert (len(diff.added), len(diff.removed), diff.n_changed) == (1, 1, 1)
    assert diff.added["path"].tolist() == [str(new)] and diff.removed["path"].tolist() == [str(files[0])]
    assert set(diff.changed["path"]) == {str(grown)}
    assert {"fileSizeBytes", "nFileSamp", "fileDuration", "fileCreateTime", "binSize"} <= set(
        diff.changed["column"]
    )
    summary = diff.summary()
    assert summary.splitlines()[0] == "1 rows added, 1 removed, 1 changed"
    assert f"+ S1 d2 {new}" in summary and f"- S1 d1 {files[0]}" in summary
    assert f"~ S1 d1 {grown}: " in summary and "fileSizeBytes 2310000 -> 4620000" in summary
    # The cache now holds the new state: no stale warning.
    assert len(read_quiet(cache, "S1", ["d1", "d2"])) == 8
    # Nothing changed on disk: an empty diff.
    assert refresh_cache(cache, subjects).summary() == "0 rows added, 0 removed, 0 changed"


def test_refresh_keeps_other_subjects_and_drops_dropped_sessions(tmp_path: Path) -> None:
    make_subject(tmp_path / "S1")
    make_subject(tmp_path / "S2", ids=("x",))
    cache = tmp_path / "files.parquet"
    refresh_cache(cache, {"S1": folders(tmp_path / "S1", "d1", "d2"), "S2": folders(tmp_path / "S2", "x")})
    diff = refresh_cache(cache, {"S1": folders(tmp_path / "S1", "d1")})
    assert (len(diff.added), len(diff.removed), diff.n_changed) == (0, 4, 0)
    assert set(diff.removed["session"]) == {"d2"}
    assert len(read_quiet(cache, "S2", ["x"])) == 4
    assert read_quiet(cache, "S1", ["d2"]) is None


def test_refresh_error_leaves_cache_untouched(tmp_path: Path) -> None:
    make_subject(tmp_path)
    cache = tmp_path / "files.parquet"
    refresh_cache(cache, {"S1": folders(tmp_path, "d1", "d2")})
    before = cache.read_bytes()
    write_file(tmp_path / "d1", "bad", bin_size=5)
    with pytest.raises(UserError, match="bad_g0_t0.imec0.ap.bin"):
        refresh_cache(cache, {"S1": folders(tmp_path, "d1", "d2")})
    assert cache.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["files.parquet"]


def test_stale_warning_after_touch_and_delete(tmp_path: Path) -> None:
    files = make_subject(tmp_path, n_triggers=4)
    cache = tmp_path / "files.parquet"
    refresh_cache(cache, {"S1": folders(tmp_path, "d1", "d2")})
    st = files[2].stat()
    os.utime(files[2], (st.st_atime, st.st_mtime + 10))
    with pytest.warns(WiscWarning, match=r"1 of 8 cached files of S1 changed on disk") as record:
        df = read_cached(cache, "S1", ["d1"])
    message = str(record[0].message)
    assert str(files[2]) in message and "wisc-sort refresh-cache" in message
    assert len(df) == 8  # still returned, from the cache
    assert read_quiet(cache, "S1", ["d2"]) is not None  # d2 untouched: silent
    for f in files[8:]:
        f.unlink()
    with pytest.warns(WiscWarning, match=r"8 of 8 cached files .* \(gone\).* and 3 more; run `wisc-sort"):
        read_cached(cache, "S1", ["d2"])


def test_unreadable_cache_warns_and_gives_none(tmp_path: Path) -> None:
    cache = tmp_path / "files.parquet"
    cache.write_bytes(b"not parquet")
    with pytest.warns(WiscWarning, match="cannot read the file-table cache"):
        assert read_cached(cache, "S1", ["d1"]) is None
