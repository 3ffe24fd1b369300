"""Move a sorting directory between drives without losing a byte: a rename on one filesystem; otherwise copy,
verify (size + sha256, read back), rename into place, and only when every file is verified remove the source.

Every step is recorded in a journal (a dict the caller saves atomically); a rerun reads it and goes on where
the last run stopped. Invariant: at every moment each file is complete in the source or the destination (the
destination gets a file under its final name only once verified; the source loses files only after the whole
destination is verified).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

from tasks.core.atomic import fsync_dir

CHUNK = 8 * 2**20
# Hidden temporary names for files being copied into the destination; distinct from tasks.core.atomic's mark
# so that a stale step tmp file in the source is copied as what it is, and only ours are cleaned.
COPY_MARK = ".wisc-move-"
# Fault injection for the kill tests: WISC_FINALIZE_CRASH_AT=<point>[:<n>] exits at the n-th pass (1-based).
CRASH_ENV = "WISC_FINALIZE_CRASH_AT"
_crash_counts: dict[str, int] = {}

Save = Callable[[], None]


def crash_point(name: str) -> None:
    """os._exit(77) here when WISC_FINALIZE_CRASH_AT names this point (a SIGKILL stand-in for tests)."""
    wanted = os.environ.get(CRASH_ENV, "")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] >= int(nth or 1):
        os._exit(77)


def scan_tree(root: Path, skip: Callable[[str], bool] | None = None) -> dict[str, dict]:
    """Relative path -> {kind: dir|file|link, size, mtime_ns, mode | target} of everything under `root`
    but the relative paths `skip` names. Folders come before their contents. Sockets and fifos are refused.
    """
    entries: dict[str, dict] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(folder)
        for name in sorted(dirs + files):
            path = base / name
            rel = path.relative_to(root).as_posix()
            if skip is not None and skip(rel):
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = {"kind": "link", "target": os.readlink(path)}
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = {"kind": "dir", "mode": stat.S_IMODE(st.st_mode)}
            elif stat.S_ISREG(st.st_mode):
                entries[rel] = {
                    "kind": "file",
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "mode": stat.S_IMODE(st.st_mode),
                }
            else:
                raise OSError(f"{path}: not a file, folder or link; move it out of the sorting first")
    return dict(sorted(entries.items(), key=lambda item: (item[0].count("/"), item[0])))


def tree_bytes(entries: dict[str, dict]) -> int:
    return sum(e.get("size", 0) for e in entries.values() if e["kind"] == "file")


def existing_parent(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def same_filesystem(src: Path, dst: Path) -> bool:
    """True when `dst` (or its nearest existing parent) lies on the filesystem of `src`."""
    return os.stat(src).st_dev == os.stat(existing_parent(dst)).st_dev


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


def _drop_cache(fd: int) -> None:
    """Ask the kernel to forget the pages just written, so the read-back verifies the drive, not memory."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _tmp_path(final: Path) -> Path:
    return final.with_name(f"{COPY_MARK}{os.getpid()}-{final.name}")


def copy_verified(src: Path, dst: Path, entry: dict, progress: Callable[[int], None] | None = None) -> str:
    """Copy `src` to a hidden name beside `dst`, fsync, read it back: sizes and sha256 must match the source
    as read while copying, and the source must not have changed meanwhile. Then rename to `dst`.
    Returns the sha256. Raises OSError if the copy does not verify (the temporary file is removed)."""
    tmp = _tmp_path(dst)
    h = hashlib.sha256()
    try:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            while chunk := fi.read(CHUNK):
                h.update(chunk)
                fo.write(chunk)
                if progress:
                    progress(len(chunk))
            fo.flush()
            shutil.copystat(src, tmp)
            os.fsync(fo.fileno())
            _drop_cache(fo.fileno())
        digest = h.hexdigest()
        st = os.stat(src)
        if (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
            raise OSError(errno.EAGAIN, f"{src} changed while being copied")
        crash_point("copied")
        if os.stat(tmp).st_size != entry["size"] or sha256_file(tmp, progress) != digest:
            raise OSError(errno.EIO, f"{tmp}: the copy of {src} reads back different; check the drive")
        os.rename(tmp, dst)
        fsync_dir(dst.parent)
        return digest
    finally:
        if tmp.exists():
            tmp.unlink()


def _copy_retrying(src: Path, dst: Path, entry: dict, progress: Callable[[int], None] | None) -> str:
    """copy_verified, planning the file again when it changed while being copied (someone wrote to it)."""
    for attempt in range(3):
        try:
            return copy_verified(src, dst, entry, progress)
        except OSError as err:
            if err.errno != errno.EAGAIN or attempt == 2:
                raise
            st = src.stat()
            entry.update(size=st.st_size, mtime_ns=st.st_mtime_ns, mode=stat.S_IMODE(st.st_mode))
    raise AssertionError("unreachable")


def _link_into_place(target: str, dst: Path) -> None:
    tmp = _tmp_path(dst)
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


def remove_stale_copies(root: Path) -> list[Path]:
    """Temporary copies left in the destination by a killed run (only ours: the COPY_MARK prefix)."""
    stale = [p for p in root.rglob(f"{COPY_MARK}*") if p.is_file() or p.is_symlink()]
    for path in stale:
        path.unlink()
    return stale


def _dest_matches(dst: Path, entry: dict) -> bool:
    """Cheap check that a destination entry is the verified copy (used before removing its source)."""
    if entry["kind"] == "link":
        return dst.is_symlink() and os.readlink(dst) == entry["target"]
    if entry["kind"] == "dir":
        return dst.is_dir() and not dst.is_symlink()
    return dst.is_file() and not dst.is_symlink() and dst.stat().st_size == entry["size"]


def copy_tree(src: Path, dst: Path, entries: dict[str, dict], save: Save, bar=None) -> None:
    """Make `dst` hold a verified copy of every entry; entries marked `verified` in an earlier run are
    skipped when the destination still holds them; one found in place but unmarked (killed before the
    journal was saved) is hashed again. Marks each entry `verified` and calls `save` now and then."""
    dst.mkdir(parents=True, exist_ok=True)
    remove_stale_copies(dst)
    last_save = time.monotonic()
    update = bar.update if bar is not None else None
    for rel, entry in entries.items():
        target = dst / rel
        if entry.get("state") == "verified" and _dest_matches(target, entry):
            if bar is not None:
                bar.update(2 * entry.get("size", 0))
            continue
        if entry["kind"] == "dir":
            target.mkdir(exist_ok=True)
        elif entry["kind"] == "link":
            if not _dest_matches(target, entry):
                _link_into_place(entry["target"], target)
        else:
            if bar is not None:
                bar.set_postfix_str(rel[-40:], refresh=False)
            src_file = src / rel
            in_place = False
            if target.is_file() and target.stat().st_size == entry["size"]:
                # Renamed into place by a run killed before its journal was saved: check it again.
                if "sha256" not in entry:
                    entry["sha256"] = sha256_file(src_file, update)
                in_place = sha256_file(target, update) == entry["sha256"]
            if not in_place:  # a stale copy stays until the verified one replaces it (one rename)
                entry["sha256"] = _copy_retrying(src_file, target, entry, update)
        entry["state"] = "verified"
        crash_point("verified")
        if time.monotonic() - last_save > 0.5:
            save()
            last_save = time.monotonic()
    # Folder permissions and times last: filling a folder changes its mtime.
    for rel, entry in reversed(entries.items()):
        if entry["kind"] == "dir":
            os.chmod(dst / rel, entry["mode"])
            src_dir = src / rel
            if src_dir.is_dir():
                shutil.copystat(src_dir, dst / rel)
    save()


def changed_since_plan(src: Path, entries: dict[str, dict], skip: Callable[[str], bool]) -> list[str]:
    """Entries of `src` that are new or differ from the plan (written to while being copied): re-planned
    by the caller so that nothing written during a finalize is left behind."""
    now = scan_tree(src, skip)
    changed = []
    for rel, entry in now.items():
        old = entries.get(rel)
        same = old is not None and all(
            old.get(k) == entry.get(k) for k in ("kind", "size", "mtime_ns", "target")
        )
        if not same:
            entries[rel] = entry
            changed.append(rel)
    return changed


def remove_source(src: Path, dst: Path, entries: dict[str, dict]) -> list[str]:
    """Unlink each source file and link whose verified copy is in `dst` (folders: remove_empty_dirs).

    A source file that changed since it was copied, or whose copy is not in place, is kept and returned."""
    left: list[str] = []
    for rel, entry in reversed(entries.items()):
        if entry["kind"] == "dir":
            continue
        path = src / rel
        if not os.path.lexists(path):
            continue
        if not _dest_matches(dst / rel, entry):
            left.append(rel)
            continue
        if entry["kind"] == "file":
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
                left.append(rel)
                continue
        path.unlink()
        crash_point("removed")
    return left


def remove_empty_dirs(src: Path, entries: dict[str, dict]) -> list[str]:
    """rmdir the planned folders of `src`, deepest first, then `src`; folders still holding files stay."""
    left = []
    for rel, entry in reversed(entries.items()):
        if entry["kind"] == "dir" and (src / rel).is_dir():
            try:
                (src / rel).rmdir()
            except OSError:
                left.append(rel)
    try:
        src.rmdir()
        fsync_dir(src.parent)
    except FileNotFoundError:
        pass
    except OSError:
        left.append(".")
    return left


def rename_tree(src: Path, dst: Path) -> bool:
    """Rename `src` to `dst` (same filesystem: atomic). False when the kernel says they are on different
    filesystems (EXDEV: e.g. two bind mounts of one drive): the caller copies instead."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir() and not any(dst.iterdir()):
        dst.rmdir()
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno == errno.EXDEV:
            return False
        raise
    fsync_dir(dst.parent)
    if src.parent.exists():
        fsync_dir(src.parent)
    return True
