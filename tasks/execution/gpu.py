"""The GPU as a Luigi resource (units by recording class, per-host names) and a host-local device lock.

Two guards, because each alone fails somewhere:
- luigid counts units per resource name (`[resources] gpu = 3` in *luigid's* config, 3 units per GPU;
  a host with 2 GPUs sets 6). It never knows device ids and forgets running tasks when it restarts
  without state or drops a silent worker.
- `acquire_device` takes slot lock files on one device of this host (`flock`, released by the kernel
  when the holder dies, even by SIGKILL). It picks the device and is the hard cap: a host with 2 GPUs
  also lists 2 devices (`CUDA_VISIBLE_DEVICES`, `[wisc] gpu_devices` or `nvidia-smi -L`).

Several GPU hosts on one scheduler: give each host's luigi.cfg its own name, `[wisc] gpu_resource =
gpu@hostA` (or `gpu@{host}`, expanded to this host's short name), and list every name in luigid's
`[resources]`: `gpu@hostA = 3`, `gpu@hostB = 3`. Luigi has no per-host caps otherwise.
"""

from __future__ import annotations

import abc
import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from tasks import settings
from tasks.core.errors import UserError

DEFAULT_LOCK_DIR = settings.SETTINGS["wisc", "gpu_lock_dir"].default
# Sorters that run on an NVIDIA GPU (SpikeInterface 0.105 `gpu_capability` required or optional).
GPU_SORTERS = frozenset(
    "kilosort kilosort2 kilosort2_5 kilosort3 kilosort4 pykilosort ironclust yass rtsort".split()
)
# Worker processes log through luigi's interface logger, so waits show up in their logs.
logger = logging.getLogger("luigi-interface")

RecordingClass = Literal["chronic", "acute"]


def recording_class(kept_hours: float, threshold_hours: float | None = None) -> RecordingClass:
    """'chronic' from `[wisc] chronic_threshold_hours` (default 6 h) of kept recording up, else 'acute'."""
    if threshold_hours is None:
        threshold_hours = settings.get("chronic_threshold_hours")
    return "chronic" if kept_hours >= threshold_hours else "acute"


def gpu_capacity() -> int:
    return settings.get("gpu_capacity")


def gpu_units(sorter_name: str, kept_hours: float) -> int:
    """GPU units one sort takes: 0 for CPU sorters, `gpu_units_chronic` (2) or `gpu_units_acute` (1)."""
    if sorter_name not in GPU_SORTERS:
        return 0
    key = f"gpu_units_{recording_class(kept_hours)}"
    units = settings.get(key)
    if units > gpu_capacity():
        # luigid never schedules a task asking more than the capacity, and says nothing about it.
        raise UserError(f"[wisc] {key} = {units} exceeds [wisc] gpu_capacity = {gpu_capacity()}; lower it")
    return units


def gpu_resource_name() -> str:
    """The resource name luigid counts GPU units under: `[wisc] gpu_resource`, `{host}` expanded."""
    name = settings.get("gpu_resource")
    return name.replace("{host}", socket.gethostname().split(".")[0])


def engine_device(opts: dict) -> str:
    """Where an engine step computes, "cuda" or "cpu": `engine` in the options and `[wisc] prepro_device`
    (auto: CUDA when the NVIDIA driver lists a GPU; cpu; cuda). SpikeInterface's chain runs on the CPU."""
    if opts.get("engine") != "torch":
        return "cpu"
    wanted = settings.get("prepro_device")
    if wanted not in ("auto", "cpu", "cuda"):
        raise UserError(f"[wisc] prepro_device = {wanted!r}: use auto, cpu or cuda")
    if wanted == "cpu" or (wanted == "auto" and not nvidia_smi_devices()):
        return "cpu"  # auto: a GPU the driver lists, not a configured stand-in
    if not visible_devices():
        raise UserError("[wisc] prepro_device = cuda but this host lists no GPU; use auto or cpu")
    return "cuda"


class GpuTaskMixin(abc.ABC):
    """For a Luigi task with a cheap `gpu_units_needed()`: adds its GPU units to the task's resources.

    Put it first in the bases (`class Sort(GpuTaskMixin, StepTask)`) so the CPU units of the other base
    are kept. Luigi reads `resources` on every scheduling pass: `gpu_units_needed` must not read big files.
    """

    @abc.abstractmethod
    def gpu_units_needed(self) -> int:
        """GPU units this task takes (0 for a CPU sorter)."""

    @property
    def resources(self) -> dict[str, int]:
        merged = dict(super().resources)  # type: ignore[misc]
        units = self.gpu_units_needed()
        if units:
            merged[gpu_resource_name()] = units
        return merged

    def gpu_lease(self, **kwargs: object) -> DeviceLease:
        """`acquire_device` for this task's units; waits are shown as the task's status message."""
        on_wait = getattr(self, "set_status_message", None)
        return acquire_device(self.gpu_units_needed(), on_wait=on_wait, **kwargs)  # type: ignore[arg-type]


class GpuBusyError(RuntimeError):
    """No device of this host had the slots a sort needs before the timeout."""


class DeviceLease:
    """Slots held on one device until `release()` (or the end of the `with` block, or the process)."""

    def __init__(self, device_id: str | None, units: int, lock_dir: Path | None, fds: list[int]) -> None:
        self.device_id, self.units, self.lock_dir, self._fds = device_id, units, lock_dir, fds

    def env(self) -> dict[str, str]:
        """Environment for the step: only the leased device visible; nothing for a 0-unit lease."""
        return {} if self.device_id is None else {"CUDA_VISIBLE_DEVICES": self.device_id}

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)  # closing the only descriptor drops its flock

    def __enter__(self) -> DeviceLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except (OSError, TypeError):  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"DeviceLease(device_id={self.device_id!r}, units={self.units}, lock_dir={self.lock_dir})"


def visible_devices() -> list[str]:
    """This worker's GPUs: CUDA_VISIBLE_DEVICES, else `[wisc] gpu_devices`, else `nvidia-smi -L`, else 0.

    An empty CUDA_VISIBLE_DEVICES counts as unset (CUDA would read it as "no GPU").
    """
    for listed in (os.environ.get("CUDA_VISIBLE_DEVICES", ""), settings.raw("gpu_devices")):
        devices = [d.strip() for d in listed.split(",") if d.strip()]
        if devices:
            return devices
    return nvidia_smi_devices() or ["0"]


@lru_cache(maxsize=1)
def nvidia_smi_devices() -> list[str]:
    """The GPUs the NVIDIA driver lists (`nvidia-smi -L`); [] where there is no driver. Asked once per
    process: Luigi reads a task's resources on every scheduling pass."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return re.findall(r"^GPU (\d+):", listing, flags=re.MULTILINE)


def _lock_dir(lock_dir: Path | None) -> Path:
    path = Path(lock_dir or settings.get("gpu_lock_dir")).expanduser()
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        if str(path) == DEFAULT_LOCK_DIR:
            # Shared by every user's workers on this host; sticky so nobody removes another's files.
            try:
                path.chmod(0o1777)
            except OSError:
                pass
    return path


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY)  # another user's file: flock needs no write access


def _try_lock(path: Path) -> int | None:
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _note_holder(fd: int) -> None:
    """Write who holds a slot into its file (for the wait message); skipped on another user's file."""
    note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
    except OSError:
        pass


def _slot_path(lock_dir: Path, device: str, k: int) -> Path:
    return lock_dir / f"gpu{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.slot{k}.lock"


def _try_take(lock_dir: Path, devices: list[str], units: int, capacity: int) -> tuple[str, list[int]] | dict:
    """Under the host's probe lock: the device with most free slots and `units` of them, or the busy slots."""
    probe = os.open(lock_dir / "probe.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        # Serialize probing so two acquirers never see each other's probe locks as held slots.
        fcntl.flock(probe, fcntl.LOCK_EX)
        free: dict[str, list[int]] = {}
        busy: dict[str, list[Path]] = {}
        for device in devices:
            free[device], busy[device] = [], []
            for k in range(capacity):
                slot = _slot_path(lock_dir, device, k)
                fd = _try_lock(slot)
                if fd is None:
                    busy[device].append(slot)
                else:
                    free[device].append(fd)
        best = max(devices, key=lambda d: len(free[d]))  # first listed wins a tie
        keep = free[best][:units] if len(free[best]) >= units else []
        for fd in (fd for fds in free.values() for fd in fds if fd not in keep):
            os.close(fd)
        return (best, keep) if keep else busy
    finally:
        os.close(probe)


def _busy_state(busy: dict[str, list[Path]], capacity: int, lock_dir: Path) -> str:
    notes: dict[str, None] = {}  # ordered and deduplicated: one holder usually has several slots
    for device, slots in busy.items():
        for slot in slots:
            try:
                notes[f"gpu{device}: {slot.read_text().strip() or 'unknown'}"] = None
            except OSError:
                continue
    free = ", ".join(f"gpu{d}={capacity - len(slots)}/{capacity}" for d, slots in busy.items())
    return f"free slots {free} in {lock_dir} (held by {'; '.join(notes) or 'unknown'})"


def acquire_device(
    units: int,
    lock_dir: Path | None = None,
    devices: list[str] | None = None,
    capacity: int | None = None,
    timeout_s: float | None = None,
    poll_s: float = 2.0,
    on_wait: Callable[[str], object] | None = None,
) -> DeviceLease:
    """Take `units` slots on ONE device of this host, waiting up to `timeout_s` for room.

    Defaults: `[wisc] gpu_lock_dir` (/tmp/wisc-sorting-gpu-locks), `visible_devices()`, `[wisc] gpu_capacity`
    (3), `[wisc] gpu_lock_timeout_s` (1 day). Use as `with acquire_device(2) as lease: ... lease.env()`.
    """
    if units <= 0:
        return DeviceLease(None, 0, None, [])
    capacity = gpu_capacity() if capacity is None else capacity
    if units > capacity:
        raise UserError(f"a step asks {units} GPU units, a device has {capacity}; lower [wisc] gpu_units_*")
    timeout_s = settings.get("gpu_lock_timeout_s") if timeout_s is None else timeout_s
    path, devices = _lock_dir(lock_dir), devices or visible_devices()
    start, last_message = time.monotonic(), -float("inf")
    while True:
        taken = _try_take(path, devices, units, capacity)
        if isinstance(taken, tuple):
            device, fds = taken
            for fd in fds:
                _note_holder(fd)
            return DeviceLease(device, units, path, fds)
        waited, state = time.monotonic() - start, _busy_state(taken, capacity, path)
        if waited >= timeout_s:
            raise GpuBusyError(
                f"no GPU on {socket.gethostname()} had {units} free unit(s) after {waited:.0f} s: {state}; "
                "luigid may have lost track of running sorts (restart, dropped worker): check those pids"
            )
        message = f"waiting for {units} GPU unit(s) on {socket.gethostname()}: {state}"
        if time.monotonic() - last_message >= 60:
            last_message = time.monotonic()
            logger.warning(message)
            if on_wait is not None:
                on_wait(message)
        time.sleep(min(poll_s, max(0.0, timeout_s - waited)))
