"""Where the engine computes, and what it holds: with `[wisc] prepro_device = cuda` the engine steps take one
GPU unit (the sort's lease and lock), the other steps none; with cpu, or `engine: spikeinterface`, nothing.
No GPU here: a stand-in device id (`[wisc] gpu_devices = 0`) is what the scheduler counts."""

from __future__ import annotations

import pytest

from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.execution.gpu import engine_device, gpu_resource_name
from tasks.steps import pipeline

TARGET = {"project": "ssd", "experiment": "exp", "subject": "SUBJ", "probe": "imec0", "n_jobs": 2}
CHAIN = (
    "preprocessing:\n  - step_name: drift_correction\n    step_params: {}\n"
    "sorting:\n  sorter_name: tridesclous2\n"
)


@pytest.fixture
def sorting(tmp_path, monkeypatch) -> SortingDir:
    projects = tmp_path / "projects.yaml"
    projects.write_text(f"project: ssd\nproject_directory: {tmp_path / 'ssd'}\n...\n")
    monkeypatch.setenv("WISC_PROJECTS_FILE", str(projects))
    monkeypatch.setenv("WISC_GPU_DEVICES", "0")  # the stand-in GPU
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sorting = SortingDir.locate(tmp_path / "ssd", "exp", "full", "SUBJ", "imec0")
    sorting.root.mkdir(parents=True)
    sorting.segments.write_text("fname\ttype\n")
    return sorting


def units(step: str) -> dict[str, int]:
    return pipeline.task_class(step)(**TARGET).resources


def test_engine_steps_take_one_gpu_unit_on_cuda_and_none_on_cpu(sorting, monkeypatch):
    sorting.opts.write_text("engine: torch\n" + CHAIN)
    monkeypatch.setenv("WISC_PREPRO_DEVICE", "cuda")
    gpu = gpu_resource_name()
    for step in ("peaks", "peak_locations", "recording_dat"):
        assert units(step).get(gpu) == 1 and units(step)["cpu"] == 2, step
    for step in ("motion", "motion_clean", "motion_plot", "preprocessed_probe", "sort"):
        assert gpu not in units(step), step  # tridesclous2 sorts on the CPU
    monkeypatch.setenv("WISC_PREPRO_DEVICE", "cpu")
    assert all(gpu not in units(step) for step in ("peaks", "recording_dat"))


def test_spikeinterface_chain_and_auto_without_a_driver_stay_on_the_cpu(sorting, monkeypatch):
    sorting.opts.write_text("engine: spikeinterface\n" + CHAIN)
    monkeypatch.setenv("WISC_PREPRO_DEVICE", "cuda")
    assert engine_device({"engine": "spikeinterface"}) == "cpu"
    assert gpu_resource_name() not in units("recording_dat")
    monkeypatch.setenv("WISC_PREPRO_DEVICE", "auto")  # a configured stand-in is no GPU the driver lists
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi
    from tasks.execution import gpu

    gpu.nvidia_smi_devices.cache_clear()
    try:
        assert engine_device({"engine": "torch"}) == "cpu"
    finally:
        gpu.nvidia_smi_devices.cache_clear()
    monkeypatch.setenv("WISC_PREPRO_DEVICE", "gpu")
    with pytest.raises(UserError, match=r"\[wisc\] prepro_device = 'gpu': use auto, cpu or cuda"):
        engine_device({"engine": "torch"})
