"""A real luigid caps concurrent GPU units across separate `luigi` worker processes, per resource name."""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from tests.support.luigid import Luigid, luigid_factory_fixture, start_worker  # noqa: F401
from tests.support.standin_tasks import read_stamps

HOLD_S = 3.0


def peak_units(stamps: list[dict]) -> int:
    """Most units whose run() intervals overlap (an end and a start at the same instant don't overlap)."""
    events = sorted(
        (s["t"], s["units"] if s["event"] == "start" else -s["units"])
        for s in stamps
        if s["event"] in ("start", "end")
    )
    running, peak = 0, 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def run_workers(server: Luigid, tmp_path: Path, hosts: dict[str, dict]) -> dict[str, list[int]]:
    """Start each fake host's workers, poll luigid's units in use until they exit; returns polled usage.

    hosts: name -> {"resource", "workers": one sorts list per worker}. Each host has its own lock dir, like
    separate machines. Each worker submits its own sorts: a worker that waited on a task that another worker
    then ran reports it "not granted run permission" and exits [retcode] not_run.
    """
    client = tmp_path / "client.cfg"
    client.write_text(server.client_config())
    processes: list[tuple[subprocess.Popen, Path]] = []
    for host, spec in hosts.items():
        env = {
            "WISC_GPU_RESOURCE": spec["resource"],
            "WISC_GPU_LOCK_DIR": str(tmp_path / f"locks-{host}"),
            "WISC_GPU_DEVICES": "0",
            "CUDA_VISIBLE_DEVICES": "",  # a GPU machine's own setting must not pick the devices here
        }
        for worker, sorts in enumerate(spec["workers"]):
            log = tmp_path / f"worker-{host}-{worker}.log"
            args = ["--module", "tests.support.standin_tasks", "StandInSortBatch", "--workers", "1"]
            args += ["--sorts", sorts, "--out-dir", str(tmp_path), "--submitter", str(worker)]
            args += ["--hold-s", str(HOLD_S)]
            processes.append((start_worker(args, tmp_path, client, log, env), log))
    used: dict[str, list[int]] = defaultdict(list)
    deadline = time.monotonic() + 90
    try:
        while any(p.poll() is None for p, _ in processes) and time.monotonic() < deadline:
            for resource in server.api("resource_list"):
                used[resource["name"]].append(resource["num_used"])
            running = server.api("task_list", status="RUNNING")
            by_tasks: dict[str, int] = defaultdict(int)
            for task in running.values():
                for name, units in (task["resources"] or {}).items():
                    by_tasks[name] += units
            for name, units in by_tasks.items():
                used[f"{name} (task_list)"].append(units)
            time.sleep(0.1)
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    codes = {log.name: p.returncode for p, log in processes}
    assert set(codes.values()) == {0}, (codes, [log.read_text()[-3000:] for _, log in processes])
    return used


def done_sorts(server: Luigid) -> dict[str, dict]:
    return {
        task["params"]["name"]: task
        for task in server.api("task_list", status="DONE").values()
        if task["name"] == "StandInSortHoldsGpu"
    }


def test_luigid_caps_gpu_units_across_worker_processes(
    tmp_path: Path, luigid_factory: Callable[..., Luigid]
) -> None:
    server = luigid_factory({"gpu": 3})
    # Six sorts from three workers: both chronic sorts at once would be 4 units.
    workers = ["c1:chronic,a1:acute", "c2:chronic,a2:acute", "a3:acute,a4:acute"]
    used = run_workers(server, tmp_path, {"host": {"resource": "gpu", "workers": workers}})
    done = done_sorts(server)
    assert sorted(done) == ["a1", "a2", "a3", "a4", "c1", "c2"]
    assert {name: task["resources"] for name, task in done.items()} == {
        **{f"c{i}": {"gpu": 2} for i in (1, 2)},
        **{f"a{i}": {"gpu": 1} for i in (1, 2, 3, 4)},
    }
    assert 2 <= max(used["gpu"]) <= 3, used["gpu"]
    assert max(used["gpu (task_list)"]) <= 3
    stamps = read_stamps(tmp_path)
    assert len([s for s in stamps if s["event"] == "end"]) == 6
    assert 2 <= peak_units(stamps) <= 3
    assert {s["device"] for s in stamps if s["event"] == "leased"} == {"0"}
    assert all((tmp_path / f"{name}.done").exists() for name in done)


def test_per_host_resource_names_are_capped_separately(
    tmp_path: Path, luigid_factory: Callable[..., Luigid]
) -> None:
    server = luigid_factory({"gpu@hostA": 3, "gpu@hostB": 3})
    # Per host, two workers: both chronic sorts at once would be 4 of that host's 3 units.
    hosts = {
        host: {
            "resource": f"gpu@{host}",
            "workers": [f"{host}-c1:chronic,{host}-a1:acute", f"{host}-c2:chronic"],
        }
        for host in ("hostA", "hostB")
    }
    used = run_workers(server, tmp_path, hosts)
    done = done_sorts(server)
    assert len(done) == 6
    for name, task in done.items():
        assert task["resources"] == {f"gpu@{name.split('-')[0]}": 2 if "-c" in name else 1}
    stamps = read_stamps(tmp_path)
    for host in hosts:
        assert 1 <= max(used[f"gpu@{host}"]) <= 3, used
        host_stamps = [s for s in stamps if s["resource"] == f"gpu@{host}"]
        assert len([s for s in host_stamps if s["event"] == "end"]) == 3
        assert 2 <= peak_units(host_stamps) <= 3
        # Each fake host's leases went through its own lock dir.
        assert len(list((tmp_path / f"locks-{host}").glob("gpu0.slot*.lock"))) >= 2
