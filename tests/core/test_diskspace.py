"""Tests for tasks.core.diskspace: sizes needed, free space on a real small filesystem, reserve, message."""

from __future__ import annotations

import os
from pathlib import Path

import luigi.configuration
import pandas as pd
import pytest

from tasks.core.atomic import tmp_name
from tasks.core.diskspace import (
    MARGIN_BYTES,
    bytes_needed,
    free_bytes,
    human_bytes,
    partial_files,
    preflight,
)
from tasks.core.errors import UserError
from tasks.settings import SETTINGS, disk_reserve_bytes
from tests.support.disks import mounted_tmpfs

RESERVE_ENV = SETTINGS["wisc", "disk_reserve_gb"].env

MiB = 2**20


def _segments(kept: list[int], dropped: list[int]) -> pd.DataFrame:
    types = ["keep"] * len(kept) + ["flat"] * len(dropped)
    return pd.DataFrame({"type": types, "nSegmentSamp": kept + dropped})


def test_bytes_needed_counts_kept_samples_only() -> None:
    segments = _segments([30_000, 12_345], [999_999])
    assert bytes_needed(segments, 384) == 42_345 * 384 * 2 + MARGIN_BYTES
    assert bytes_needed(segments, 383) < bytes_needed(segments, 384)


def test_human_bytes() -> None:
    assert human_bytes(1.76 * 2**40) == "1.76 TiB"
    assert human_bytes(50 * 2**30) == "50 GiB"
    assert human_bytes(0.9 * 2**40) == "922 GiB"
    assert human_bytes(1023.9 * 2**30) == "1 TiB"
    assert human_bytes(512) == "512 B"
    assert human_bytes(0) == "0 B"


def test_free_bytes_of_a_missing_folder_is_its_drive(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "small", 5):
        assert free_bytes(tmp_path / "small" / "not" / "yet") == 5 * MiB
        assert free_bytes(tmp_path / "small") == 5 * MiB


def test_reserve_from_luigi_config_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESERVE_ENV, raising=False)
    cfg = luigi.configuration.get_config()
    had = cfg.has_option("wisc", "disk_reserve_gb")
    old = cfg.get("wisc", "disk_reserve_gb", None)
    try:
        cfg.set("wisc", "disk_reserve_gb", "2.5")
        assert disk_reserve_bytes() == int(2.5 * 2**30)
        monkeypatch.setenv(RESERVE_ENV, "1")
        assert disk_reserve_bytes() == 2**30
        monkeypatch.setenv(RESERVE_ENV, "lots")
        with pytest.raises(
            UserError,
            match=rf"\[wisc\] disk_reserve_gb = 'lots' \(luigi.cfg or {RESERVE_ENV}\) is not a float",
        ):
            disk_reserve_bytes()
        monkeypatch.delenv(RESERVE_ENV)
        cfg.set("wisc", "disk_reserve_gb", "-3")
        with pytest.raises(UserError, match=r"\[wisc\] disk_reserve_gb = '-3' .* >= 0"):
            disk_reserve_bytes()
    finally:
        if had:
            cfg.set("wisc", "disk_reserve_gb", old)
        else:
            cfg.remove_option("wisc", "disk_reserve_gb")


def test_preflight_on_a_small_filesystem(tmp_path: Path, no_reserve: None) -> None:
    with mounted_tmpfs(tmp_path / "drive", 5) as drive:
        target = drive / "si_output" / "sorter_output" / "recording.dat"
        preflight(target, 4 * MiB, disk_reserve_bytes())
        with pytest.raises(UserError) as err:
            preflight(target, 6 * MiB, disk_reserve_bytes())
        assert str(err.value) == (
            f"{target.parent}: needs 6 MiB for recording.dat, 5 MiB free: "
            "free space or sort into another project (--project)"
        )
        assert not (drive / "si_output").exists()  # nothing written


def test_partial_target_counts_as_free(tmp_path: Path, no_reserve: None) -> None:
    with mounted_tmpfs(tmp_path / "drive", 5) as drive:
        target = drive / "recording.dat"
        target.write_bytes(b"\1" * (2 * MiB))
        stale = tmp_name(target).with_name(tmp_name(target).name.replace(str(os.getpid()), "1"))
        stale.write_bytes(b"\1" * MiB)
        (drive / "other.dat").write_bytes(b"\1" * MiB)  # not ours: not free
        assert partial_files(target) == [target, stale]
        preflight(target, 4 * MiB, disk_reserve_bytes())  # 1 MiB free + 3 MiB replaced
        with pytest.raises(UserError, match="needs 4.5 MiB for recording.dat, 4 MiB free"):
            preflight(target, int(4.5 * MiB), disk_reserve_bytes())


def test_sparse_partial_file_counts_its_blocks_only(tmp_path: Path, no_reserve: None) -> None:
    # SpikeInterface makes the output full-size and sparse before filling it: a killed write holds less.
    with mounted_tmpfs(tmp_path / "drive", 5) as drive:
        target = drive / "recording.dat"
        with open(target, "wb") as f:
            f.truncate(100 * MiB)
        with pytest.raises(UserError, match="5 MiB free"):
            preflight(target, 6 * MiB, disk_reserve_bytes())


def test_reserve_is_kept_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RESERVE_ENV, "50")
    free = free_bytes(tmp_path)
    with pytest.raises(UserError) as err:
        preflight(tmp_path / "recording.dat", max(1, free - 40 * 2**30), disk_reserve_bytes())
    assert "(reserve 50 GiB): free space or sort into another project (--project)" in str(err.value)
    assert str(err.value).startswith(f"{tmp_path}: needs ")
    monkeypatch.setenv(RESERVE_ENV, "0")
    preflight(tmp_path / "recording.dat", MiB, disk_reserve_bytes())
