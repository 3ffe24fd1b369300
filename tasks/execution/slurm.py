"""The `slurm` executor: each step program is one SLURM job (sbatch), waited on, cancelled with its worker.

The job runs `python -m containers <step> <dir> ...` in the environment the compute nodes share (this venv
on a shared filesystem, or `[wisc_slurm] python`, e.g. an Apptainer image): cpus = n_jobs, memory and time
limit from the step and the recording's kept hours, GPU shards (`[wisc] slurm_gpu_gres`) by the units the
task would have leased on a workstation, output appended to `.pipeline/<step>.log`. SLURM admits the job's
cores and GPUs, so luigid no longer counts them (`luigi_resources`). The worker polls squeue, shows the
job's state in luigid ("queued in SLURM as job 1234 (Priority)"), returns the job's exit code, and the step
program records the job id and node in its manifest. The job is cancelled when the worker stops (`finally`)
or dies (a guard process, tasks/execution/slurm_guard.py).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tasks import settings
from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.execution.base import Executor, ProgressCallback, StepFailed, write_sinks
from tasks.execution.gpu import gpu_resource_name
from tasks.execution.guard import WorkerGuard
from tasks.inputs.segments import kept_hours
from tasks.steps.registry import STEPS

SECTION = "wisc_slurm"
# Set by the step program from the job's environment: which job and node made the outputs.
RECORDS = ["--record", "slurm_job_id=${SLURM_JOB_ID}", "--record", "slurm_node=${SLURMD_NODENAME}"]


class SlurmError(RuntimeError):
    """A SLURM command failed (slurmctld busy or unreachable): the wait loop tries again."""


@dataclass(frozen=True)
class JobRequest:
    """What one step's job asks SLURM for."""

    name: str
    cpus: int
    mem_mb: int
    minutes: int
    gres: str = ""  # e.g. shard:2 or gpu:1; "" for a CPU step

    def options(self) -> list[str]:
        options = [f"--job-name={self.name}", "--nodes=1", "--ntasks=1", f"--cpus-per-task={self.cpus}"]
        options += [f"--mem={self.mem_mb}M", f"--time={self.minutes}"]
        options += [f"--gres={self.gres}"] if self.gres else []
        for key in ("partition", "account"):
            value = settings.get(key, SECTION)
            options += [f"--{key}={value}"] if value else []
        return options + extra_options()

    def describe(self) -> str:
        gres = f", {self.gres}" if self.gres else ""
        return f"{self.cpus} cpus, {self.mem_mb} MB, {self.minutes} min{gres}"


def extra_options() -> list[str]:
    text = settings.get("sbatch_options", SECTION)
    try:
        return shlex.split(text)
    except ValueError as err:
        raise UserError(f"[{SECTION}] sbatch_options = {text!r}: {err}; quote it as a shell would") from None


def gres_for(units: int) -> str:
    """`shard:<units>` (the lab's units: a GPU has 3 shards), or a whole GPU where the gres is gpu[:type]."""
    if units <= 0:
        return ""
    name = settings.get("slurm_gpu_gres")
    return f"{name}:1" if name.split(":")[0] == "gpu" else f"{name}:{units}"


def job_name(step: str, sorting: SortingDir) -> str:
    """Step, then experiment/subject/sorting.<probe>: squeue shows the start of it."""
    root = sorting.root
    return f"{step}:{root.parents[2].name}/{root.parent.name}/{root.name}"


def job_request(step: str, sorting: SortingDir, n_jobs: int, gpu_units: int) -> JobRequest:
    """Memory: `mem_gb` + `mem_gb_per_hour` x kept hours (the sort, which holds the most, twice that); time:
    `time_factor` hours per kept hour, at least `min_time_minutes`."""
    hours = (kept_hours(sorting.segments) if sorting.segments.exists() else None) or 0.0
    spec = STEPS.get(step)
    weight = 2 if spec is not None and spec.kind == "gpu" else 1
    gib = weight * (settings.get("mem_gb", SECTION) + settings.get("mem_gb_per_hour", SECTION) * hours)
    minutes = max(
        settings.get("min_time_minutes", SECTION),
        math.ceil(settings.get("time_factor", SECTION) * hours * 60),
    )
    return JobRequest(
        job_name(step, sorting), max(n_jobs, 1), math.ceil(gib * 1024), minutes, gres_for(gpu_units)
    )


def python_command() -> list[str]:
    """What runs `-m containers` on the nodes: `[wisc_slurm] python`, else this interpreter (shared venv)."""
    text = settings.get("python", SECTION)
    return shlex.split(text) if text else [sys.executable]


def batch_script(command: list[str]) -> str:
    """The job: exec the step program (signals reach it), the job id and node expanded by the shell."""
    quoted = " ".join(shlex.quote(part) for part in command)
    records = " ".join(f'"{part}"' if "$" in part else part for part in RECORDS)
    return f"#!/bin/bash\nexec {quoted} {records}\n"


def job_env(env: dict[str, str]) -> dict[str, str]:
    """This process's environment for the job, less what SLURM decides there: a worker running inside an
    allocation must not hand its own SLURM_* (or its GPUs) to the job."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if (not key.startswith("SLURM_") or key == "SLURM_CONF") and key != "CUDA_VISIBLE_DEVICES"
    }
    return {**kept, **env}


def _slurm(
    *argv: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            argv, input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SlurmError(f"{argv[0]}: {err}") from None


def submit(script: str, options: list[str], env: dict[str, str]) -> str:
    """sbatch the script; its job id. A refusal (bad partition, too much asked) is the step's failure."""
    done = _slurm("sbatch", "--parsable", *options, stdin=script, env=env)
    if done.returncode != 0 or not done.stdout.strip():
        error = " ".join(done.stderr.split()) or f"exit {done.returncode}"
        raise StepFailed(f"sbatch refused the job ({error}); options: {' '.join(options)}")
    return done.stdout.strip().split(";")[0]


@dataclass(frozen=True)
class JobState:
    state: str
    reason: str = ""
    node: str = ""
    exit_code: str = ""  # SLURM's "<code>:<signal>"

    def returncode(self) -> int:
        """The step's exit code; 128 + signal when killed; 1 when SLURM ended it without one (cancelled)."""
        code, _, signal = self.exit_code.partition(":")
        number = 128 + int(signal) if signal.isdigit() and int(signal) else int(code) if code.isdigit() else 1
        return number if number or self.state == "COMPLETED" else 1

    def status(self, job_id: str) -> str:
        if self.state == "PENDING":
            return f"queued in SLURM as job {job_id} ({self.reason})"
        where = f" on {self.node}" if self.node and self.node != "(null)" else ""
        return f"{self.state.lower()} in SLURM as job {job_id}{where}"


def queued(job_id: str) -> JobState | None:
    """The job as squeue lists it, or None once squeue no longer does (it ended)."""
    done = _slurm("squeue", "-h", "-j", job_id, "-o", "%T|%r|%N")
    if done.returncode != 0:
        if "invalid job id" in done.stderr.lower():
            return None
        raise SlurmError(f"squeue -j {job_id}: {' '.join(done.stderr.split())}")
    line = done.stdout.strip()
    if not line:
        return None
    state, reason, node = (line.splitlines()[0].split("|") + ["", ""])[:3]
    return JobState(state, reason, node)


def ended(job_id: str) -> JobState:
    """How the job ended: `scontrol show job` while slurmctld remembers it (MinJobAge), else sacct."""
    done = _slurm("scontrol", "show", "job", "-o", job_id)
    if done.returncode == 0 and done.stdout.strip():
        fields = dict(re.findall(r"(\w+)=(\S*)", done.stdout))
        get = fields.get
        return JobState(
            get("JobState", "UNKNOWN"), get("Reason", ""), get("NodeList", ""), get("ExitCode", "")
        )
    done = _slurm("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode,NodeList")
    lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
    if not lines:
        return JobState("UNKNOWN")
    state, exit_code, node = (lines[0].split("|") + ["", ""])[:3]
    return JobState(state.split()[0] if state else "UNKNOWN", "", node, exit_code)


def cancel(job_id: str) -> None:
    _slurm("scancel", job_id)


class LogTail:
    """Relays what the job appends to the step's log to the other sinks (the terminal), from `offset` on."""

    def __init__(self, path: Path, sinks: list) -> None:
        self.path, self.sinks = path, sinks
        self.offset = path.stat().st_size if path.exists() else 0

    def relay(self) -> None:
        if not self.sinks or not self.path.exists():
            return
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        self.offset += len(chunk)
        if chunk:
            write_sinks(chunk, self.sinks)

    def note(self, text: str) -> None:
        """One line of the executor's own into the log (relayed like the job's output)."""
        with open(self.path, "ab") as log:
            log.write(f"wisc-sort slurm: {text}\n".encode())


class SlurmExecutor(Executor):
    name = "slurm"
    schedules_gpus = True

    def __init__(self) -> None:
        self._call = threading.local()  # this run's progress callback and GPU units, for _execute

    def luigi_resources(self, resources: dict[str, int]) -> dict[str, int]:
        """SLURM admits the job's cores and GPU shards; luigid counts the rest (one big write per drive)."""
        admitted = {"cpu", gpu_resource_name()}
        return {name: units for name, units in resources.items() if name not in admitted}

    def check(self, steps: list[str], options: list[dict]) -> None:
        if not shutil.which("sbatch"):
            raise UserError("slurm executor: sbatch is not on PATH; run wisc-sort on a host of the cluster")
        extra_options()
        try:
            reached = _slurm("sinfo", "-h", "-o", "%P")
        except SlurmError as err:
            raise UserError(f"slurm executor: {err}") from None
        if reached.returncode != 0:
            raise UserError(f"slurm executor: sinfo failed: {' '.join(reached.stderr.split())}")

    def run(
        self,
        step: str,
        sorting: SortingDir,
        n_jobs: int,
        on_progress: ProgressCallback | None = None,
        extra_env: dict[str, str] | None = None,
        flags: list[str] | None = None,
        gpu_units: int = 0,
    ) -> None:
        self._call.on_progress, self._call.gpu_units = on_progress, gpu_units
        try:
            super().run(step, sorting, n_jobs, on_progress, extra_env, flags)
        finally:
            self._call.on_progress, self._call.gpu_units = None, 0

    def _execute(
        self, arguments: list[str], sorting: SortingDir, n_jobs: int, env: dict[str, str], sinks: list
    ) -> int:
        step = arguments[0]
        log = sorting.log(step)
        request = job_request(step, sorting, n_jobs, getattr(self._call, "gpu_units", 0))
        options = [*request.options(), f"--output={log}", "--open-mode=append", f"--chdir={sorting.root}"]
        tail = LogTail(log, [s for s in sinks if getattr(s, "name", None) != str(log)])
        script = batch_script([*python_command(), "-m", "containers", *arguments])
        guard = WorkerGuard("tasks.execution.slurm_guard")  # before sbatch: no moment without one
        job_id, final = "", None
        try:
            job_id = submit(script, options, job_env(env))
            guard.tell(job_id)
            tail.note(f"step {step} submitted as SLURM job {job_id} ({request.describe()})")
            final = self._wait(job_id, tail)
        finally:
            if job_id and final is None:  # interrupted (exception, KeyboardInterrupt): the job goes too
                cancel(job_id)
            guard.release()
        tail.note(
            f"SLURM job {job_id} ended {final.state} (exit code {final.exit_code or '?'}) on {final.node}"
        )
        tail.relay()
        return final.returncode()

    def _wait(self, job_id: str, tail: LogTail) -> JobState:
        """Poll squeue until the job leaves it; its state changes go to luigid, its output to the terminal."""
        poll_s = settings.get("poll_s", SECTION)
        on_progress = getattr(self._call, "on_progress", None)
        shown, complained = None, False
        while True:
            tail.relay()
            try:
                live = queued(job_id)
                final = ended(job_id) if live is None else None
            except SlurmError as err:
                if not complained:  # once per step: slurmctld may be busy for a while
                    tail.note(f"{err}; trying again every {poll_s:g} s")
                complained, live, final = True, None, None
            if final is not None and final.state not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING"):
                return final
            current = live or final
            if current is not None and (current.state, current.reason) != shown:
                shown = (current.state, current.reason)
                if on_progress is not None:
                    on_progress(0.0, current.status(job_id))
            time.sleep(poll_s)
