"""Locks that say who holds them (host, pid, since): one command per sorting, one process per step.

A lock is an flock on a file that holds its holder's description. The kernel (or the NFS server) releases
the flock when the holder dies, however it dies, so a dead holder's lock is simply taken over; a clean release
removes the file, so a file found with a description in it names a holder that ended without releasing.
Within one process a lock is re-entrant (a command holds its sortings while its Luigi tasks run there).
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tasks.core.errors import UserError

# How `wisc-sort` exits when a sorting is held by another command (luigi's own code for "already running").
BUSY_EXIT_CODE = 10


class Busy(UserError):
    """Another process holds the lock; the message says which (host, pid, since when)."""

    exit_code = BUSY_EXIT_CODE


@dataclass(frozen=True)
class Held:
    """A lock this process holds; `taken_over` describes a holder that ended without releasing it."""

    path: Path
    taken_over: str = ""


_held: dict[Path, list] = {}  # path -> [fd, depth, Held]: re-entrant within this process


def _me(made: list[Path]) -> dict:
    command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:2])) or "python"
    return {
        "host": platform.node(),
        "pid": os.getpid(),
        "since": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "made": [str(p) for p in made],  # folders made for the lock file: whoever releases it removes them
    }


def describe(holder: dict | None) -> str:
    """`wisc-sort sort (pid 123 on host lab1 since 2026-11-29T20:10:03+00:00)`, or a plain note."""
    if not holder:
        return "another process (it has not said who yet)"
    return (
        f"{holder.get('command', '?')} (pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"since {holder.get('since', '?')})"
    )


def _read_holder(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        holder = json.loads(text)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _make_parents(path: Path) -> list[Path]:
    """mkdir the missing folders above `path`; returns those created, deepest first."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            pass
    return missing


def _open_locked(path: Path, what: str) -> tuple[int, dict | None]:
    """Open and flock `path` (non-blocking) so that the locked file is the one at `path` now."""
    waited_for_text = 0
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
        except FileNotFoundError:  # a releasing holder removed the folder it had made: make it again
            _make_parents(path)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            if holder is None and waited_for_text < 10:  # the holder is writing its description
                waited_for_text += 1
                time.sleep(0.05)
                continue
            raise Busy(
                f"{what} is in use by {describe(holder)}; wait for it to finish, then run again"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, _read_holder(fd)
        os.close(fd)  # the holder released (and removed) the file between our open and flock: again


@contextmanager
def hold(path: Path, what: str) -> Iterator[Held]:
    """Hold the lock at `path` for the block, or raise Busy naming its holder. `what` names the thing held
    in messages. Folders made for the lock file are removed again on release when they are still empty."""
    path = Path(path).absolute()
    if path in _held:
        _held[path][1] += 1
        try:
            yield _held[path][2]
        finally:
            _held[path][1] -= 1
        return
    created = _make_parents(path)
    try:
        fd, previous = _open_locked(path, what)
    except BaseException:
        _remove_empty(created)
        raise
    taken_over = describe(previous) if previous else ""
    if previous:  # a dead holder's folders, still there, are this holder's to remove
        inherited = [Path(p) for p in previous.get("made", []) if Path(p).is_dir() and Path(p) not in created]
        created = sorted({*created, *inherited}, key=lambda p: len(p.parts), reverse=True)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_me(created)).encode(), 0)
    held = Held(path, taken_over)
    _held[path] = [fd, 1, held]
    try:
        yield held
    finally:
        del _held[path]
        try:
            path.unlink()  # while still locked: a waiter that opened the old file sees it is gone
        except FileNotFoundError:
            pass
        os.close(fd)
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return


def sorting_lock_path(root: Path) -> Path:
    """`<subject dir>/.sorting.<probe>.lock`: beside the sorting, so that a sorting being moved home
    (finalize) or made for the first time is guarded too, and its own tree never holds the lock file."""
    root = Path(root).absolute()
    return root.parent / f".{root.name}.lock"


@contextmanager
def hold_sortings(roots: list[Path]) -> Iterator[list[Held]]:
    """One command per sorting: hold every sorting's lock for the block, or raise Busy (exit 10) naming the
    command that holds one (nothing is held then). A lock left by a dead process is taken over quietly
    (`notes` words it for a command that prints what it does)."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(hold(sorting_lock_path(root), f"sorting {root}"))
            for root in sorted({Path(r).absolute() for r in roots})
        ]


def notes(held: list[Held]) -> list[str]:
    """`note: took over ...` for each lock whose last holder ended without releasing it."""
    return [
        f"note: {item.path.parent}: took over the lock of {item.taken_over}, which ended without releasing it"
        for item in held
        if item.taken_over
    ]
