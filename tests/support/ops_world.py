"""Test helpers for the operations tests: `wisc-sort scheduler` as a subprocess, the pipeline through it,
and a stand-in GPU sort that reports batches like a sorter does (no GPU here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest

from tasks.execution.gpu import GpuTaskMixin, gpu_units
from tests.support.luigid import REPO, Luigid, free_port, wait_until_answering

BIN = Path(sys.executable).parent
KEPT_HOURS = {"chronic": 24.0, "acute": 1.5}


def scheduler_env(**settings: object) -> dict[str, str]:
    """Environment for `wisc-sort scheduler` and its clients: one GPU ("0"), settings as WISC_SCHEDULER_*."""
    env = {**os.environ, "WISC_GPU_DEVICES": "0", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env.update({f"WISC_SCHEDULER_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def start_scheduler(tmp_path: Path, **settings: object) -> Luigid:
    """`wisc-sort scheduler` on a free loopback port, run from a folder without luigi.cfg."""
    home = tmp_path / "scheduler"
    home.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), home / "scheduler.out"
    command = [str(BIN / "wisc-sort"), "scheduler", "--port", str(port), "--state-dir", str(home / "state")]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=home, env=scheduler_env(**settings), stdout=out, stderr=subprocess.STDOUT
        )
    server = Luigid(f"http://127.0.0.1:{port}", home / "state" / "luigid.cfg", log, process)
    return wait_until_answering(server, "wisc-sort scheduler")


@pytest.fixture(name="scheduler_factory")
def scheduler_factory_fixture(tmp_path: Path) -> Iterator:
    """Fixture `scheduler_factory`: `start(**settings)` -> a running `wisc-sort scheduler`, stopped after."""
    started: list[Luigid] = []

    def start(**settings: object) -> Luigid:
        started.append(start_scheduler(tmp_path, **settings))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def sort_argv(demo_world, root: Path, url: str, *extra: str) -> list[str]:
    """`wisc-sort sort ... --scheduler-url URL` for the demo world (its argv without --local-scheduler)."""
    argv = [a for a in demo_world.argv(root, *extra, n_jobs=1) if a != "--local-scheduler"]
    return [str(BIN / "wisc-sort"), *argv, "--scheduler-url", url]


def tasks_by_family(server: Luigid, status: str = "") -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for task in server.api("task_list", status=status, upstream_status="").values():
        found.setdefault(task["name"], []).append(task)
    return found


class StandInGpuSortReportsBatches(GpuTaskMixin, luigi.Task):
    """Stand-in for a GPU sorter (no GPU here): holds its units and reports "sorting: batch k/N"."""

    name = luigi.Parameter()
    recording = luigi.ChoiceParameter(choices=list(KEPT_HOURS))
    out_dir = luigi.Parameter()
    batches = luigi.IntParameter(default=40)
    batch_s = luigi.FloatParameter(default=1.0, significant=False)

    def gpu_units_needed(self) -> int:
        return gpu_units("kilosort2_5", KEPT_HOURS[self.recording])

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Path(self.out_dir) / f"{self.name}.done"))

    def run(self) -> None:
        with self.gpu_lease(poll_s=0.2) as lease:
            for batch in range(1, self.batches + 1):
                time.sleep(self.batch_s)
                self.set_progress_percentage(round(100 * batch / self.batches))
                self.set_status_message(
                    f"sorting: batch {batch}/{self.batches} (stand-in, GPU {lease.device_id})"
                )
        with self.output().open("w") as done:
            done.write("stand-in\n")
