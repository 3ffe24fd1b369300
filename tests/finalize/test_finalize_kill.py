"""Finalize across two real filesystems (tmpfs), SIGKILLed at random points (seeded) at least 24 times while a
second process checks that every file is complete in the source or the destination; every rerun resumes and
the last completes; the final tree equals the source tree file by file (minus recording.dat)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.finalize.finalize import JOURNAL_REL, finalize_state, read_journal
from tasks.phy.params import check_params
from tests.support.disks import mounted_tmpfs
from tests.support.finalize_world import (
    CURATED,
    METRICS,
    PARAMS,
    RECORDING_DAT,
    MiB,
    build_sorting,
    make_world,
    snapshot,
)

REPO = Path(__file__).resolve().parents[2]
CHECKER = Path(__file__).parents[1] / "support" / "finalize_checker.py"
MIN_KILLS = 40
SEED = 20240611
REWRITTEN = {PARAMS: "params", ".pipeline/sort.json": "json"}


LAUNCHER = """
import os, sys, tqdm, tasks.steps.finalize
from tasks.commands.cli import main
argv = sys.argv[1:]
print("ready", flush=True)
for line in sys.stdin:  # one finalize per line, forked from this process whose imports are done
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        sys.stdout = open(os.devnull, "w")  # this pipe carries pids and exit codes only
        code = main(argv)
        sys.stdout.flush()
        os._exit(code)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


class Launcher:
    """Runs `wisc-sort finalize` in forked children of one warm process, so that a run starts in
    milliseconds and a SIGKILL can land anywhere in it."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "WISC_DISK_RESERVE_GB": "0"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, text=True,
        )  # fmt: skip
        assert self.proc.stdout.readline() == "ready\n"

    def run(self, kill_after: float | None) -> int:
        """One finalize; SIGKILLed after `kill_after` seconds unless it exits first. Returns its exit code."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        pid = int(self.proc.stdout.readline())
        if kill_after is not None:
            time.sleep(kill_after)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def phase_now(world) -> str:
    journal = read_journal(world.destination().root) or read_journal(world.source().root)
    return journal["phase"] if journal else "no journal"


def one_round(
    world, launcher, rng: random.Random, work_s: float, seed: int, tmp: Path
) -> tuple[int, list[str]]:
    """Build a fresh sorting, finalize it under random SIGKILLs until a run completes; check everything."""
    build_sorting(world.source(), dat_bytes=2 * MiB, big_files=8, big_bytes=2 * MiB, n_plots=40, seed=seed)
    src, dst = world.source().root, world.destination().root
    before = snapshot(src)
    watch = {rel: REWRITTEN.get(rel, digest) for rel, digest in before.items() if digest != "dir"}
    watch.pop(RECORDING_DAT)
    (tmp / "watch.json").write_text(json.dumps(watch))
    stop, result = tmp / f"stop{seed}", tmp / f"result{seed}.json"
    checker = subprocess.Popen(
        [sys.executable, str(CHECKER), str(tmp / "watch.json"), str(src), str(dst), str(stop), str(result)]
    )
    kills, phases = 0, []
    for _ in range(500):
        code = launcher.run(rng.uniform(0.0, 1.1 * work_s))
        if code == 0:
            break
        assert code == -signal.SIGKILL, f"a resumed finalize exited {code}"
        phase = phase_now(world)
        phases.append(phase)
        kills += phase != "done"  # a kill after the journal says done is not inside the move
    else:
        pytest.fail("finalize did not complete in 500 runs")
    assert launcher.run(None) == 0  # and a rerun of a finalized sorting is a no-op
    stop.touch()
    checker.wait(timeout=60)
    report = json.loads(result.read_text())
    assert report["violations"] == [] and report["polls"] > 0

    after = snapshot(dst)
    assert after.pop(JOURNAL_REL) and after.pop("postpro") == "link:postpro_chronic_df"
    expected = {rel: digest for rel, digest in before.items() if rel != RECORDING_DAT}
    for rel in REWRITTEN:
        after.pop(rel), expected.pop(rel)
    assert after.pop("report.html")  # rewritten in the new home once the move is done
    after.pop(".pipeline/report.cache.json", None)
    assert after == expected  # file by file, by content hash
    assert all(after[rel] == before[rel] for rel in (*CURATED, METRICS))
    assert not src.exists() and finalize_state(dst) == "finalized"
    assert check_params(dst / PARAMS).endswith("deleted (noted in params.py)")
    print(f"round {seed}: {kills} kills, polls {report['polls']}, killed in phases {sorted(set(phases))}")
    return kills, phases


def test_sigkill_at_random_points_of_the_move(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    with mounted_tmpfs(tmp_path / "ssd", 64), mounted_tmpfs(tmp_path / "shared", 64):
        world = make_world(tmp_path / "cfg", tmp_path / "ssd" / "proj", tmp_path / "shared" / "proj")
        launcher = Launcher(world.argv())
        # Calibrate: how long an uninterrupted finalize of this tree takes until its journal says done.
        build_sorting(world.source(), dat_bytes=2 * MiB, big_files=8, big_bytes=2 * MiB, n_plots=40, seed=0)
        started = time.monotonic()
        launcher.proc.stdin.write("go\n")
        launcher.proc.stdin.flush()
        launcher.proc.stdout.readline()
        while finalize_state(world.destination().root) != "finalized":
            time.sleep(0.001)
        work_s = time.monotonic() - started
        assert int(launcher.proc.stdout.readline()) == 0
        subprocess.run(["rm", "-rf", str(world.shared)], check=True)

        started = time.monotonic()
        total, all_phases, rounds = 0, [], 0
        while total < MIN_KILLS:
            rounds += 1
            kills, phases = one_round(world, launcher, rng, work_s, rounds, tmp_path)
            total += kills
            all_phases += phases
            subprocess.run(["rm", "-rf", str(world.shared)], check=True)
        counts = {p: all_phases.count(p) for p in sorted(set(all_phases))}
        print(
            f"kill test: {total} SIGKILLs over {rounds} rounds, {total} resumes, one uninterrupted run "
            f"{work_s:.3f} s, {time.monotonic() - started:.1f} s in all; killed in phases {counts}"
        )
        launcher.close()
        assert total >= MIN_KILLS
        assert counts.get("copying", 0) >= 1  # kills landed inside the copy, not only around it
