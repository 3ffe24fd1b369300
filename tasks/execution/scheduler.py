"""`wisc-sort scheduler`: the lab's central luigid (loopback, state file, SQLite history, GPU resources).

The luigid config is generated into the state dir from luigi.cfg: `[wisc_scheduler]` (address, port,
delays) and `[resources]` (the same limits the local scheduler uses: `gpu`, `gpu@host`, `cpu`,
`disk_write`). luigid runs with that file as its only config and the state dir as its cwd, so a
`luigi.cfg` in the folder it was started from cannot change it. Beside luigid runs a small watcher that
writes "waiting for GPU units ..." as the status message of pending tasks that only lack GPU units
(luigid can't run code for a pending task; the watcher uses its public API).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import luigi.configuration

from tasks.core.errors import UserError
from tasks.execution.waiting import wait_process
from tasks.settings import get as setting

SECTION = "wisc_scheduler"
WAITING = "waiting for GPU units"


@dataclass
class SchedulerSettings:
    address: str
    port: int
    state_dir: Path
    remove_delay: int
    worker_disconnect_delay: int
    retry_delay: int
    retry_count: int
    watch_interval: float
    resources: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "luigid.cfg"


def _integer(key: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise UserError(f"[{SECTION}] {key} = {raw!r} in luigi.cfg is not an integer >= {minimum}; fix it")
    return value


def default_resources() -> dict[str, int]:
    """luigi.cfg's [resources], plus what luigid needs declared (an undeclared resource has limit 1:
    a step with --n-jobs 8 asking cpu = 8 would never run)."""
    from tasks.execution.gpu import gpu_capacity, gpu_resource_name, visible_devices

    config = luigi.configuration.get_config()
    resources: dict[str, int] = {}
    if config.has_section("resources"):
        for name, raw in config.items("resources"):
            resources[name] = _integer(f"(resources) {name}", str(raw))
    resources.setdefault("cpu", os.cpu_count() or 1)
    resources.setdefault("disk_write", 1)
    if not any(name == "gpu" or name.startswith("gpu@") for name in resources):
        resources[gpu_resource_name()] = gpu_capacity() * len(visible_devices())
    return resources


def load_settings(**overrides: object) -> SchedulerSettings:
    """luigi.cfg `[wisc_scheduler]`, then WISC_SCHEDULER_<KEY> env vars, then flags (non-None overrides)."""

    def value(key: str):
        return setting(key, SECTION, overrides.get(key))

    return SchedulerSettings(
        address=value("address"),
        port=value("port"),
        state_dir=value("state_dir").resolve(),
        remove_delay=value("remove_delay"),
        worker_disconnect_delay=value("worker_disconnect_delay"),
        retry_delay=value("retry_delay"),
        retry_count=value("retry_count"),
        watch_interval=value("watch_interval"),
        resources=dict(overrides.get("resources") or default_resources()),  # type: ignore[call-overload]
    )


def luigid_config(settings: SchedulerSettings) -> str:
    """The text of luigid's config: scheduler timings, SQLite task history, resources."""
    history = settings.state_dir / "task-history.sqlite"
    resources = "\n".join(f"{name} = {units}" for name, units in sorted(settings.resources.items()))
    return f"""# Made by `wisc-sort scheduler` from luigi.cfg [wisc_scheduler], [resources]; edits are lost.
[scheduler]
state_path = {settings.state_dir / "luigi-state.pickle"}
record_task_history = true
remove_delay = {settings.remove_delay}
worker_disconnect_delay = {settings.worker_disconnect_delay}
retry_delay = {settings.retry_delay}
retry_count = {settings.retry_count}
# A dead worker's tasks are failed as soon as any live worker asks for work (or the web view lists tasks).
prune_on_get_work = true

[task_history]
db_connection = sqlite:///{history}

[resources]
{resources}
"""


def write_config(settings: SchedulerSettings) -> Path:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "logs").mkdir(exist_ok=True)
    tmp = settings.config_path.with_name("luigid.cfg.tmp")
    tmp.write_text(luigid_config(settings))
    os.replace(tmp, settings.config_path)
    return settings.config_path


def luigid_command(settings: SchedulerSettings) -> list[str]:
    luigid = Path(sys.executable).with_name("luigid")
    return [
        str(luigid) if luigid.exists() else "luigid",
        "--address",
        settings.address,
        "--port",
        str(settings.port),
        "--state-path",
        str(settings.state_dir / "luigi-state.pickle"),
        "--logdir",
        str(settings.state_dir / "logs"),
    ]


class SchedulerApi:
    """luigid's JSON API (the visualiser's): `call(method, **data)`, unwrapped from {"response": ...}."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s

    def call(self, method: str, **data: object):
        query = urllib.parse.urlencode({"data": json.dumps(data)})
        with urllib.request.urlopen(f"{self.url}/api/{method}?{query}", timeout=self.timeout_s) as reply:
            return json.loads(reply.read())["response"]


def gpu_wait_message(task: dict, resources: dict[str, dict]) -> str | None:
    """The status line for a PENDING task that lacks GPU units now, else None."""
    for name, units in sorted((task.get("resources") or {}).items()):
        if not (name == "gpu" or name.startswith("gpu@")):
            continue
        have = resources.get(name)
        if have is None:
            return f"{WAITING}: needs {units} '{name}', which this scheduler does not declare (limit 1)"
        if units + have["num_used"] > have["num_total"]:
            used, total = have["num_used"], have["num_total"]
            return f"{WAITING}: needs {units} '{name}', {used} of {total} in use"
    return None


def _deps_done(api: SchedulerApi, task_id: str) -> bool:
    graph = api.call("dep_graph", task_id=task_id, include_done=True)
    deps = (graph.get(task_id) or {}).get("deps") or []
    return all((graph.get(dep) or {}).get("status") == "DONE" for dep in deps)


def annotate_gpu_waits(api: SchedulerApi) -> int:
    """One pass: mark pending GPU tasks whose dependencies are done but whose units are taken, and clear
    the mark from those that now fit. Returns how many tasks carry the mark."""
    pending = api.call("task_list", status="PENDING", upstream_status="")
    if "num_tasks" in pending:  # more than luigid's max_shown_tasks: too many to check
        return 0
    resources = {r["name"]: r for r in api.call("resource_list")}
    marked = 0
    for task_id, task in pending.items():
        message = gpu_wait_message(task, resources)
        current = task.get("status_message") or ""
        if message and _deps_done(api, task_id):
            marked += 1
            if message != current:
                api.call("set_task_status_message", task_id=task_id, status_message=message)
        elif current.startswith(WAITING):
            api.call("set_task_status_message", task_id=task_id, status_message="")
    return marked


def watch_gpu_waits(api: SchedulerApi, interval_s: float, stop: threading.Event) -> None:
    while not stop.wait(interval_s):
        try:
            annotate_gpu_waits(api)
        except (OSError, ValueError, KeyError):
            continue  # luigid busy or restarting: try again next round


def run_scheduler(settings: SchedulerSettings) -> int:
    """Write the config, start luigid, watch for GPU waits until luigid exits; SIGTERM/SIGINT are passed
    on (luigid saves its state file only on a clean stop)."""
    config = write_config(settings)
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config)}
    print(f"luigid config: {config}")
    print(f"scheduler: {settings.url}static/visualiser/index.html (history: {settings.url}history)")
    print(f"clients: luigi.cfg [core] default_scheduler_url = {settings.url} (or --scheduler-url)")
    sys.stdout.flush()
    process = subprocess.Popen(luigid_command(settings), cwd=settings.state_dir, env=env)

    def forward(signum: int, _frame: object) -> None:
        process.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    stop = threading.Event()
    if settings.watch_interval > 0:
        api = SchedulerApi(settings.url.replace("0.0.0.0", "127.0.0.1"))
        threading.Thread(
            target=watch_gpu_waits, args=(api, settings.watch_interval, stop), daemon=True
        ).start()
    try:
        while True:
            try:
                return wait_process(process)
            except KeyboardInterrupt:  # pragma: no cover - SIGINT is forwarded above
                time.sleep(0.1)
    finally:
        stop.set()


def dag_task_ids(roots: list) -> set[str]:
    """Task ids of `roots` and everything they require (requires() is cheap by the tasks' contract)."""
    from luigi.task import flatten

    seen: dict[str, object] = {}
    stack = list(roots)
    while stack:
        task = stack.pop()
        if task.task_id not in seen:
            seen[task.task_id] = task
            stack.extend(flatten(task.requires()))
    return set(seen)


def reenable_disabled(scheduler_url: str, roots: list) -> list[str]:
    """Re-enable the tasks of this run that luigid disabled after an earlier failure (retry_count = 1):
    a user who runs the command again asks for a new try. Returns the re-enabled task ids."""
    api = SchedulerApi(scheduler_url)
    disabled = api.call("task_list", status="DISABLED", upstream_status="")
    if "num_tasks" in disabled:
        disabled = {}
    ids = sorted(set(disabled) & dag_task_ids(roots))
    for task_id in ids:
        api.call("re_enable_task", task_id=task_id)
    return ids


def client_scheduler_url(args: object) -> str | None:
    """Where `wisc-sort sort` sends its tasks: --scheduler-url, else luigi.cfg `[core] default_scheduler_url`
    when set (unless --local-scheduler, and never for the demo), else None: the local scheduler."""
    url = getattr(args, "scheduler_url", None)
    if url or getattr(args, "local_scheduler", False) or getattr(args, "command", "") == "demo":
        return url
    config = luigi.configuration.get_config()
    if config.has_option("core", "default_scheduler_url"):
        return str(config.get("core", "default_scheduler_url")).strip() or None
    return None
