"""Real small filesystems for disk-full tests: a tmpfs mounted for the test (root only, else skipped)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def tmpfs(folder: Path, size_mib: int) -> Iterator[Path]:
    """A real tmpfs of `size_mib` at `folder`, unmounted on exit; OSError when it cannot be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise OSError("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        raise OSError(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextmanager
def mounted_tmpfs(folder: Path, size_mib: int) -> Iterator[Path]:
    """A real tmpfs of `size_mib` at `folder` (needs root: the test is skipped otherwise)."""
    import pytest

    try:
        mount = tmpfs(folder, size_mib)
        mount.__enter__()
    except OSError as err:
        pytest.skip(str(err))
    try:
        yield folder
    finally:
        mount.__exit__(None, None, None)


FILLER = r"""
import pathlib, sys, time
watch, pattern, fill = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
timeout = float(sys.argv[4])

def started() -> bool:
    for path in watch.rglob(pattern):
        try:
            if path.is_file() and path.stat().st_size > 0:
                return True
        except OSError:
            pass
    return False

deadline = time.monotonic() + timeout
while not started():
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.001)
written = 0
with open(fill, "wb", buffering=0) as f:
    for block in (2**20, 2**12):  # big blocks, then the last pages
        try:
            while True:
                written += f.write(b"\0" * block)
        except OSError:
            pass
print(written, flush=True)
"""


def start_filler(watch: Path, pattern: str, fill: Path, timeout_s: float = 600.0) -> subprocess.Popen:
    """Another process that waits until a non-empty file matching `pattern` appears under `watch`, then
    writes `fill` until its drive is full; it prints the bytes it wrote (exit 3: nothing appeared)."""
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", FILLER, str(watch), pattern, str(fill), str(timeout_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
