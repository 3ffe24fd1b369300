"""A drive that fills while recording.dat is written (a real tmpfs; another process takes the space after the
free-disk preflight passed): one line naming the drive and the bytes missing, no partial output taken as done,
earlier outputs intact, and the same command completes once space is freed."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tasks.core.manifest import status
from tasks.steps.registry import PREPRO_STEPS
from tests.support.cli import WISC_SORT
from tests.support.disks import mounted_tmpfs, start_filler
from tests.support.finalize_world import snapshot
from tests.support.pipeline_world import copy_sorting

pytestmark = pytest.mark.slow

# recording.dat of the session's demo world (15 s kept x 385 channels, 330 MiB) plus the preflight's 64 MiB
# margin fits; what the sort writes after it too.
DRIVE_MIB = 800


def test_drive_fills_while_recording_dat_is_written(demo_world, first_run, tmp_path, no_reserve) -> None:
    root = tmp_path / "root"
    with mounted_tmpfs(root / "ssd", DRIVE_MIB) as drive:
        sorting = demo_world.sorting(root)
        copy_sorting(first_run[0], sorting)
        opts = yaml.safe_load(sorting.opts.read_text())  # a quicker sort: the drive is under test here
        opts["sorting"]["sorter_params"] = {"seed": 0, "clustering_recursive_depth": 1}
        sorting.opts.write_text(yaml.safe_dump(opts, sort_keys=False))
        earlier = snapshot(sorting.root)
        argv = [WISC_SORT, *demo_world.argv(root, n_jobs=1)]
        filler = start_filler(sorting.sorter_output, "recording.wisc-tmp-*", drive / "filler.bin")
        failed = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        assert filler.wait(timeout=60) == 0, "the filler never saw recording.dat being written"
        assert int(filler.stdout.read()) > 0

        assert failed.returncode == 1, failed.stderr[-2000:]
        last = failed.stderr.strip().splitlines()[-1]
        assert re.search(
            rf"^wisc-sort: error: RecordingDat failed: .*: {re.escape(str(drive))}: drive full while writing "
            rf"{re.escape(str(sorting.sorter_output))}/recording.dat: [\d.]+ [KMG]iB missing \(",
            last,
        ), last
        assert "free space and run the same command again" in last
        assert "Traceback" not in failed.stderr + failed.stdout
        # The partial output is gone and never taken as done; what earlier steps made is untouched.
        assert status(sorting, "recording_dat") == "missing"
        assert not sorting.sorter_output.exists() or list(sorting.sorter_output.iterdir()) == []
        assert all(status(sorting, step) == "done" for step in PREPRO_STEPS)
        now = snapshot(sorting.root)
        assert {rel: now.get(rel) for rel in earlier if _output(rel)} == {
            rel: digest for rel, digest in earlier.items() if _output(rel)
        }
        assert {step: now[f".pipeline/{step}.json"] for step in PREPRO_STEPS} == {
            step: earlier[f".pipeline/{step}.json"] for step in PREPRO_STEPS
        }

        (drive / "filler.bin").unlink()
        resumed = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert status(sorting, "recording_dat") == "done" and status(sorting, "sort") == "done"


def _output(rel: str) -> bool:
    """Outputs, not the records of runs (.pipeline/) nor their view (report.html, rewritten each step)."""
    return not rel.startswith(".pipeline/") and rel != "report.html"
