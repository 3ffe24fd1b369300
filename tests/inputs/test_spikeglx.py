"""Tests for tasks.inputs.spikeglx: .meta parsing, file names and session scanning on generated SpikeGLX
trees."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.errors import UserError, WiscWarning
from tasks.inputs.spikeglx import (
    FILE_TABLE_COLUMNS,
    FILE_TABLE_DTYPES,
    MetaError,
    SessionFolders,
    SglxName,
    parse_bin_name,
    read_meta,
    scan_session,
    scan_subject,
)
from tests.support.sglx_fixtures import (
    GENUINE_METAS,
    META_DIR,
    default_meta_text,
    read_meta_naive,
    write_file,
    write_pair,
)


def session(root: Path, sid: str = "s1", lf: Path | None = None) -> SessionFolders:
    return SessionFolders(sid, root, lf if lf is not None else root)


def scan_quiet(root: Path, **kw) -> pd.DataFrame:
    """Scan and fail on any warning: the happy path must be silent."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return scan_session("S1", session(root), **kw)


def genuine_tree(meta: Path, root: Path) -> tuple[Path, dict[str, str]]:
    """Copy a genuine .meta into a SpikeGLX tree under a proper name, with a sparse .bin of its size."""
    expected = read_meta_naive(meta)
    run = re.sub(r"(_g\d+)?(_t\d+)?$", "", meta.name.split(".")[0])
    probe = re.search(r"\.(imec\d*)\.", expected["fileName"])[1]  # keep the probe index (imec1, bare imec)
    text = meta.read_bytes().decode("latin-1")
    bin_file = root / f"{run}_g0" / f"{run}_g0_{probe}" / f"{run}_g0_t0.{probe}.ap.bin"
    return write_pair(bin_file, text), expected


def test_all_genuine_metas_are_present() -> None:
    assert len(GENUINE_METAS) == 19, META_DIR


@pytest.mark.parametrize("meta", GENUINE_METAS, ids=lambda p: p.name)
def test_genuine_meta_discovered(meta: Path, tmp_path: Path) -> None:
    bin_file, expected = genuine_tree(meta, tmp_path)
    df = scan_quiet(tmp_path)
    assert len(df) == 1
    row = df.iloc[0]
    n_chans = int(expected["nSavedChans"])
    n_samp = int(expected["fileSizeBytes"]) // (2 * n_chans)
    ap, lf, sy = (int(x) for x in expected["snsApLfSy"].split(","))
    assert row["path"] == str(bin_file) and row["fname"] == bin_file.name
    assert (row["nSavedChans"], row["nApChans"], row["nLfChans"], row["nSyChans"]) == (n_chans, ap, lf, sy)
    assert ap + lf + sy == n_chans
    assert row["imSampRate"] == float(expected["imSampRate"])
    assert row["nFileSamp"] == n_samp
    assert row["binSize"] == row["fileSizeBytes"] == int(expected["fileSizeBytes"])
    # SpikeGLX's own fileTimeSecs is samples / calibrated rate: our duration must agree.
    assert row["fileDuration"] == pytest.approx(float(expected["fileTimeSecs"]), rel=1e-12)
    assert row["fileTimeSecs"] == float(expected["fileTimeSecs"])
    assert row["firstSample"] == int(expected["firstSample"])
    assert row["fileCreateTime"] == pd.Timestamp(expected["fileCreateTime"])
    assert row["imDatPrb_type"] == expected.get("imDatPrb_type", "0")
    assert (row["run"], row["gate"], row["trigger"], row["stream"]) == (
        bin_file.name.split("_g0")[0],
        0,
        0,
        "ap",
    )


@pytest.mark.parametrize(
    ("name", "probe", "fields"),
    [
        # A calibrated, non-integer sampling rate.
        ("allan-longcol_g0_t0.imec0.ap.meta", "imec0", {"imSampRate": 29999.941586, "nSyChans": 1}),
        # Only 151 of 384 channels saved, on probe 1.
        ("NP1_saved_only_subset_of_channels.meta", "imec1", {"nSavedChans": 152, "nApChans": 151}),
        # Quad-Base: 1536 AP channels and 4 SY channels.
        (
            "NP2020_sample_g0_t0.imec0.ap.meta",
            "imec0",
            {"nSavedChans": 1540, "nSyChans": 4, "nApChans": 1536},
        ),
        ("NP2_2013_subset_channels.imec0.ap.meta", "imec0", {"nSavedChans": 121, "imDatPrb_type": "2013"}),
        # Phase 3A: no probe index, no imDatPrb_type.
        ("phase3a.imec.ap.meta", "imec", {"imDatPrb_type": "0", "nFileSamp": 5822496}),
    ],
)
def test_genuine_meta_known_values(name: str, probe: str, fields: dict, tmp_path: Path) -> None:
    genuine_tree(META_DIR / name, tmp_path)
    row = scan_quiet(tmp_path).iloc[0]
    assert row["probe"] == probe
    assert {k: row[k] for k in fields} == fields


def test_read_meta_crlf_tilde_and_lf(tmp_path: Path) -> None:
    crlf = META_DIR / "allan-longcol_g0_t0.imec0.ap.meta"
    assert b"\r\n" in crlf.read_bytes()
    meta = read_meta(crlf)
    assert "imroTbl" in meta and "~imroTbl" not in meta
    assert meta["imSampRate"] == "29999.941586" and meta["snsApLfSy"] == "384,0,1"
    assert not any(v.endswith("\r") for v in meta.values())
    lf_copy = tmp_path / "lf.meta"
    lf_copy.write_bytes(crlf.read_bytes().replace(b"\r\n", b"\n"))
    assert read_meta(lf_copy) == meta


@pytest.mark.parametrize("content", [b"", b"\r\n\n  \n", b"\0" * 4096, b"no equals sign here\n"])
def test_read_meta_empty_raises(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "x.meta"
    path.write_bytes(content)
    with pytest.raises(MetaError, match="x.meta"):
        read_meta(path)
    assert issubclass(MetaError, ValueError)


def test_read_meta_missing_raises(tmp_path: Path) -> None:
    with pytest.raises(MetaError, match="nope.meta"):
        read_meta(tmp_path / "nope.meta")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("3-1-2021_g0_t0.imec0.ap.bin", SglxName("3-1-2021", 0, 0, "imec0", "ap")),
        ("run_g12_t345.imec12.lf.bin", SglxName("run", 12, 345, "imec12", "lf")),
        ("12-12-2020_BL_24hs_b_g0_t1.imec1.ap.bin", SglxName("12-12-2020_BL_24hs_b", 0, 1, "imec1", "ap")),
        ("a_g1_t2_g3_t4.imec0.ap.bin", SglxName("a_g1_t2", 3, 4, "imec0", "ap")),
        ("test_file_g0_t0.imec.ap.bin", SglxName("test_file", 0, 0, "imec", "ap")),
    ],
)
def test_parse_bin_name(name: str, expected: SglxName) -> None:
    assert parse_bin_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "run_g0_tcat.imec0.ap.bin",
        "run_g0_t0.nidq.bin",
        "run_g0_t0.obx0.obx.bin",
        "run_g0_t0.imec0.ap.meta",
        "run_g0_t0.imec0.ap.bin.bak",
        "run_t0.imec0.ap.bin",
        "run_g0_t0.imec0.xx.bin",
        "notes.bin",
    ],
)
def test_parse_bin_name_rejects(name: str) -> None:
    assert parse_bin_name(name) is None


def test_scan_session_tree_order_and_dtypes(tmp_path: Path) -> None:
    # Written out of order: triggers 10 before 2, gate 1 before 0, the later run first.
    for run, time in (("late", "2021-03-02T00:00:00"), ("early", "2021-03-01T00:00:00")):
        for gate in (1, 0):
            for trigger in (10, 2):
                for probe in ("imec12", "imec2"):
                    for stream in ("lf", "ap"):
                        write_file(
                            tmp_path, run, gate, trigger, probe, stream, fields={"fileCreateTime": time}
                        )
    df = scan_quiet(tmp_path)
    assert list(df.columns) == FILE_TABLE_COLUMNS
    assert {c: str(t) for c, t in df.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in FILE_TABLE_DTYPES.items()
    }
    assert len(df) == 32
    first = df.head(8)[["run", "gate", "trigger", "probe", "stream"]].to_records(index=False).tolist()
    assert first == [
        ("early", 0, 2, "imec2", "ap"),
        ("early", 0, 2, "imec2", "lf"),
        ("early", 0, 2, "imec12", "ap"),
        ("early", 0, 2, "imec12", "lf"),
        ("early", 0, 10, "imec2", "ap"),
        ("early", 0, 10, "imec2", "lf"),
        ("early", 0, 10, "imec12", "ap"),
        ("early", 0, 10, "imec12", "lf"),
    ]
    assert df["run"].iloc[16:].eq("late").all()
    assert (df["nFileSamp"] == 3000).all() and (df["fileDuration"] == 0.1).all()
    assert set(df["session"]) == {"s1"} and set(df["subject"]) == {"S1"}
    ap_only = scan_quiet(tmp_path, streams=("ap",))
    assert len(ap_only) == 16 and set(ap_only["stream"]) == {"ap"}


def test_separate_lf_folder(tmp_path: Path) -> None:
    ap_root, lf_root = tmp_path / "ap", tmp_path / "lf"
    write_file(ap_root, "r", stream="ap")
    write_file(ap_root, "r", stream="lf")  # ignored: LF files come from the lf folder
    lf_file = write_file(lf_root, "r", stream="lf")
    df = scan_session("S1", session(ap_root, lf=lf_root))
    assert df["stream"].tolist() == ["ap", "lf"]
    assert df["path"].iloc[1] == str(lf_file)


def test_missing_file_size_warns_and_uses_bin(tmp_path: Path) -> None:
    frame = 2 * 385
    write_file(tmp_path, "r", fields={"fileSizeBytes": None, "fileTimeSecs": None}, bin_size=500 * frame + 7)
    with pytest.warns(WiscWarning, match=r"no fileSizeBytes.*r_g0_t0\.imec0\.ap\.bin"):
        df = scan_session("S1", session(tmp_path))
    row = df.iloc[0]
    assert (row["nFileSamp"], row["fileSizeBytes"], row["binSize"]) == (500, 500 * frame, 500 * frame + 7)
    assert row["fileTimeSecs"] == row["fileDuration"] == 500 / 30000.0


def test_bad_names_skipped_with_warning(tmp_path: Path) -> None:
    good = write_file(tmp_path, "r")
    catgt = write_file(tmp_path, "r", trigger=1)  # becomes a CatGT output beside it
    catgt.rename(catgt.with_name("r_g0_tcat.imec0.ap.bin"))
    catgt.with_suffix(".meta").rename(catgt.with_name("r_g0_tcat.imec0.ap.meta"))
    (good.parent / "notes.bin").write_bytes(b"x")
    (good.parent / "r_g0_t0.nidq.bin").write_bytes(b"")  # NI-DAQ stream: skipped silently
    with pytest.warns(WiscWarning, match="do not follow") as record:
        df = scan_session("S1", session(tmp_path))
    assert df["path"].tolist() == [str(good)]
    text = " ".join(str(w.message) for w in record)
    assert "r_g0_tcat.imec0.ap.bin" in text and "notes.bin" in text and "nidq" not in text


def test_size_mismatch_raises(tmp_path: Path) -> None:
    write_file(tmp_path, "r", bin_size=3000 * 2 * 385 - 2 * 385)
    with pytest.raises(UserError, match=r"r_g0_t0\.imec0\.ap\.bin.*fileSizeBytes=2310000.*copy it again"):
        scan_session("S1", session(tmp_path))


def test_non_whole_sample_raises(tmp_path: Path) -> None:
    write_file(tmp_path, "r", fields={"fileSizeBytes": 2 * 385 * 10 + 2})
    with pytest.raises(UserError, match=r"r_g0_t0\.imec0\.ap\.bin.*not a whole number of samples"):
        scan_session("S1", session(tmp_path))


def test_missing_session_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"session 7-10-2021 of S1.*nowhere does not exist"):
        scan_subject("S1", [session(tmp_path / "nowhere", "7-10-2021")])


@pytest.mark.parametrize(
    ("meta_bytes", "why"),
    [
        (b"", "empty or unreadable"),
        (None, "no .meta"),
        (b"nSavedChans=385\n", "lacks imSampRate"),
        (b"nSavedChans=x\r\nimSampRate=3e4\r\nsnsApLfSy=384,0,1\r\n", "malformed number"),
    ],
)
def test_bad_meta_dropped_with_warning(meta_bytes: bytes | None, why: str, tmp_path: Path) -> None:
    keep = write_file(tmp_path, "r", trigger=0)
    bad = write_file(tmp_path, "r", trigger=1)
    meta = bad.with_suffix(".meta")
    meta.unlink() if meta_bytes is None else meta.write_bytes(meta_bytes)
    with pytest.warns(WiscWarning, match=re.escape(why)) as record:
        df = scan_session("S1", session(tmp_path))
    assert df["path"].tolist() == [str(keep)]
    assert any(bad.name in str(w.message) for w in record)


def test_duplicate_file_in_session_raises(tmp_path: Path) -> None:
    write_file(tmp_path, "r")
    write_file(tmp_path / "backup", "r")
    with pytest.raises(UserError, match=r"r_g0_t0\.imec0\.ap\.bin is found twice"):
        scan_session("S1", session(tmp_path))


def test_trash_folders_ignored(tmp_path: Path) -> None:
    keep = write_file(tmp_path, "r")
    write_file(tmp_path / ".Trash-1000", "r")
    write_file(tmp_path / "$RECYCLE.BIN", "r")
    assert scan_quiet(tmp_path)["path"].tolist() == [str(keep)]


def test_scan_subject_keeps_session_order(tmp_path: Path) -> None:
    write_file(tmp_path / "a", "day1", fields={"fileCreateTime": "2021-01-01T00:00:00"})
    write_file(tmp_path / "b", "day2", fields={"fileCreateTime": "2021-01-02T00:00:00"})
    df = scan_subject("S1", [session(tmp_path / "b", "b"), session(tmp_path / "a", "a")])
    assert df["session"].tolist() == ["b", "a"] and df["run"].tolist() == ["day2", "day1"]


def test_same_name_in_two_sessions_warns(tmp_path: Path) -> None:
    write_file(tmp_path / "a", "p0")
    write_file(tmp_path / "b", "p0")
    with pytest.warns(WiscWarning, match=r"another session: p0_g0_t0\.imec0\.ap\.bin"):
        df = scan_subject("S1", [session(tmp_path / "a", "a"), session(tmp_path / "b", "b")])
    assert len(df) == 2


def test_empty_subject_has_columns(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    df = scan_subject("S1", [session(tmp_path / "empty")])
    assert df.empty and list(df.columns) == FILE_TABLE_COLUMNS
    assert str(df["fileCreateTime"].dtype) == "datetime64[ns]" and str(df["gate"].dtype) == "int64"
    assert scan_subject("S1", []).columns.tolist() == FILE_TABLE_COLUMNS


def test_crlf_generated_meta_and_unparsable_time(tmp_path: Path) -> None:
    write_file(tmp_path, "r", meta_text=default_meta_text(crlf=True), fields={"fileCreateTime": "garbage"})
    with pytest.warns(WiscWarning, match="no readable fileCreateTime"):
        df = scan_session("S1", session(tmp_path))
    assert pd.isna(df["fileCreateTime"].iloc[0]) and df["nFileSamp"].iloc[0] == 3000
