"""Two commands on one sorting, from a data folder (no luigi.cfg): one runs, the other says in one line who
holds the sorting (exit 10); a dead holder's lock is taken over; two sortings still run side by side."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tasks.core.locks import BUSY_EXIT_CODE, sorting_lock_path
from tasks.core.manifest import status
from tasks.execution.base import step_lock
from tasks.steps.registry import PREPRO_STEPS
from tests.support.cli import WISC_SORT
from tests.support.cli_world import build_cli_world, contents, snapshot
from tests.support.holders import holder_process, lock_holder_pid
from tests.support.pipeline_world import copy_sorting, edit_drift, wait_until

WISC_ENV = ("WISC_PROJECTS_FILE", "WISC_SUBJECTS_DIR", "WISC_EXCLUSIONS_PROJECT", "WISC_CACHE_FILE")
HOSTILE_CFG = """\
[worker]
keep_alive = false
check_complete_on_run = false
[scheduler]
retry_count = 999999999
"""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (*WISC_ENV, "LUIGI_CONFIG_PATH")}


def data_folder(tmp_path: Path, luigi_cfg: str | None = None) -> Path:
    """Where a user starts the command: not the checkout; no luigi.cfg, or one of their own."""
    folder = tmp_path / "data_folder"
    folder.mkdir()
    if luigi_cfg is not None:
        (folder / "luigi.cfg").write_text(luigi_cfg)
    return folder


def wisc_sort(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [WISC_SORT, *argv], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )


def assert_busy(result: subprocess.CompletedProcess, root: Path, pid: int) -> None:
    """Exit 10, one line: the sorting, the command holding it, its pid, host and since when."""
    assert result.returncode == BUSY_EXIT_CODE, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"sorting {root}" in lines[0] and f"pid {pid} on host {os.uname().nodename} since 20" in lines[0]


# -- the Luigi settings come with the package -------------------------------------------------------------

SHOW_CONFIG = """
import luigi.configuration
import tasks.dag
from tasks.execution.luigi_config import pinned
config = luigi.configuration.get_config()
def show():
    return [config.get(s, k, None) for s, k in
            [("scheduler", "retry_count"), ("worker", "keep_alive"), ("worker", "check_complete_on_run"),
             ("retcode", "task_failed"), ("core", "no_lock")]]
print(show())
with pinned():
    print(show())
print(show())
"""


@pytest.mark.parametrize("luigi_cfg", [None, HOSTILE_CFG], ids=["no_luigi_cfg", "hostile_luigi_cfg"])
def test_luigi_settings_come_with_the_package(tmp_path, luigi_cfg):
    import sys

    folder = data_folder(tmp_path, luigi_cfg)
    out = subprocess.run(
        [sys.executable, "-c", SHOW_CONFIG], cwd=folder, env=clean_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    outside, during, after = (eval(line) for line in out.stdout.splitlines())
    if luigi_cfg is None:  # the shipped defaults, read although the folder has no luigi.cfg
        assert outside == ["1", "true", "true", "30", "false"]
    else:  # a folder's luigi.cfg may change them for its own luigi runs ...
        assert outside == ["999999999", "false", "false", "30", "false"]
    assert during == ["1", "true", "true", "30", "false"]  # ... but wisc-sort runs with these
    assert after == outside


# -- a step held by another process: the command ends at once, from any folder -----------------------------


@pytest.mark.slow
@pytest.mark.parametrize("luigi_cfg", [None, HOSTILE_CFG], ids=["no_luigi_cfg", "hostile_luigi_cfg"])
def test_a_step_held_elsewhere_ends_the_command_at_once(demo_world, first_run, tmp_path, luigi_cfg):
    """The issue's bug: from a data folder the second command slept in Luigi's keep-alive loop (luigi 3.8.1
    resets a task's retry_count to [scheduler]'s 999999999 when it publishes its tracking URL)."""
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(first_run[0], sorting)
    edit_drift(sorting, "clean_motion_kwargs", speed_threshold=3.0)  # a cleaning edit pending
    folder = data_folder(tmp_path, luigi_cfg)
    before = snapshot(sorting.preprocessing)
    with step_lock(sorting, "motion_clean"):  # this test process "runs" motion_clean
        started = time.time()
        result = wisc_sort(demo_world.argv(tmp_path, "--prepro-only"), folder, timeout=120)
        took = time.time() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert took < 90
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"step motion_clean of {sorting.root} is in use by" in errors[0]
    assert f"pid {os.getpid()}" in errors[0]
    # The holder's outputs were not moved away under it.
    assert snapshot(sorting.preprocessing) == before
    assert status(sorting, "motion_clean") == "stale"

    # The `luigi` command (power users) from the same folder: exits 30 ([retcode] task_failed), at once.
    env = {
        **clean_env(),
        "WISC_PROJECTS_FILE": str(tmp_path / "projects.yaml"),
        "WISC_SUBJECTS_DIR": str(demo_world.subjects_dir),
        "WISC_CACHE_FILE": str(tmp_path / "cache.parquet"),
    }
    luigi = Path(WISC_SORT).with_name("luigi")
    params = ["--project", "shared_ssd", "--experiment", "demo_experiment", "--subject", "DEMO1-Mouse"]
    with step_lock(sorting, "motion_clean"):
        result = subprocess.run(
            [luigi, "--module", "tasks.dag", "MotionClean", *params, "--probe", "imec0", "--local-scheduler"],
            cwd=folder, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 30, result.stderr[-2000:]
    assert snapshot(sorting.preprocessing) == before


# -- two `wisc-sort sort` on one sorting: the real command as holder ---------------------------------------


def start_holding(argv: list[str], cwd: Path, root: Path) -> subprocess.Popen:
    """Start `wisc-sort ARGV`; once it holds the sorting's lock, stop it there (SIGSTOP, its whole group)."""
    proc = subprocess.Popen(
        [WISC_SORT, *argv], cwd=cwd, env=clean_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert wait_until(lambda: lock_holder_pid(root) == proc.pid or proc.poll() is not None, 120, 0.01)
    os.killpg(proc.pid, signal.SIGSTOP)
    assert proc.poll() is None
    return proc


@pytest.mark.slow
def test_two_sorts_on_one_sorting_then_a_dead_holder(demo_world, first_run, tmp_path):
    folder = data_folder(tmp_path)
    x_root, y_root = tmp_path / "x", tmp_path / "y"
    x, y = demo_world.sorting(x_root), demo_world.sorting(y_root)
    for sorting in (x, y):  # one cheap step to do: the motion plot
        copy_sorting(first_run[0], sorting)
        sorting.manifest("motion_plot").unlink()
    argv_x = demo_world.argv(x_root, "--prepro-only")

    a = start_holding(argv_x, folder, x.root)
    try:
        x_before = snapshot(x.root)
        b = wisc_sort(argv_x, folder, timeout=120)  # the same command, while A holds the sorting
        assert_busy(b, x.root, a.pid)
        assert snapshot(x.root) == x_before  # B changed nothing

        # Another sorting runs meanwhile, to the end.
        e = wisc_sort(demo_world.argv(y_root, "--prepro-only"), folder)
        assert e.returncode == 0, e.stderr[-2000:]
        assert all(status(y, step) == "done" for step in PREPRO_STEPS)
        assert not sorting_lock_path(y.root).exists()  # released
    finally:
        os.killpg(a.pid, signal.SIGKILL)  # A dies holding the lock, its step program with it
        a.wait()
    assert lock_holder_pid(x.root) == a.pid  # the dead holder's description is still there

    d = wisc_sort(argv_x, folder)
    assert d.returncode == 0, d.stderr[-2000:]
    assert f"took over the lock of wisc-sort sort (pid {a.pid} on host" in d.stdout
    assert all(status(x, step) == "done" for step in PREPRO_STEPS)
    assert not sorting_lock_path(x.root).exists()
    leftovers = [p for p in x.root.rglob("*") if ".wisc-tmp-" in p.name or "-luigi-tmp-" in p.name]
    assert leftovers == []


# -- two postpro, two finalize: the sorting's lock, held by another process ---------------------------------


@pytest.fixture
def cli_world(tmp_path):
    return build_cli_world(tmp_path / "world")


def postpro_argv(world, probe: str = "imec0") -> list[str]:
    return world.argv("postpro", "--postpro", "postpro_demo", probe=probe)


def finalize_argv(world, probe: str = "imec0") -> list[str]:
    return world.argv("finalize", "--postpro", "postpro_demo", probe=probe)


@pytest.mark.parametrize("argv", [postpro_argv, finalize_argv], ids=["postpro", "finalize"])
def test_postpro_and_finalize_say_who_holds_the_sorting(cli_world, tmp_path, argv):
    folder = data_folder(tmp_path)
    imec0, imec1 = cli_world.sorting_dir(probe="imec0"), cli_world.sorting_dir(probe="imec1")
    before = contents(cli_world.root)
    with holder_process(imec0) as holder:
        held = contents(cli_world.root)
        assert_busy(wisc_sort(argv(cli_world), folder, timeout=60), imec0, holder.pid)
        assert contents(cli_world.root) == held  # nothing written
        # Another sorting of the same subject is not held: that command gets past the lock (and stops at
        # its own first check: no postprocessing set yet / nothing to finalize).
        other = wisc_sort(argv(cli_world, "imec1"), folder, timeout=60)
        assert other.returncode == 2 and str(imec1) in other.stderr and "in use by" not in other.stderr
        os.kill(holder.pid, signal.SIGKILL)  # the holder dies without releasing
        holder.wait()
    taken = wisc_sort(argv(cli_world), folder, timeout=60)
    assert taken.returncode == 2, taken.stderr  # past the lock, to the command's own first check
    (line,) = taken.stderr.strip().splitlines()  # the command's own one-line refusal, nothing else
    if argv is postpro_argv:  # sort and postpro note it among what they print; finalize resumes quietly
        assert f"took over the lock of -c {imec0} (pid {holder.pid} on host" in taken.stdout
    assert contents(cli_world.root) == before  # the lock file and the folders made for it are gone
