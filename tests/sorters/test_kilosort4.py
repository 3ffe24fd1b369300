"""Kilosort 4: its device from the lease, its log as the sort's progress, and a real sort on the CPU end
to end (`wisc-sort sort`, validation, postprocessing, phy's loader, accuracy against the ground truth)."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from containers.demo.ground_truth import (
    ACCURACY_GOOD,
    SNR_MIN,
    compare_to_ground_truth,
    read_demo_ground_truth,
)
from containers.runtime.progress import ProgressFile
from containers.sorters import kilosort4
from tasks.core.errors import UserError
from tasks.core.manifest import read_manifest
from tasks.phy.validation import validate_sorter_output
from tests.sorters.phy_open import open_in_phy
from tests.support.pipeline_world import REPO, World, write_options
from tests.support.postpro_world import postpro, setup_world

KS4_OPTS = REPO / "opts" / "sorting_ks4_acute.yaml"


@pytest.fixture
def cuda(monkeypatch):
    """Sets what torch answers to `torch.cuda.is_available()` (no GPU here: True is a fake)."""
    torch = pytest.importorskip("torch")

    def set_available(available: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)

    return set_available


def test_device_auto_runs_on_the_cpu_when_torch_sees_no_gpu_despite_a_lease(cuda):
    cuda(False)
    assert kilosort4.resolve_device("auto", "0") == ("cpu", "cpu")
    assert kilosort4.sorter_params({"nblocks": 0}, "0") == ({"nblocks": 0, "torch_device": "cpu"}, "cpu")


def test_device_auto_takes_the_leased_gpu_cuda_faked(cuda):
    cuda(True)
    assert kilosort4.resolve_device("auto", "3") == ("cuda", "cuda:3")  # cuda:0 inside CUDA_VISIBLE_DEVICES=3
    assert kilosort4.resolve_device("auto", None) == ("cpu", "cpu")  # no lease: no GPU of ours to use
    assert kilosort4.resolve_device("cpu", "3") == ("cpu", "cpu")


def test_device_errors_name_the_key_and_what_to_do(cuda):
    cuda(False)
    with pytest.raises(UserError, match=r"sorter_params.torch_device 'cuda': torch sees no CUDA device here"):
        kilosort4.resolve_device("cuda", "0")
    with pytest.raises(UserError, match=r"torch_device 'cuda:1': use auto, cuda or cpu"):
        kilosort4.resolve_device("cuda:1", "0")


def test_a_second_copy_of_the_recording_is_refused():
    with pytest.raises(UserError, match=r"save_preprocessed_copy: true writes a second, whitened copy"):
        kilosort4.sorter_params({"save_preprocessed_copy": True, "torch_device": "cpu"}, None)
    with pytest.raises(UserError, match=r"use_binary_file: false reads recording.dat through SpikeInterface"):
        kilosort4.sorter_params({"use_binary_file": False, "torch_device": "cpu"}, None)


def test_kilosort_log_drives_the_progress_line(tmp_path):
    progress = ProgressFile(tmp_path / "sort.progress.json", "sorting (kilosort4, 0.50 h)", 0, 0.5, True)
    log = logging.getLogger("kilosort.run_kilosort")

    def shown() -> dict:
        return json.loads(progress.path.read_text())

    with kilosort4.progress_from_log(progress, {"nblocks": 0}):
        log.info("Computing preprocessing variables.")
        assert shown()["message"] == "sorting (kilosort4, 0.50 h): 0% of 30.0 min (preprocessing)"
        log.info("Extracting spikes using templates")
        start = shown()["percent"]
        assert shown()["message"].endswith("(detecting spikes)")
        progress.update(50.0, "", n=3, total=6)  # a tqdm bar of Kilosort's, through the step's hook
        assert shown()["message"] == "sorting (kilosort4, 0.50 h): detecting spikes: batch 3/6"
        assert start < shown()["percent"] < 100
        log.info("412 spikes extracted in 3.10s; total 9.00s")
        log.info("First clustering")
        assert shown()["message"].endswith("(first clustering; 412 spikes extracted)")
        assert shown()["percent"] > start
    handlers = logging.getLogger("kilosort").handlers
    assert not any(isinstance(h, kilosort4.KilosortProgress) for h in handlers)
    assert "update" not in vars(progress)  # the ProgressFile's own method again


def test_cpu_estimate_grows_with_channels_and_kilosorts_drift_pass(cuda):
    cuda(False)
    assert kilosort4.demo_plan(120.0, 384, {}) == kilosort4.cpu_note(120.0, 384, {})
    per_second = kilosort4.cpu_seconds(1.0, 384)
    assert kilosort4.cpu_seconds(10.0, 384) == pytest.approx(10 * per_second)
    assert kilosort4.cpu_seconds(1.0, 32) < per_second < kilosort4.cpu_seconds(1.0, 384, True)
    note = kilosort4.cpu_note(3600.0, 384, {"nblocks": 0})
    assert note.startswith("kilosort4 on the CPU: about ") and "for 1.0 h of 384 channels" in note


def cheap_ks4_options() -> dict:
    """The shipped Kilosort 4 options, with cheap choices where the test is about the pipeline: center of mass
    for our motion (if the chain has it), short motion bins, Kilosort's universal templates every 80 um."""
    opts = yaml.safe_load(KS4_OPTS.read_text())
    for step in opts["preprocessing"]:
        if step["step_name"] == "drift_correction":
            drift = step["step_params"]
            drift["localize_peaks_kwargs"] = {"method": "center_of_mass", "radius_um": 75.0}
            drift["estimate_motion_kwargs"]["bin_s"] = 2.0
            drift["clean_motion_kwargs"]["sigma_smooth_s"] = 2.0
    opts["sorting"]["sorter_params"].update(dmin=80.0, torch_device="cpu")
    return opts


@pytest.fixture(scope="module")
def ks4_world(tmp_path_factory) -> World:
    from containers.demo.world import write_demo_world

    folder = tmp_path_factory.mktemp("ks4_world")
    write_demo_world(folder, duration_s=8.0, num_units=12, seed=2, flat_s=1.0)
    return World(folder)


@pytest.mark.slow
def test_kilosort4_sorts_on_the_cpu_end_to_end(ks4_world, tmp_path, capsys):
    opts = write_options(tmp_path / "sorting_ks4_cheap.yaml", cheap_ks4_options())
    assert ks4_world.run(tmp_path, "--opts", str(opts)) == 0, capsys.readouterr().err
    sorting = ks4_world.sorting(tmp_path)
    out = sorting.sorter_output
    manifest = read_manifest(sorting, "sort")
    assert (manifest["sorter_name"], manifest["sorter_version"], manifest["device"]) == (
        "kilosort4",
        "4.1.7",
        "cpu",
    )
    assert [p.name for p in out.glob("*.dat")] == ["recording.dat"]  # read in place: no second copy
    summary = validate_sorter_output(out, manifest["recording_dat"]["num_samples"])
    assert summary.n_units == manifest["n_units"] > 0 and (out / "kilosort4.log").is_file()
    assert not (out / "cluster_group.tsv").exists()  # Kilosort's copy of its labels is not phy's curation
    assert "kilosort4 on the CPU: about" in sorting.log("sort").read_text()
    opened = open_in_phy(out)
    assert opened["n_spikes"] == summary.n_spikes

    post_sorting, post_opts = setup_world(ks4_world, sorting, tmp_path / "post")
    assert postpro(ks4_world, tmp_path / "post", post_opts, "--allow-uncurated") == 0
    assert (post_sorting.root / "postpro_demo" / "metrics.csv").is_file()

    frames, units, rate, snr = read_demo_ground_truth(ks4_world.folder / "ground_truth")
    table, line = compare_to_ground_truth(out, frames, units, rate, snr)
    print(f"kilosort4 on the CPU, {frames.max() / rate:.1f} s of 384 channels: {line}")
    print(table.round(2).to_string())
    found = int(((table["accuracy"] >= ACCURACY_GOOD) & (table["snr"] > SNR_MIN)).sum())
    assert found >= 3, table  # measured: 5 of 9 (seed 2, 6.9 s, templates every 80 um)
