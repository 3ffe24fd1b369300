"""Test helper: a real luigid on 127.0.0.1 with its own config, its JSON API, and `luigi` worker processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Luigid:
    """A running luigid: `.url`, `.api(method, **data)`, `.stop()`; its output is in `.log`."""

    url: str
    config: Path
    log: Path
    process: subprocess.Popen

    def api(self, method: str, **data: object) -> dict | list:
        """The visualiser's JSON API: `GET /api/<method>?data=<json>`, unwrapped from {"response": ...}."""
        query = urllib.parse.urlencode({"data": json.dumps(data)})
        with urllib.request.urlopen(f"{self.url}/api/{method}?{query}", timeout=10) as reply:
            return json.loads(reply.read())["response"]

    def stop(self) -> None:
        """SIGTERM (luigid saves its state on a clean stop), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client_config(self, extra: str = "") -> str:
        """A worker config for this scheduler: keep_alive, quick polling, no retries, failing exit codes.

        `already_running` stays 0: with shared tasks a worker sees others run them, which is no failure.
        `no_lock`: the `luigi` command refuses a second identical command line otherwise.
        """
        return f"""[core]
scheduler_url = {self.url}
no_lock = true
[worker]
keep_alive = true
wait_interval = 0.2
wait_jitter = 0.1
ping_interval = 0.5
retry_count = 0
check_complete_on_run = true
[retcode]
missing_data = 20
not_run = 25
task_failed = 30
scheduling_error = 35
unhandled_exception = 40
{extra}
"""


def start_luigid(tmp_path: Path, resources: Mapping[str, int], extra_config: str = "") -> Luigid:
    """Start the venv's luigid on a free loopback port with `[resources]` and wait until its API answers."""
    home = tmp_path / f"luigid-{time.monotonic_ns()}"
    (home / "logs").mkdir(parents=True)
    config = home / "luigid.cfg"  # never luigi.cfg in a cwd: luigi would read it everywhere
    limits = "\n".join(f"{name} = {units}" for name, units in resources.items())
    # retry_count as `wisc-sort scheduler` sets it: a task calling set_tracking_url resets its own retry
    # policy to luigid's default (luigi 3.8.1 add_task without retry_policy_dict), so a failure would retry.
    scheduler = "[scheduler]\nrecord_task_history = false\nremove_delay = 3600\nretry_count = 1\n"
    config.write_text(f"{scheduler}[resources]\n{limits}\n{extra_config}\n")
    port, log = free_port(), home / "luigid.out"
    command = [str(BIN / "luigid"), "--address", "127.0.0.1", "--port", str(port)]
    command += ["--state-path", str(home / "state.pickle"), "--logdir", str(home / "logs")]
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config)}
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT)
    return wait_until_answering(Luigid(f"http://127.0.0.1:{port}", config, log, process), f"luigid on {port}")


def start_worker(
    args: list[str], cwd: Path, config: Path, log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """`luigi <args>` with `config` as its luigi config, cwd without a luigi.cfg, the repo importable.

    Run it from a cwd without luigi.cfg (luigi always reads ./luigi.cfg, the repo's included).
    """
    merged = {**os.environ, **(env or {})}
    merged["LUIGI_CONFIG_PATH"] = str(config)
    merged["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), merged.get("PYTHONPATH", "")) if p)
    with log.open("wb") as out:
        return subprocess.Popen([str(BIN / "luigi"), *args], cwd=cwd, env=merged, stdout=out, stderr=out)


@pytest.fixture(name="luigid_factory")
def luigid_factory_fixture(tmp_path: Path) -> Iterator[Callable[..., Luigid]]:
    """Fixture `luigid_factory`: `start(resources, extra_config="")` -> a Luigid stopped at teardown.

    Use it with `from luigid import luigid_factory_fixture  # noqa: F401` (named so that the test's
    `luigid_factory` argument does not shadow the import).
    """
    started: list[Luigid] = []

    def start(resources: Mapping[str, int], extra_config: str = "") -> Luigid:
        started.append(start_luigid(tmp_path, resources, extra_config))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def wait_until_answering(server: Luigid, what: str, timeout_s: float = 30.0) -> Luigid:
    """Poll the API until it answers; stop the server and raise with its log's tail if it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            server.api("resource_list")
            return server
        except OSError:
            if server.process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"{what} not answering: {server.log.read_text()[-2000:]}") from None
            time.sleep(0.1)
