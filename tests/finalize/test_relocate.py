"""tasks.finalize.relocate (the move engine, on small fake files: it does not care what the bytes mean) and
tasks.phy.params (params.py's dat_path across a move)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tasks.core.errors import UserError
from tasks.finalize.relocate import (
    copy_tree,
    copy_verified,
    remove_empty_dirs,
    remove_source,
    same_filesystem,
    scan_tree,
)
from tasks.phy.params import NOTE_PREFIX, check_params, read_dat_paths, rewrite_dat_path
from tests.support.disks import mounted_tmpfs


def fake_tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "top.bin").write_bytes(os.urandom(3000))
    (root / "a" / "b" / "deep.npy").write_bytes(os.urandom(100))
    (root / "link").symlink_to("a/b")


def test_scan_tree_lists_folders_before_contents_and_refuses_fifos(tmp_path: Path) -> None:
    fake_tree(tmp_path)
    entries = scan_tree(tmp_path, skip=lambda rel: rel == "top.bin")
    assert list(entries) == ["a", "empty", "link", "a/b", "a/b/deep.npy"]
    assert entries["link"] == {"kind": "link", "target": "a/b"}
    assert entries["a/b/deep.npy"]["size"] == 100
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match="not a file, folder or link"):
        scan_tree(tmp_path)


def test_copy_remove_across_filesystems_keeps_what_changed(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "one", 4) as one, mounted_tmpfs(tmp_path / "two", 4) as two:
        src, dst = one / "src", two / "dst"
        src.mkdir()
        fake_tree(src)
        assert not same_filesystem(src, dst) and same_filesystem(src, one / "x" / "y")
        entries = scan_tree(src)
        saves = []
        copy_tree(src, dst, entries, lambda: saves.append(1))
        assert saves and all(e["state"] == "verified" for e in entries.values())
        assert (dst / "top.bin").read_bytes() == (src / "top.bin").read_bytes()
        assert os.readlink(dst / "link") == "a/b" and (dst / "empty").is_dir()
        (src / "top.bin").write_bytes(b"edited after the copy")  # must not be removed
        assert remove_source(src, dst, entries) == ["top.bin"]
        assert not (src / "a" / "b" / "deep.npy").exists() and (src / "top.bin").exists()
        assert remove_empty_dirs(src, entries) == ["."]  # the source folder keeps the edited file
        assert not (src / "a").exists()


def test_copy_verified_refuses_a_source_that_changed(tmp_path: Path) -> None:
    src, dst = tmp_path / "f.bin", tmp_path / "g.bin"
    src.write_bytes(b"x" * 10)
    entry = {"size": 9, "mtime_ns": src.stat().st_mtime_ns}
    with pytest.raises(OSError) as err:
        copy_verified(src, dst, entry)
    assert err.value.errno == errno.EAGAIN and not dst.exists()
    assert not list(tmp_path.glob(".wisc-move-*"))  # no temporary copy left


def test_a_stale_copy_in_place_is_replaced(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "f.bin").write_bytes(b"new content")
    (dst / "f.bin").write_bytes(b"old content")  # same size, other bytes: a copy of an older version
    entries = scan_tree(src)
    copy_tree(src, dst, entries, lambda: None)
    assert (dst / "f.bin").read_bytes() == b"new content"


PARAMS = (
    "dat_path = {}\nn_channels_dat = 384\ndtype = 'int16'\noffset = 0\n"
    "sample_rate = 30000.0\nhp_filtered = True\n"
)


def sorter_output(root: Path, dat_path: str) -> Path:
    out = root / "si_output" / "sorter_output"
    out.mkdir(parents=True)
    (out / "params.py").write_text("# phy\n" + PARAMS.format(dat_path))
    return out / "params.py"


def test_dat_path_inside_the_sorting_made_relative_outside_kept(tmp_path: Path) -> None:
    root = tmp_path / "sorting.imec0"
    params = sorter_output(
        root, repr([str(root / "si_output/sorter_output/recording.dat"), "/raw/other.bin"])
    )
    result = rewrite_dat_path(params, root, {}, "today")
    assert result["changed"] and read_dat_paths(params) == ["recording.dat", "/raw/other.bin"]
    assert params.read_text().startswith("# phy\ndat_path = ")  # the other lines kept
    assert not rewrite_dat_path(params, root, {}, "today")["changed"]  # idempotent


def test_deleted_recording_dat_is_noted_once(tmp_path: Path) -> None:
    root = tmp_path / "sorting.imec0"
    params = sorter_output(root, "'recording.dat'")
    removed = {"si_output/sorter_output/recording.dat": "1.76 TiB"}
    assert rewrite_dat_path(params, root, removed, "2024-06-11")["note"]
    rewrite_dat_path(params, root, removed, "2024-06-12")
    text = params.read_text()
    assert text.count(NOTE_PREFIX) == 1 and "recording.dat (1.76 TiB) deleted 2024-06-11" in text
    assert "noted in params.py" in check_params(params)


def test_params_without_dat_path_or_unresolvable_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "sorting.imec0"
    params = sorter_output(root, "'recording.dat'")
    with pytest.raises(UserError, match="dat_path recording.dat does not exist and no note says why"):
        check_params(params)
    params.write_text("n_channels_dat = 384\n")
    with pytest.raises(UserError, match=r"no `dat_path = \.\.\.` line"):
        rewrite_dat_path(params, root, {}, "today")
