"""The terminal stays quiet: one line per step (its time at the end); SpikeInterface's warnings and bars and
Luigi's summaries go to the step's log, and to the terminal only with --verbose; a failure is one line with
the log's path."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import WISC_SORT
from tests.support.pipeline_world import copy_sorting, edit_drift

pytestmark = pytest.mark.slow
MOTION_STEPS = ("motion", "motion_clean", "motion_plot")  # what a motion edit reruns (cheap: seconds)
NOISE = re.compile(r"\b\w+Warning\b|\d+%\|| it/s|s/it|This progress looks|Scheduled \d+ tasks|Traceback")


def _run(argv: list[str]) -> tuple[int, list[str]]:
    """The terminal as a user sees it: stdout and stderr together."""
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [line for chunk in done.stdout.splitlines() for line in chunk.split("\r") if line.strip()]
    return done.returncode, lines


@pytest.fixture
def sorting_copy(demo_world, first_run, tmp_path):
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(first_run[0], sorting)
    return sorting


def test_default_terminal_is_one_line_per_step_and_verbose_shows_the_rest(demo_world, sorting_copy, tmp_path):
    argv = [WISC_SORT, *demo_world.argv(tmp_path, "--prepro-only")]
    plan_argv = [WISC_SORT, "segments", *demo_world.argv(tmp_path)[1:-3]]  # same inputs, no run flags
    code, plan = _run(plan_argv)
    assert code == 0, plan

    edit_drift(sorting_copy, "estimate_motion_kwargs", bin_s=4.0)
    code, lines = _run(argv)
    assert code == 0, "\n".join(lines)
    assert [line for line in lines if NOISE.search(line)] == []
    for step in MOTION_STEPS:
        done = [line for line in lines if line.startswith(f"{step} DEMO1-Mouse/sorting.imec0: done in ")]
        assert len(done) == 1, lines
    assert len(lines) <= len(plan) + 3 * len(MOTION_STEPS) + 3, "\n".join(lines)
    # What the terminal did not show is in the step's log: SpikeInterface's progress bars.
    assert NOISE.search(sorting_copy.log("motion").read_text(errors="replace"))
    assert "This progress looks" in sorting_copy.log("luigi").read_text()

    edit_drift(sorting_copy, "estimate_motion_kwargs", bin_s=3.0)
    code, loud = _run([*argv, "--verbose"])
    assert code == 0, "\n".join(loud)
    assert any(re.search(r"\d+%\|", line) for line in loud), "\n".join(loud)  # SpikeInterface's tqdm bars
    assert any("This progress looks" in line for line in loud)


def test_a_failed_step_is_one_line_with_its_log(demo_world, sorting_copy, tmp_path):
    # Peak locations that pass the manifest's size check but do not load: motion fails inside its program.
    locations = sorting_copy.preprocessing / "peak_locations.npy"
    locations.write_bytes(np.zeros(locations.stat().st_size, dtype="uint8").tobytes())
    edit_drift(sorting_copy, "estimate_motion_kwargs", bin_s=4.0)
    code, lines = _run([WISC_SORT, *demo_world.argv(tmp_path, "--prepro-only")])
    assert code == 1
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, "\n".join(lines)
    assert "motion" in errors[0] and "ValueError" in errors[0]
    log = Path(errors[0].rsplit("log: ", 1)[1].strip())
    assert log == sorting_copy.log("motion") and "Traceback" in log.read_text()
    assert [line for line in lines if NOISE.search(line)] == []
