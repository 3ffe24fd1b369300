"""The slurm executor against a real one-node SLURM (tests/support/slurm.py: slurmctld + slurmd here, 2 CPUs,
a fake GPU with 3 shards): the demo's steps as SLURM jobs, a killed worker, a failing step, shard limits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import luigi
import numpy as np
import pytest

from tasks.core.layout import SortingDir
from tasks.core.manifest import read_manifest, status
from tasks.steps import pipeline, registry
from tests.support.luigid import luigid_factory_fixture  # noqa: F401
from tests.support.ops_world import tasks_by_family
from tests.support.pipeline_world import copy_sorting, wait_until
from tests.support.plugins import installed_step_plugin
from tests.support.slurm import SHARDS, slurm  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def slurm_env(slurm, monkeypatch):  # noqa: F811
    """Small jobs that fit the test node (4000 MB), polled every half second."""
    for key, value in {
        "POLL_S": "0.5",
        "MEM_GB": "0.5",
        "MEM_GB_PER_HOUR": "0",
        "MIN_TIME_MINUTES": "10",
    }.items():
        monkeypatch.setenv(f"WISC_SLURM_{key}", value)
    return slurm


def _job_ids(sorting: SortingDir, steps: list[str]) -> dict[str, str]:
    return {step: read_manifest(sorting, step)["slurm_job_id"] for step in steps}


def assert_same_outputs(local: SortingDir, ours: SortingDir, steps: list[str]) -> None:
    """Every output of these steps equal (floats to rounding; recording.dat and the probe byte for byte)."""
    for step in steps:
        for rel in registry.STEPS[step].outputs:
            a, b = local.path(rel), ours.path(rel)
            if rel.endswith((".npy", ".npz")):
                x, y = np.load(a), np.load(b)
                pairs = [(k, x[k], y[k]) for k in x.files] if rel.endswith(".npz") else [("", x, y)]
                for key, u, v in pairs:
                    assert u.dtype == v.dtype and u.shape == v.shape, f"{rel}:{key}"
                    for name in u.dtype.names or [None]:
                        p, q = (u[name], v[name]) if name else (u, v)
                        if p.dtype.kind in "fc":
                            np.testing.assert_allclose(
                                p, q, rtol=1e-4, atol=1e-3, err_msg=f"{rel}:{key}:{name}"
                            )
                        else:
                            assert np.array_equal(p, q), f"{rel}:{key}:{name}"
            elif not rel.endswith(".png"):
                assert a.read_bytes() == b.read_bytes(), rel


def assert_same_spikes(local: SortingDir, ours: SortingDir) -> None:
    """tridesclous2 is not bit-reproducible from run to run (its clustering): on the same recording.dat, the
    same number of spikes, and nearly all at the same samples."""
    folder = "si_output/sorter_output/"
    a, b = (np.sort(np.load(s.path(folder + "spike_times.npy")).ravel()) for s in (local, ours))
    assert abs(len(a) - len(b)) <= 0.05 * len(a), (len(a), len(b))
    nearest = np.searchsorted(b, a).clip(1, len(b) - 1)
    offset = np.minimum(abs(b[nearest] - a), abs(b[nearest - 1] - a))
    assert (offset <= 2).mean() > 0.95


def test_demo_steps_through_slurm_equal_local_ones(slurm_env, sorted_run, demo_world, first_run, tmp_path):
    """The whole demo (preprocessing, recording.dat, the tridesclous2 sort) as SLURM jobs; outputs equal the
    local executor's, each manifest names its job and node, and SLURM says every job completed."""
    cluster = slurm_env
    assert demo_world.run(tmp_path, "--opts", str(first_run[1]), "--executor", "slurm") == 0
    ours, local = demo_world.sorting(tmp_path), sorted_run
    steps = [step for step in registry.STEPS if local.manifest(step).exists()]
    assert "sort" in steps and "recording_dat" in steps
    jobs = _job_ids(ours, steps)
    for step in steps:
        assert read_manifest(ours, step)["slurm_node"] == cluster.host, step
        assert status(ours, step) == "done"
    assert_same_outputs(local, ours, [step for step in steps if step != "sort"])
    assert_same_spikes(local, ours)
    ended = cluster.states(list(jobs.values()))
    assert all(ended[job] == ("COMPLETED", "0:0") for job in jobs.values()), ended
    assert "submitted as SLURM job" in ours.log("sort").read_text()
    assert not cluster.queue()


def test_killed_worker_leaves_no_job_in_squeue(slurm_env, demo_world, first_run, tmp_path):
    cluster = slurm_env
    argv = [str(Path(sys.executable).with_name("wisc-sort"))] + demo_world.argv(
        tmp_path, "--opts", str(first_run[1]), "--prepro-only", "--executor", "slurm"
    )
    sorting = demo_world.sorting(tmp_path)
    worker = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not cluster.queue("RUNNING"):
            assert worker.poll() is None, "the run ended before any job started"
            assert time.time() < deadline, "no job ran within 120 s"
            time.sleep(0.2)
        time.sleep(1.0)  # mid-step
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    assert wait_until(lambda: not cluster.queue(), 30, 0.3), (
        f"jobs outlived their killed worker: {cluster.queue()}"
    )
    assert status(sorting, "peaks") in ("missing", "partial")  # never looks done


def test_failing_step_exit_code_comes_back(slurm_env, first_run, tmp_path, monkeypatch):
    """recording_dat refuses (a disk reserve larger than any disk: exit 2) in its job: the step fails with
    that code, SLURM recorded it, the refusal is in the step's log and nothing was written."""
    from tasks.execution.executors import StepFailed
    from tasks.execution.slurm import SlurmExecutor

    sorting = SortingDir(tmp_path / "sorting.imec0")
    copy_sorting(first_run[0], sorting)
    monkeypatch.setenv("WISC_DISK_RESERVE_GB", str(10**9))
    with pytest.raises(StepFailed, match=r"\(exit 2\)"):
        SlurmExecutor().run("recording_dat", sorting, 1)
    log = sorting.log("recording_dat").read_text()
    assert "needs" in log and "(reserve " in log, log[-2000:]
    job = log.split("submitted as SLURM job ")[1].split()[0]
    assert slurm_env.states([job])[job] == ("FAILED", "2:0")
    assert not sorting.path(registry.STEPS["recording_dat"].outputs[0]).exists()


STANDIN_DECLARATION = """from tasks.steps.registry import Step

STEP = Step("standin_gpu_sort", ("standin/done.txt",), lambda o: ("segments",), description="stand-in sort",
            module="wisc_standin.sort", kind="gpu", phase="standin")
"""
STANDIN_MODULE = '''"""Stand-in GPU sort: holds its SLURM shards a few seconds, writes what SLURM gave it."""
import os
import time


def run(ctx):
    time.sleep(4.0)
    folder = ctx.sorting.root / "standin"
    folder.mkdir(exist_ok=True)
    given = [os.environ.get(name, "") for name in ("SLURM_SHARDS_ON_NODE", "CUDA_VISIBLE_DEVICES")]
    (folder / "done.txt").write_text(" ".join(given))
'''
CONTROL = ("sbatch", "--parsable", "--oversubscribe", "--mem=100M")
KEPT_HOURS = {"S_chronic": 24.0, "S_acute1": 1.5, "S_acute2": 1.5}


@pytest.fixture
def standin_sort(tmp_path, monkeypatch):
    """A plugin step of the sort's kind (SortTask: GPU units by recording class), run as a stand-in program:
    no real sort can ask for a GPU here."""
    modules = {"declare": STANDIN_DECLARATION, "sort": STANDIN_MODULE}
    with installed_step_plugin(tmp_path, monkeypatch, "wisc_standin", "standin_gpu_sort", modules):
        yield pipeline.task_class("standin_gpu_sort")


def _standin_sorting(root: Path, subject: str) -> SortingDir:
    sorting = SortingDir.locate(root, "exp", "full", subject, "imec0")
    sorting.root.mkdir(parents=True)
    sorting.opts.write_text("preprocessing: []\nsorting:\n  sorter_name: kilosort2_5\n")
    samples = int(KEPT_HOURS[subject] * 3600 * 30000)
    sorting.segments.write_text(f"fname\ttype\tnSegmentSamp\timSampRate\nf\tkeep\t{samples}\t30000\n")
    return sorting


def test_three_sorts_of_2_1_1_fake_gpu_shards_never_run_over_3_at_once(
    slurm_env, standin_sort, luigid_factory, tmp_path, monkeypatch
):
    """A chronic sort (2 shards) and two acute ones (1 each) on the fake GPU's 3 shards. luigid caps gpu and
    cpu at 1 here: under SLURM the tasks ask luigid for neither, so all three are submitted at once and
    SLURM alone admits them (sacct's start/end times), while luigid shows the held one "queued in SLURM".
    A control run of three jobs without shards runs all three together: the CPUs never were the limit."""
    cluster = slurm_env
    monkeypatch.setenv("WISC_SLURM_SBATCH_OPTIONS", "--oversubscribe")  # share the 2 CPUs; never the GRES
    projects = tmp_path / "projects.yaml"
    projects.write_text(f"project: ssd\nproject_directory: {tmp_path / 'ssd'}\n...\n")
    monkeypatch.setenv("WISC_PROJECTS_FILE", str(projects))
    sortings = {subject: _standin_sorting(tmp_path / "ssd", subject) for subject in KEPT_HOURS}
    server = luigid_factory({"gpu": 1, "cpu": 1})
    tasks = [
        standin_sort(project="ssd", experiment="exp", subject=subject, probe="imec0", executor="slurm")
        for subject in KEPT_HOURS
    ]
    assert [task.gpu_units_needed() for task in tasks] == [2, 1, 1]
    assert all(task.resources == {} for task in tasks)
    messages: set[str] = set()
    building = threading.Event()

    def watch() -> None:  # luigi.build needs the main thread (signal handlers): luigid is polled here
        while building.is_set():
            for task in tasks_by_family(server).get(standin_sort.__name__, []):
                messages.add(task["status_message"] or "")
            time.sleep(0.3)

    building.set()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert luigi.build(tasks, workers=3, scheduler_url=server.url, log_level="WARNING")
    finally:
        building.clear()
        watcher.join()
    jobs = {subject: read_manifest(sorting, "standin_gpu_sort") for subject, sorting in sortings.items()}
    assert [jobs[s]["lease_gpu_units"] for s in KEPT_HOURS] == ["2", "1", "1"]
    assert all(j["cuda_visible_devices"] == "0" for j in jobs.values())  # SLURM's GPU, not a host lease
    for subject, sorting in sortings.items():  # what SLURM handed each job
        assert sorting.path("standin/done.txt").read_text().split()[0] == jobs[subject]["lease_gpu_units"]
    ids = {subject: j["slurm_job_id"] for subject, j in jobs.items()}
    times = cluster.intervals(list(ids.values()))
    units = {ids[s]: int(jobs[s]["lease_gpu_units"]) for s in KEPT_HOURS}
    assert _peak(times, units) == SHARDS
    assert (
        max(start for start, _ in times.values()) >= min(end for _, end in times.values()) - 1
    )  # one waited
    held = [m for m in messages if m.startswith("queued in SLURM as job ") and m.endswith("(Resources)")]
    assert held, messages

    control = [
        cluster.command(*CONTROL, f"--chdir={tmp_path}", "--output=/dev/null", "--wrap", "sleep 4").strip()
        for _ in range(3)
    ]
    assert wait_until(lambda: not cluster.queue(), 60, 0.3)
    assert _peak(cluster.intervals(control), dict.fromkeys(control, 1)) == 3


def _peak(times: dict[str, tuple[float, float]], units: dict[str, int]) -> int:
    """Most units running at once; a job ending at the second another starts does not overlap it."""
    events = sorted((t, sign * units[job]) for job, (s, e) in times.items() for t, sign in ((s, 1), (e, -1)))
    peak = level = 0
    for _, change in events:  # ends (-) sort before starts (+) at the same second
        level += change
        peak = max(peak, level)
    return peak
