"""Test helper: a real one-node SLURM on this machine (munged, slurmctld, slurmd), generated in a temp dir.

The node is this host with 2 CPUs and a stand-in GPU: there is no GPU here, so gres.conf declares one
`gpu` on a fake device file and `Name=shard Count=3` on it (the lab's 3 units per GPU); SLURM counts the
shards as it would on a real GPU, which is what the scheduling tests need. Tests that rely on it say
`fake_gpu` in their names. Jobs are recorded by `jobcomp/filetxt`, so `sacct --completion` gives their start
and end times without a slurmdbd and its database.

Needs root (slurmd starts jobs as their users) and Debian's slurm-wlm and munge (.ci/run installs them):
without them the tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo")
PLUGIN_DIR = Path("/usr/lib/x86_64-linux-gnu/slurm-wlm")
CPUS, SHARDS = 2, 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing_parts() -> str:
    """Why this machine cannot start a test cluster ("" when it can)."""
    if os.geteuid() != 0:
        return "the SLURM tests need root (slurmd runs jobs as their users)"
    absent = [name for name in DAEMONS + CLIENTS + ("mungekey",) if not shutil.which(name)]
    if absent:
        return f"SLURM/munge binaries missing ({', '.join(absent)}): apt-get install slurm-wlm munge"
    return ""


def slurm_conf(folder: Path, host: str, ports: tuple[int, int]) -> str:
    """One partition `test` holding this host; jobs may share CPUs on request (`--oversubscribe`), never
    GRES, so only the shards can hold back the scheduling test's stand-in sorts."""
    ctld_port, slurmd_port = ports
    return f"""\
ClusterName=wisctest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder / "munge.socket"}
PluginDir={PLUGIN_DIR}
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={folder / "slurmctld.log"}
SlurmdLogFile={folder / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={folder / "jobcomp.txt"}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
GresTypes=gpu,shard
NodeName={host} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=4000 Gres=gpu:1,shard:{SHARDS} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


@dataclass
class Cluster:
    """A running test cluster; `env` (SLURM_CONF) is what its clients need."""

    folder: Path
    host: str
    processes: dict[str, subprocess.Popen]

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.folder / "slurm.conf")}

    def command(self, *argv: str, check: bool = True) -> str:
        done = subprocess.run(
            argv, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=60, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def queue(self, state: str = "") -> list[str]:
        """Job ids squeue still lists (pending, running, completing), or only those in `state`."""
        return self.command("squeue", "-h", "-o", "%i", *(["-t", state] if state else [])).split()

    def node_state(self) -> str:
        return self.command("sinfo", "-h", "-N", "-o", "%T", check=False).strip()

    def completed(self, job_ids: list[str], fields: str) -> dict[str, list[str]]:
        """`fields` of finished jobs, from `sacct --completion` (jobcomp/filetxt: no slurmdbd needed)."""
        text = self.command(
            "sacct", "--completion", "-n", "-P", "-j", ",".join(job_ids), "-o", f"JobID,{fields}"
        )
        return {line.split("|")[0]: line.split("|")[1:] for line in text.splitlines()}

    def intervals(self, job_ids: list[str]) -> dict[str, tuple[float, float]]:
        """Start and end (epoch seconds) of finished jobs."""
        return {
            job: (_epoch(start), _epoch(end))
            for job, (start, end) in self.completed(job_ids, "Start,End").items()
        }

    def states(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        """State and exit code ("<code>:<signal>") of finished jobs."""
        return {
            job: (state, code) for job, (state, code) in self.completed(job_ids, "State,ExitCode").items()
        }

    def cancel_all(self) -> None:
        self.command("scancel", "--full", "-p", "test", check=False)

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {name}.log\n" + (self.folder / f"{name}.log").read_text()[-3000:]
            for name in DAEMONS
            if (self.folder / f"{name}.log").exists()
        )


def _epoch(stamp: str) -> float:
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def _die_with_pytest() -> None:
    # A pytest killed outright (a CI timeout) runs no teardown: the daemons must not outlive it.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start(name: str, argv: list[str], folder: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(folder / f"{name}.out", "wb") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_pytest,
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait(condition, timeout_s: float, what: str, cluster: Cluster) -> None:
    """Poll until `condition()`; a daemon that exits, or the timeout, raises with the daemons' logs."""
    deadline = time.time() + timeout_s
    while not condition():
        dead = [name for name, process in cluster.processes.items() if process.poll() is not None]
        if dead or time.time() > deadline:
            why = f"{', '.join(dead)} exited" if dead else f"not within {timeout_s:.0f} s"
            raise RuntimeError(f"test SLURM: {what} ({why})\n{cluster.log_tail()}")
        time.sleep(0.3)


def _two_ports() -> tuple[int, int]:
    ports = (free_port(), free_port())
    return ports if ports[0] != ports[1] else _two_ports()


@contextmanager
def slurm_cluster(folder: Path) -> Iterator[Cluster]:
    """Start munged, slurmctld and slurmd under `folder`, wait for the node to be idle; stop them after."""
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    fake_gpu = folder / "nvidia0"  # a stand-in device file: there is no GPU on this machine
    try:  # a character device like /dev/null, so slurmd accepts the file; a plain file where mknod fails
        os.mknod(fake_gpu, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError:
        fake_gpu.touch()
    (folder / "gres.conf").write_text(f"Name=gpu File={fake_gpu}\nName=shard Count={SHARDS}\n")
    (folder / "slurm.conf").write_text(slurm_conf(folder, host, _two_ports()))
    key = folder / "munge.key"
    subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True)
    key.chmod(0o600)
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    cluster = Cluster(folder, host, {})
    try:
        cluster.processes["munged"] = _start(
            "munged",
            ["munged", "--foreground", "--force", f"--socket={folder / 'munge.socket'}", f"--key-file={key}",
             f"--pid-file={folder / 'munged.pid'}", f"--seed-file={folder / 'munged.seed'}",
             f"--log-file={folder / 'munged.log'}"],
            folder, env,
        )  # fmt: skip
        _wait(lambda: (folder / "munge.socket").exists(), 20, "munged made no socket", cluster)
        cluster.processes["slurmctld"] = _start("slurmctld", ["slurmctld", "-D", "-i"], folder, env)
        cluster.processes["slurmd"] = _start("slurmd", ["slurmd", "-D", "-N", host], folder, env)
        _wait(lambda: cluster.node_state() == "idle", 60, "the node did not become idle", cluster)
        yield cluster
    finally:
        if "slurmctld" in cluster.processes:
            cluster.cancel_all()
        for name in reversed(DAEMONS):
            if name in cluster.processes:
                _stop(cluster.processes[name])


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> Iterator[Cluster]:
    """The session's test cluster, its SLURM_CONF in this process's environment (the executor's clients and
    the worker processes it starts read it there)."""
    why = missing_parts()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a test SLURM (.ci/run installs slurm-wlm and munge): {why}")
        pytest.skip(why)
    folder = Path(tmp_path_factory.mktemp("slurm"))
    folder.chmod(0o755)
    saved = os.environ.get("SLURM_CONF")
    with slurm_cluster(folder) as cluster:
        os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]
        try:
            yield cluster
        finally:
            if saved is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = saved
