"""Atomic file writes: write to a temporary name in the same folder, fsync, rename into place."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".wisc-tmp-"


def tmp_name(final: Path) -> Path:
    # Same folder (same filesystem) so os.replace is atomic; keep the suffix so numpy/matplotlib
    # don't append their own extension to the temporary name.
    return final.with_name(f"{final.stem}{TMP_MARK}{os.getpid()}{final.suffix}")


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Path) -> None:
    """fsync `tmp`, rename it to `final`, fsync the folder: after this returns the file survives a crash."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    try:
        yield tmp
        commit(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def write_json(final: Path, data: object) -> None:
    write_text(final, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def remove_stale_tmp(folder: Path) -> list[Path]:
    """Remove temporary files left by a killed writer (ours and luigi's) in `folder`."""
    removed = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.is_file() and (TMP_MARK in entry.name or "-luigi-tmp-" in entry.name):
                entry.unlink()
                removed.append(entry)
    return removed


def backup_stamp() -> str:
    """The one timestamp format of backup folders (`<folder>.bak/<stamp>/`): 20261129T183000."""
    from datetime import datetime

    return datetime.now().strftime("%Y%m%dT%H%M%S")


def backup_copies(root: Path, folder: str, files: list[Path]) -> Path:
    """Copy `files` (those that exist) to `<root>/<folder>.bak/<stamp>/`, kept with their metadata."""
    import shutil

    backup = Path(root) / f"{folder}.bak" / backup_stamp()
    backup.mkdir(parents=True, exist_ok=True)
    for path in files:
        if Path(path).exists():
            shutil.copy2(path, backup / Path(path).name)
    return backup
