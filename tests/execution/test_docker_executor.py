"""The docker executor on a real Docker engine with the CPU variant of Dockerfile.si, built for real.

Skipped where no engine answers, except in CI (CI=true), where .ci/run starts dockerd: there a missing
engine fails the run instead of silently skipping the containers issue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.core.layout import SortingDir
from tasks.core.manifest import read_manifest, status
from tasks.steps.registry import PREPRO_STEPS, STEPS
from tests.support.pipeline_world import EXPERIMENT, REPO, SUBJECT, copy_sorting, wait_until

pytestmark = pytest.mark.slow

BASE_IMAGE = os.environ.get("WISC_TEST_BASE_IMAGE", "wisc-base:bookworm")
WHEELS = Path(os.environ.get("WISC_TEST_WHEELS", "/opt/wheels"))
TEST_UID = 4321  # not root, not in /etc/passwd: the container must still run as it


def _engine():
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception as err:  # no engine: any of the SDK's connection errors
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a Docker engine (.ci/run starts dockerd): {err}")
        pytest.skip(f"no Docker engine answers here ({err.__class__.__name__})")


@pytest.fixture(scope="session")
def si_image() -> str:
    """The CPU variant of Dockerfile.si, built through `wisc-sort images build` (cached layers after once)."""
    from tasks.commands.cli import main
    from tasks.execution.images import image_name

    client = _engine()
    if not client.images.list(name=BASE_IMAGE):
        assert main(["images", "base", "--name", BASE_IMAGE]) == 0
    torch = ["--wheels", str(WHEELS)] if list(WHEELS.glob("torch-*+cpu-*.whl")) else ["--no-torch"]
    argv = ["images", "build", "si", "--variant", "cpu", "--base-image", BASE_IMAGE, *torch]
    assert main(argv) == 0
    return image_name("si")


def _containers(label: str) -> list:
    return _engine().containers.list(all=True, filters={"label": label})


def test_motion_steps_in_docker_equal_local_ones(si_image, first_run, demo_world, tmp_path):
    local, opts = first_run
    assert demo_world.run(tmp_path, "--opts", str(opts), "--prepro-only", "--executor", "docker") == 0
    ours = demo_world.sorting(tmp_path)
    image_id = _engine().images.get(si_image).id
    for step in PREPRO_STEPS:
        manifest = read_manifest(ours, step)
        assert manifest["environment"] == f"docker:{image_id}", step
        assert manifest["image"] == f"{si_image}@{image_id}"
        assert status(ours, step, f"docker:{image_id}") == "done"
        for rel in STEPS[step].outputs:
            assert ours.path(rel).stat().st_uid == os.getuid()
    for name in ("peaks.npy", "peak_locations.npy"):
        a, b = np.load(local.preprocessing / name), np.load(ours.preprocessing / name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        for field in a.dtype.names:
            np.testing.assert_allclose(a[field], b[field], rtol=1e-5, atol=1e-4, err_msg=f"{name}:{field}")
    for name in ("motion_non_rigid.npz", "motion_non_rigid_clean.npz"):
        a, b = np.load(local.preprocessing / name), np.load(ours.preprocessing / name)
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            if a[key].dtype.kind in "fc":
                np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-3, err_msg=f"{name}:{key}")
            else:
                assert np.array_equal(a[key], b[key]), f"{name}:{key}"
    assert json.loads(local.path("preprocessed_si_probe.json").read_text()) == json.loads(
        ours.path("preprocessed_si_probe.json").read_text()
    )
    assert not _containers(f"wisc-sorting.sorting={ours.root}")  # every container removed after its step
    # The same outputs under another image would be stale; the local executor accepts them as they are.
    assert status(ours, "motion", "docker:sha256:another") == "stale"
    assert status(ours, "motion") == "done"


def test_container_writes_as_the_given_user_and_cannot_write_raw_data(si_image, first_run, tmp_path):
    """The executor passes the invoking uid:gid; here root invokes, so a test uid stands in for a user
    (a non-root process could not run this venv's interpreter, which lives under /root)."""
    from tasks.execution.docker import DockerExecutor

    assert DockerExecutor().user == f"{os.getuid()}:{os.getgid()}"
    local, _ = first_run
    sorting = SortingDir(tmp_path / "sorting.imec0")
    copy_sorting(local, sorting)
    step = "motion_plot"
    sorting.path(STEPS[step].outputs[0]).unlink()
    for path in [sorting.root, *sorting.root.rglob("*")]:
        os.chown(path, TEST_UID, TEST_UID)
    executor = DockerExecutor(user=f"{TEST_UID}:{TEST_UID}")
    raw = str(Path(_raw_path(sorting)).parent)
    volumes = executor.volumes(sorting)
    assert volumes[raw] == {"bind": raw, "mode": "ro"} and volumes[str(sorting.root)]["mode"] == "rw"
    log = tmp_path / "raw-write.log"
    with open(log, "wb") as sink:
        code = executor.run_container(
            si_image, ["-c", f"open({raw!r} + '/written-by-a-step', 'w')"], f"wisc-test-raw-{os.getpid()}",
            {}, [sink], volumes, entrypoint=["python"],
        )  # fmt: skip
    assert code != 0 and "Read-only file system" in log.read_text()
    assert not Path(raw, "written-by-a-step").exists()
    executor.run(step, sorting, 1)
    made = [sorting.path(rel) for rel in STEPS[step].outputs] + [sorting.manifest(step)]
    assert all(path.stat().st_uid == TEST_UID for path in made), [(p, p.stat().st_uid) for p in made]
    assert status(sorting, step) == "done"


def _raw_path(sorting: SortingDir) -> str:
    import pandas as pd

    return pd.read_csv(sorting.segments, sep="\t", usecols=["path"])["path"].iloc[0]


def test_killed_worker_leaves_no_running_container(si_image, demo_world, first_run, tmp_path):
    _, opts = first_run
    argv = [str(Path(sys.executable).with_name("wisc-sort"))] + demo_world.argv(
        tmp_path, "--opts", str(opts), "--prepro-only", "--executor", "docker"
    )
    sorting = demo_world.sorting(tmp_path)
    label = f"wisc-sorting.sorting={sorting.root}"
    worker = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not [c for c in _containers(label) if c.status == "running"]:
            assert worker.poll() is None, "the run ended before any container started"
            assert time.time() < deadline, "no container started within 300 s"
            time.sleep(0.2)
        time.sleep(2.0)  # mid-step
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    assert wait_until(lambda: not _containers(label), 60, 0.5), "a container outlived its killed worker"
    assert status(sorting, "peaks") in ("missing", "partial")  # never looks done


def test_failing_container_is_removed_and_its_exit_code_returned(si_image, tmp_path):
    from tasks.execution.docker import DockerExecutor

    name = f"wisc-test-fail-{os.getpid()}"
    code = DockerExecutor().run_container(
        si_image, ["-c", "import sys; sys.exit(3)"], name, {}, [], {}, entrypoint=["python"]
    )
    assert code == 3
    assert not _engine().containers.list(all=True, filters={"name": name})


def test_missing_image_is_one_line_error_before_any_step(demo_world, tmp_path, capsys):
    _engine()
    os.environ["WISC_IMAGE_SI"] = "wisc-sorting-si:no-such-tag"
    try:
        assert demo_world.run(tmp_path, "--opts", str(REPO / "opts" / "sorting_demo.yaml"),
                              "--executor", "docker") == 2  # fmt: skip
    finally:
        del os.environ["WISC_IMAGE_SI"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("wisc-sort: error: docker executor: image wisc-sorting-si:no-such-tag")
    assert not demo_world.sorting(tmp_path).root.exists()  # refused before anything was written


def test_ks25_build_refuses_in_one_line_without_the_matlab_compiled_base(capsys):
    from tasks.commands.cli import main

    _engine()
    assert main(["images", "build", "ks25", "--base-image", "ks2_5-matlab-base-absent"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "ks2_5-matlab-base-absent" in err and "Dockerfile.ks25" in err


def test_the_container_gets_the_hosts_disk_reserve(si_image, first_run, tmp_path, monkeypatch):
    """[wisc] disk_reserve_gb reaches the step in its container as a flag (it has no luigi.cfg): a reserve
    larger than any disk makes the container's preflight refuse before recording.dat is written."""
    from tasks.execution.docker import DockerExecutor
    from tasks.execution.executors import StepFailed

    sorting = SortingDir(tmp_path / "sorting.imec0")
    copy_sorting(first_run[0], sorting)
    monkeypatch.setenv("WISC_DISK_RESERVE_GB", str(10**9))
    with pytest.raises(StepFailed):
        DockerExecutor().run("recording_dat", sorting, 1)
    log = sorting.log("recording_dat").read_text()
    assert "needs" in log and "(reserve " in log, log[-2000:]
    assert not sorting.path(STEPS["recording_dat"].outputs[0]).exists()


def test_the_container_gets_the_curation_override(si_image, sorted_run, demo_world, tmp_path):
    """--allow-uncurated reaches the step in its container, where the curation gate runs again: without
    the flag the container refuses the uncurated sort, with it the set is computed."""
    from tasks.execution.docker import DockerExecutor
    from tasks.execution.executors import StepFailed, step_flags
    from tasks.steps.postpro import setup_postpro
    from tests.support.postpro_world import setup_world

    sorting, opts_path = setup_world(demo_world, sorted_run, tmp_path)
    hypnogram = tmp_path / "hyp" / EXPERIMENT / SUBJECT / "hypnogram.htsv"  # written by setup_world
    pset = setup_postpro(sorting, opts_path, hypnogram=hypnogram).pset
    with pytest.raises(StepFailed):
        DockerExecutor().run(pset.step, sorting, 1, flags=step_flags())
    assert "lack a group" in sorting.log(pset.step).read_text()
    DockerExecutor().run(pset.step, sorting, 1, flags=step_flags(allow_uncurated=True))
    assert (pset.folder / "metrics.csv").exists()


def test_hostile_paths_reach_the_container_as_data(si_image, tmp_path):
    """A sorting path with ':' and ',' (which break docker's "src:dst:mode" strings), quotes, `$(...)`, `;`
    and non-ASCII: mounted as a structured bind mount, passed as one argument (exec form, no shell)."""
    from tasks.execution.docker import DockerExecutor

    root = tmp_path / "proj a:b,c 'q' $(touch PWNED); ü" / "sorting.imec0"
    root.mkdir(parents=True)
    log = tmp_path / "hostile.log"
    script = "import os, sys; p = sys.argv[1]; open(os.path.join(p, 'seen.txt'), 'w').write(repr(p))"
    with open(log, "wb") as sink:
        code = DockerExecutor().run_container(
            si_image, ["-c", script, str(root)], f"wisc-test-hostile-{os.getpid()}", {}, [sink],
            {str(root): {"bind": str(root), "mode": "rw"}}, entrypoint=["python"],
        )  # fmt: skip
    assert code == 0, log.read_text()
    assert (root / "seen.txt").read_text() == repr(str(root))
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()


def test_ctrl_c_in_a_helper_thread_stops_and_removes_a_running_container(si_image):
    """A Ctrl-C that the kernel hands to the log relay's thread: the wait for the container still ends at
    once, and the container (120 s of sleep) is removed, not left to run to its end."""
    from tests.support.signals import interrupt_in_a_helper_thread

    name = f"wisc-test-interrupt-{os.getpid()}"
    body = f"""
    from tasks.execution.docker import DockerExecutor
    try:
        DockerExecutor().run_container(
            {si_image!r}, ["-c", "print('ready', flush=True); import time; time.sleep(120)"], {name!r}, {{}},
            [sys.stdout.buffer], {{}}, entrypoint=["python"],
        )
        print("waited to the end", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
    out = interrupt_in_a_helper_thread(body, timeout_s=60)
    assert "interrupted" in out.splitlines()[-1], out
    assert not _engine().containers.list(all=True, filters={"name": name})
