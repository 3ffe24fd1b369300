"""GPU units by recording class, resource names, the Luigi resources mixin, and the host-local device lock."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import luigi
import pytest

from tasks.core.errors import UserError
from tasks.execution.gpu import (
    GpuBusyError,
    GpuTaskMixin,
    acquire_device,
    gpu_resource_name,
    gpu_units,
    recording_class,
    visible_devices,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_gpu_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU machine's own settings must not leak into these tests."""
    for name in ("CUDA_VISIBLE_DEVICES", "WISC_GPU_DEVICES", "WISC_GPU_RESOURCE", "WISC_GPU_LOCK_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_recording_class_uses_the_configured_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    assert recording_class(5.9) == "acute"
    assert recording_class(6.0) == "chronic"
    assert recording_class(30.0, threshold_hours=48.0) == "acute"
    monkeypatch.setenv("WISC_CHRONIC_THRESHOLD_HOURS", "2")
    assert recording_class(3.0) == "chronic"
    monkeypatch.setenv("WISC_CHRONIC_THRESHOLD_HOURS", "six")
    with pytest.raises(UserError, match=r"\[wisc\] chronic_threshold_hours = 'six'"):
        recording_class(3.0)


@pytest.mark.parametrize("sorter", ["tridesclous2", "spykingcircus2", "lupin", "mountainsort5", "simple"])
def test_cpu_sorters_take_no_gpu_units(sorter: str) -> None:
    assert gpu_units(sorter, 24.0) == 0
    assert gpu_units(sorter, 0.5) == 0


@pytest.mark.parametrize("sorter", ["kilosort2_5", "kilosort3", "kilosort4"])
def test_gpu_sorters_take_two_units_chronic_one_acute(sorter: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (gpu_units(sorter, 23.0), gpu_units(sorter, 1.0)) == (2, 1)
    monkeypatch.setenv("WISC_GPU_UNITS_ACUTE", "3")
    assert gpu_units(sorter, 1.0) == 3
    monkeypatch.setenv("WISC_GPU_UNITS_CHRONIC", "4")  # more than a device holds: never scheduled
    with pytest.raises(UserError, match=r"gpu_units_chronic = 4 exceeds \[wisc\] gpu_capacity = 3"):
        gpu_units(sorter, 23.0)


def test_resource_name_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gpu_resource_name() == "gpu"
    monkeypatch.setenv("WISC_GPU_RESOURCE", "gpu@hostA")
    assert gpu_resource_name() == "gpu@hostA"
    monkeypatch.setenv("WISC_GPU_RESOURCE", "gpu@{host}")
    assert gpu_resource_name() == f"gpu@{socket.gethostname().split('.')[0]}"


class CpuTask(luigi.Task):
    n_jobs = luigi.IntParameter(default=2)

    @property
    def resources(self) -> dict[str, int]:
        return {"cpu": self.n_jobs}


class GpuSort(GpuTaskMixin, CpuTask):
    sorter = luigi.Parameter()
    kept_hours = luigi.FloatParameter()

    def gpu_units_needed(self) -> int:
        return gpu_units(self.sorter, self.kept_hours)


def test_mixin_adds_gpu_units_to_cpu_units(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GpuSort(sorter="kilosort2_5", kept_hours=12.0).process_resources() == {"cpu": 2, "gpu": 2}
    assert GpuSort(sorter="kilosort4", kept_hours=1.0, n_jobs=4).resources == {"cpu": 4, "gpu": 1}
    assert GpuSort(sorter="tridesclous2", kept_hours=12.0).resources == {"cpu": 2}
    monkeypatch.setenv("WISC_GPU_RESOURCE", "gpu@hostB")
    assert GpuSort(sorter="kilosort2_5", kept_hours=1.0).resources == {"cpu": 2, "gpu@hostB": 1}


def lease(lock_dir: Path, units: int, devices: tuple[str, ...] = ("0",), **kwargs):
    return acquire_device(units, lock_dir=lock_dir, devices=list(devices), capacity=3, poll_s=0.05, **kwargs)


def test_two_chronic_leases_cannot_share_one_device(tmp_path: Path) -> None:
    with lease(tmp_path, 2) as first:
        assert first.device_id == "0" and first.env() == {"CUDA_VISIBLE_DEVICES": "0"}
        with pytest.raises(GpuBusyError, match=rf"gpu0=1/3 in {tmp_path} \(held by gpu0: pid \d+"):
            lease(tmp_path, 2, timeout_s=0.2)
        with lease(tmp_path, 1) as acute:  # 2 + 1 fits
            assert acute.device_id == "0"
            with pytest.raises(GpuBusyError):
                lease(tmp_path, 1, timeout_s=0.1)
    with lease(tmp_path, 2) as again:  # released on leaving the block
        assert again.held


def test_a_waiting_lease_gets_the_slots_once_freed(tmp_path: Path) -> None:
    messages: list[str] = []
    holder = lease(tmp_path, 3)
    threading.Timer(0.3, holder.release).start()
    with lease(tmp_path, 2, timeout_s=60, on_wait=messages.append) as waited:
        assert waited.device_id == "0"
    assert messages and "waiting for 2 GPU unit(s)" in messages[0]


def test_leases_spread_over_devices(tmp_path: Path) -> None:
    with lease(tmp_path, 2, ("0", "1")) as a, lease(tmp_path, 2, ("0", "1")) as b:
        assert {a.device_id, b.device_id} == {"0", "1"}
        with lease(tmp_path, 1, ("0", "1")) as c:  # one free slot on each: the first listed
            assert c.device_id == "0"
        with pytest.raises(GpuBusyError, match="gpu0=1/3, gpu1=1/3"):
            lease(tmp_path, 2, ("0", "1"), timeout_s=0.1)


def test_zero_units_is_a_no_op_lease(tmp_path: Path) -> None:
    with lease(tmp_path / "locks", 0) as nothing:
        assert nothing.device_id is None and nothing.env() == {}
    assert not (tmp_path / "locks").exists()


def test_lock_dir_devices_and_uuid_names_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WISC_GPU_LOCK_DIR", str(tmp_path / "cfg-locks"))
    monkeypatch.setenv("WISC_GPU_DEVICES", "GPU-3f2a/1, 1")
    assert visible_devices() == ["GPU-3f2a/1", "1"]
    with acquire_device(3) as whole:
        assert whole.env() == {"CUDA_VISIBLE_DEVICES": "GPU-3f2a/1"}
        assert (tmp_path / "cfg-locks" / "gpuGPU-3f2a_1.slot2.lock").exists()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the worker's own devices win
    assert visible_devices() == ["2", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.delenv("WISC_GPU_DEVICES")
    if shutil.which("nvidia-smi") is None:
        assert visible_devices() == ["0"]


def test_units_over_capacity_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="asks 4 GPU units, a device has 3"):
        lease(tmp_path, 4)


HOLD = """
import sys, time
from pathlib import Path
from tasks.execution.gpu import acquire_device
lease = acquire_device(3, lock_dir=Path(sys.argv[1]), devices=["0"], capacity=3)
print(lease.device_id, flush=True)
time.sleep(600)
"""


def test_slots_are_freed_when_the_holder_is_sigkilled(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0"
        with pytest.raises(GpuBusyError, match=f"pid {holder.pid} "):
            lease(tmp_path, 1, timeout_s=0.1)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with lease(tmp_path, 3) as taken:
        assert taken.device_id == "0"
