"""Test-only Luigi tasks: a stand-in sorter that holds its GPU slot for a few seconds and stamps its run."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import luigi

from tasks.execution.gpu import GpuTaskMixin, gpu_resource_name, gpu_units

# Kept hours that put a stand-in on either side of the default 6 h chronic threshold.
KEPT_HOURS = {"chronic": 24.0, "acute": 1.5}
STAMPS = "stamps.jsonl"


def append_stamp(out_dir: Path, **stamp: object) -> None:
    """One JSON line per event, appended under an exclusive lock (workers are separate processes)."""
    with (out_dir / STAMPS).open("a") as stamps:
        fcntl.flock(stamps, fcntl.LOCK_EX)
        stamps.write(json.dumps({"t": time.time(), "pid": os.getpid(), **stamp}) + "\n")


def read_stamps(out_dir: Path) -> list[dict]:
    path = out_dir / STAMPS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class StandInSortHoldsGpu(GpuTaskMixin, luigi.Task):
    """A stand-in sorter that holds its slot for a few seconds: kilosort2_5's units, no real work."""

    name = luigi.Parameter()
    recording = luigi.ChoiceParameter(choices=list(KEPT_HOURS))
    out_dir = luigi.Parameter()
    hold_s = luigi.FloatParameter(default=3.0, significant=False)

    def gpu_units_needed(self) -> int:
        return gpu_units("kilosort2_5", KEPT_HOURS[self.recording])

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Path(self.out_dir) / f"{self.name}.done"))

    def run(self) -> None:
        out_dir, units = Path(self.out_dir), self.gpu_units_needed()
        # Stamped from run() entry to exit, inside the time luigid counts the task RUNNING.
        common = {"task": self.name, "units": units, "resource": gpu_resource_name()}
        append_stamp(out_dir, event="start", **common)
        with self.gpu_lease(poll_s=0.2) as lease:
            append_stamp(out_dir, event="leased", device=lease.device_id, **common)
            time.sleep(self.hold_s)
        with self.output().open("w") as done:
            done.write(f"{lease.device_id}\n")
        append_stamp(out_dir, event="end", **common)


class StandInSortBatch(luigi.WrapperTask):
    """Stand-in sorts, `sorts` = "name:chronic,name:acute,..."; `submitter` keeps each root distinct."""

    sorts = luigi.Parameter()
    out_dir = luigi.Parameter()
    submitter = luigi.IntParameter(default=0)
    hold_s = luigi.FloatParameter(default=3.0, significant=False)

    def requires(self) -> list[StandInSortHoldsGpu]:
        pairs = [item.split(":") for item in self.sorts.split(",")]
        return [
            StandInSortHoldsGpu(name=name, recording=kind, out_dir=self.out_dir, hold_s=self.hold_s)
            for name, kind in pairs
        ]
