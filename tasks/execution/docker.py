"""The `docker` executor: each step program runs in its image through the Docker SDK, never as root.

What `luigi.contrib.docker_runner` gets wrong and this does instead (LUIGI.md): the container runs as the
invoking uid:gid, sees the sorting directory read-write and every raw-data folder of the segment table
read-only at the same paths, gets exactly the GPU the sort was handed, has a unique name and labels, streams
its output to the step's log, and is stopped and removed whatever happens to the worker: in `finally` on an
exception or SIGTERM, and by a guard process (`python -m tasks.execution.docker_guard`) when the worker
is SIGKILLed.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from pathlib import Path

from tasks.core.layout import SortingDir
from tasks.execution.base import Executor, write_sinks
from tasks.execution.guard import WorkerGuard
from tasks.execution.images import docker_client, image_id, image_name
from tasks.execution.waiting import wait_container
from tasks.steps.registry import STEPS, load_inputs

LABEL = "wisc-sorting.step"


def image_kind(step: str, opts: dict) -> str:
    """The image a step runs in, as its declaration says (a step family such as postpro.<NAME>: si)."""
    return STEPS[step].image(opts) if step in STEPS else "si"


def raw_roots(sorting: SortingDir) -> list[Path]:
    """The folders holding the raw files the segment table names (kept and dropped rows), outermost only."""
    import pandas as pd

    paths = pd.read_csv(sorting.segments, sep="\t", usecols=["path"])["path"]
    # Not resolved: the step opens the paths as written, so they must exist as written inside.
    folders = sorted({Path(os.path.abspath(p)).parent for p in paths})
    roots: list[Path] = []
    for folder in folders:  # sorted: a parent comes before its children
        if not any(folder.is_relative_to(root) for root in roots):
            roots.append(folder)
    return roots


def container_name(step: str, sorting: SortingDir) -> str:
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{sorting.root.parent.name}-{sorting.root.name}")[-60:]
    return f"wisc-{step}-{readable}-{uuid.uuid4().hex[:8]}"


def gpu_request(env: dict[str, str]) -> tuple[list, dict[str, str]]:
    """The Sort's leased device as a device request; inside, that GPU is the container's device 0."""
    from docker.types import DeviceRequest

    device = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not device:
        return [], env
    return [DeviceRequest(device_ids=[device], capabilities=[["gpu"]])], {**env, "CUDA_VISIBLE_DEVICES": "0"}


class DockerGuard(WorkerGuard):
    """Removes the container if the worker dies (tasks/execution/guard.py)."""

    def __init__(self, container_id: str) -> None:
        super().__init__("tasks.execution.docker_guard", container_id)


class DockerExecutor(Executor):
    name = "docker"

    def __init__(self, user: str | None = None) -> None:
        # The invoking user: files the step writes are theirs, and root in a container never is.
        self.user = user or f"{os.getuid()}:{os.getgid()}"

    @staticmethod
    def image_for(step: str, opts: dict) -> tuple[str, str]:
        name = image_name(image_kind(step, opts))
        return name, image_id(name)

    def image(self, step: str, sorting: SortingDir) -> tuple[str, str]:
        return self.image_for(step, load_inputs(sorting)[0])

    def environment(self, step: str, sorting: SortingDir) -> str | None:
        if not sorting.opts.exists() or not sorting.segments.exists():
            return None  # not set up yet: nothing is complete anyway
        return f"docker:{self.image(step, sorting)[1]}"

    def check(self, steps: list[str], options: list[dict]) -> None:
        docker_client()
        for opts in options:
            for step in steps:
                self.image_for(step, opts)

    def volumes(self, sorting: SortingDir) -> dict[str, dict[str, str]]:
        mounts = {str(root): {"bind": str(root), "mode": "ro"} for root in raw_roots(sorting)}
        root = str(sorting.root)
        mounts[root] = {"bind": root, "mode": "rw"}
        return mounts

    def run_container(
        self,
        image: str,
        command: list[str],
        name: str,
        env: dict[str, str],
        sinks: list,
        volumes: dict,
        n_jobs: int = 1,
        labels: dict[str, str] | None = None,
        entrypoint: list[str] | None = None,
    ) -> int:
        """Run one container to its end, streaming its output; stop and remove it whatever happens."""
        from docker.types import Mount

        client = docker_client()
        device_requests, env = gpu_request(env)
        container = client.containers.create(
            image,
            command,
            name=name,
            user=self.user,
            environment=env,
            # Structured mounts, not "src:dst:mode" strings: a path with ':' or ',' stays one path.
            mounts=[
                Mount(spec["bind"], host, type="bind", read_only=spec.get("mode") == "ro")
                for host, spec in volumes.items()
            ],
            device_requests=device_requests,
            labels={
                LABEL: command[0],
                "wisc-sorting.worker": f"{os.uname().nodename}:{os.getpid()}",
                **(labels or {}),
            },
            nano_cpus=int(min(n_jobs, os.cpu_count() or 1) * 1e9),  # the cores the scheduler reserved
            entrypoint=entrypoint,
            detach=True,
        )
        guard = DockerGuard(container.id)
        try:
            container.start()
            relay = threading.Thread(target=self._relay, args=(container, sinks), daemon=True)
            relay.start()
            status = wait_container(container)
            relay.join(timeout=10)
            return status
        finally:
            try:
                container.remove(force=True)  # kills it first if it still runs (SIGTERM, timeout, error)
            finally:
                guard.release()

    @staticmethod
    def _relay(container, sinks: list) -> None:
        for chunk in container.logs(stream=True, follow=True):
            write_sinks(chunk, sinks)

    def _execute(
        self, arguments: list[str], sorting: SortingDir, n_jobs: int, env: dict[str, str], sinks: list
    ) -> int:
        step = arguments[0]
        name, identity = self.image(step, sorting)
        pinned = ["--environment", f"docker:{identity}", "--record", f"image={name}@{identity}"]
        if env.get("CUDA_VISIBLE_DEVICES", "").strip():  # the host's id: inside, the GPU is device 0
            pinned += ["--record", f"lease_device={env['CUDA_VISIBLE_DEVICES'].strip()}"]
        root = str(sorting.root)
        return self.run_container(
            identity,
            [*arguments, *pinned],
            container_name(step, sorting),
            env,
            sinks,
            self.volumes(sorting),
            n_jobs,
            {"wisc-sorting.sorting": root},
        )
