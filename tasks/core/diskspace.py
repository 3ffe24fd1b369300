"""Free-disk preflight for big outputs (recording.dat): bytes needed, bytes free, beside a reserve."""

from __future__ import annotations

import errno
import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from tasks.core.atomic import TMP_MARK
from tasks.core.errors import UserError
from tasks.inputs.segments import n_kept_samples

INT16_BYTES = 2
# Room for what lands beside recording.dat before the sort (params.py, channel maps): small files.
MARGIN_BYTES = 64 * 2**20
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: float) -> str:
    """Binary units, 3 significant digits: 1.76 TiB, 922 GiB, 50 GiB, 0 B."""
    if n <= 0:
        return "0 B"
    power = min(int(math.log(n, 1024)), len(_UNITS) - 1)
    value = n / 1024**power
    if value >= 999.5 and power < len(_UNITS) - 1:  # 3 digits: 1000 GiB reads 0.977 TiB
        power, value = power + 1, value / 1024
    return f"{value:.3g} {_UNITS[power]}"


def bytes_needed(segments: pd.DataFrame, n_channels: int) -> int:
    """recording.dat of the kept samples: samples x channels x 2 bytes (int16), plus a small margin."""
    return n_kept_samples(segments) * int(n_channels) * INT16_BYTES + MARGIN_BYTES


def free_bytes(path: Path) -> int:
    """Bytes available to this user on the filesystem of `path` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def partial_files(target_file: Path) -> list[Path]:
    """The target and temporary copies of it left by a killed writer (tasks.core.atomic names): replaced
    anyway."""
    target_file = Path(target_file)
    found = [target_file] if target_file.is_file() else []
    if target_file.parent.is_dir():
        found += sorted(target_file.parent.glob(f"{target_file.stem}{TMP_MARK}*{target_file.suffix}"))
    return found


def preflight(target_file: Path, needed: int, reserve: int) -> None:
    """Raise UserError, before anything is written, when `needed` bytes would not fit beside the reserve.

    An existing target (and stale temporary copies of it) counts as free: the step replaces it. Their
    allocated blocks count, not their size: a killed SpikeInterface write leaves a sparse full-size file.
    """
    target_file = Path(target_file)
    replaced = sum(p.stat().st_blocks * 512 for p in partial_files(target_file))
    require_room(
        target_file.parent,
        needed,
        f"for {target_file.name}",
        "free space or sort into another project (--project)",
        reserve,
        free_bytes(target_file.parent) + replaced,
    )


def require_room(
    where: Path, needed: int, purpose: str, advice: str, reserve: int, free: int | None = None
) -> int:
    """The free bytes at `where`; UserError (one line: needed, free, reserve, advice) when `needed` bytes
    would not fit beside `reserve` bytes (`[wisc] disk_reserve_gb`, resolved by the caller)."""
    free = free_bytes(where) if free is None else free
    if free - reserve < needed:
        reserve_text = f" (reserve {human_bytes(reserve)})" if reserve else ""
        have = f"{human_bytes(free)} free{reserve_text}"
        raise UserError(f"{where}: needs {human_bytes(needed)} {purpose}, {have}: {advice}")
    return free


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (or its nearest existing parent): the drive's name."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def full_disk_as_error(
    where: Path, what: str, needed: int | Callable[[], int], reserve: int
) -> Iterator[None]:
    """A drive that fills while `what` is written at `where` (another process took the space the preflight
    saw) becomes one UserError: the drive, the bytes missing, what to do. `needed`: the bytes still to write
    (or a function giving them once the write failed).

    Wrap the whole write, temporary files included, so that the free space is measured after their removal.
    """
    try:
        yield
    except OSError as err:
        if not is_disk_full(err):
            raise
        free = free_bytes(where)
        need = needed() if callable(needed) else needed
        missing = max(need + reserve - free, 1)
        reserve_text = f", reserve {human_bytes(reserve)}" if reserve else ""
        raise UserError(
            f"{mount_point(where)}: drive full while {what}: {human_bytes(missing)} missing "
            f"({human_bytes(need)} to write, {human_bytes(free)} free{reserve_text}); "
            "free space and run the same command again"
        ) from None
