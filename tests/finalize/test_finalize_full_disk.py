"""The destination drive fills while finalize copies the sorting (a real tmpfs; another process takes the
space after the room check passed): one line naming the drive and the bytes missing, no partial copy taken
as done, the source intact, and the same command completes once space is freed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tasks.finalize.finalize import JOURNAL_REL, finalize_state, read_journal
from tests.support.cli import WISC_SORT
from tests.support.disks import mounted_tmpfs, start_filler
from tests.support.finalize_world import PARAMS, RECORDING_DAT, MiB, build_sorting, make_world, snapshot

DRIVE_MIB = 64


def test_drive_fills_while_finalize_copies(tmp_path: Path, no_reserve) -> None:
    with mounted_tmpfs(tmp_path / "shared", DRIVE_MIB) as drive:
        world = make_world(tmp_path / "cfg", tmp_path / "ssd" / "proj", drive / "proj")
        src, dst = world.source().root, world.destination().root
        build_sorting(world.source(), big_files=20, big_bytes=2 * MiB, n_plots=40)  # ~41 MiB to copy
        before = snapshot(src)
        filler = start_filler(drive / "proj", "*", drive / "filler.bin", timeout_s=120)
        failed = subprocess.run([WISC_SORT, *world.argv()], capture_output=True, text=True, timeout=300)
        assert filler.wait(timeout=60) == 0 and int(filler.stdout.read()) > 0

        assert failed.returncode == 2, failed.stdout[-1000:] + failed.stderr[-2000:]
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in failed.stdout, failed.stderr
        assert re.fullmatch(
            rf"wisc-sort: error: {re.escape(str(drive))}: drive full while copying {re.escape(str(src))} to "
            rf"{re.escape(str(dst))}: [\d.]+ [KMG]iB missing \(.*\); "
            "free space and run the same command again",
            lines[0],
        ), lines[0]
        # Not finalized; no hidden partial copy under a final name; the source keeps every file.
        assert finalize_state(dst) == "" and read_journal(src)["phase"] == "copying"
        assert not list(dst.rglob(".wisc-move-*"))
        after = snapshot(src)
        changed = {rel for rel in before if after.get(rel) != before[rel]}
        assert changed == {RECORDING_DAT, PARAMS, ".pipeline/sort.json"}  # finalize's own first changes
        copied = {rel: digest for rel, digest in snapshot(dst).items() if digest != "dir"}
        assert copied and all(after[rel] == digest for rel, digest in copied.items())

        (drive / "filler.bin").unlink()
        resumed = subprocess.run([WISC_SORT, *world.argv()], capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert finalize_state(dst) == "finalized" and not src.exists()
        final = snapshot(dst)
        for rel, digest in after.items():
            if rel != JOURNAL_REL:
                assert final[rel] == digest, rel
