"""recording.dat and the sort end to end: ordering against GPU units, crash leftovers, the curation guard."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest
import yaml

from tasks.core.manifest import read_manifest, status
from tasks.phy.validation import validate_sorter_output
from tests.support.cli import WISC_SORT
from tests.support.luigid import luigid_factory_fixture  # noqa: F401
from tests.support.pipeline_world import REPO, copy_sorting

pytestmark = pytest.mark.slow


def edit_opts(sorting, change) -> None:
    opts = yaml.safe_load(sorting.opts.read_text())
    change(opts)
    sorting.opts.write_text(yaml.safe_dump(opts, sort_keys=False))


def copy_of(demo_world, sorted_run, tmp_path):
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(sorted_run, sorting)
    return sorting


def test_sort_writes_valid_phy_output_after_recording_dat(sorted_run):
    sorting = sorted_run
    dat = read_manifest(sorting, "recording_dat")
    sort = read_manifest(sorting, "sort")
    n_samples = int((sorting.sorter_output / "recording.dat").stat().st_size // (2 * dat["num_channels"]))
    summary = validate_sorter_output(sorting.sorter_output, n_samples)
    assert summary.n_units > 5 and summary.n_spikes > 100
    assert not (sorting.sorter_output / "cluster_group.tsv").exists()  # curation is phy's, never the sort's
    assert dat["finished"] <= sort["started"] and sort["lease_gpu_units"] == "0"  # a CPU sorter holds no GPU
    assert status(sorting, "sort") == "done"


def test_kilosort_crash_leftovers_simulated_are_moved_aside_and_resorted(
    demo_world, sorted_run, tmp_path, capsys
):
    """Kilosort cannot run here (no MATLAB, no GPU): leave what its late crash leaves, as files."""
    sorting = copy_of(demo_world, sorted_run, tmp_path)
    dat_inode = (sorting.sorter_output / "recording.dat").stat().st_ino
    (sorting.sorter_output / "spike_times.npy").write_bytes(b"")
    (sorting.sorter_output / "params.py").write_bytes(b"")
    sorting.manifest("sort").unlink()  # it died before the manifest
    assert status(sorting, "sort") == "partial"

    assert demo_world.run(tmp_path) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "interrupted run" in line]
    assert len(warnings) == 1 and "params.py empty, spike_times.npy empty" in warnings[0]
    assert status(sorting, "sort") == "done"
    validate_sorter_output(sorting.sorter_output, None)
    (backup,) = (sorting.root / "si_output.bak").iterdir()
    assert (backup / "spike_times.npy").stat().st_size == 0  # moved aside, not deleted
    assert (sorting.sorter_output / "recording.dat").stat().st_ino == dat_inode  # not written again


def test_curation_is_never_overwritten_by_a_resort(demo_world, sorted_run, tmp_path, capsys):
    sorting = copy_of(demo_world, sorted_run, tmp_path)
    curation = sorting.sorter_output / "cluster_group.tsv"
    curation.write_text("cluster_id\tgroup\n0\tgood\n")
    edit_opts(sorting, lambda o: o["sorting"]["sorter_params"].update(apply_preprocessing=False))

    assert demo_world.run(tmp_path) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wisc-sort: error:")]
    assert len(errors) == 1 and "phy curation (cluster_group.tsv)" in errors[0]
    assert curation.read_text() == "cluster_id\tgroup\n0\tgood\n"
    assert status(sorting, "sort") == "stale"


def test_recording_dat_written_before_gpu_units_taken_kilosort2_5_cannot_run_here(
    demo_world, first_run, tmp_path, luigid_factory
):
    """Real luigid, the lab's Kilosort 2.5 options. Without MATLAB the sort itself fails (as it must here);
    the point is the scheduler's view: no GPU unit is held while recording.dat is written."""
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(first_run[0], sorting)
    lab = yaml.safe_load((REPO / "opts" / "sorting_acute_df.yaml").read_text())

    def to_lab_sort(opts):
        opts["preprocessing"] += [s for s in lab["preprocessing"] if s["step_name"] in ("whiten", "scale")]
        opts["sorting"] = {k: v for k, v in lab["sorting"].items() if k != "sorter_path"}

    edit_opts(sorting, to_lab_sort)
    server = luigid_factory({"gpu": 3, "cpu": 4, "disk_write": 1})
    argv = [WISC_SORT, *demo_world.argv(tmp_path)]
    argv[argv.index("--local-scheduler")] = f"--scheduler-url={server.url}"
    env = {**os.environ, "WISC_GPU_LOCK_DIR": str(tmp_path / "gpu-locks")}
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    polls = []
    while proc.poll() is None:
        running = server.api("task_list", status="RUNNING", upstream_status="", search="")
        gpu = {r["name"]: r["num_used"] for r in server.api("resource_list")}.get("gpu", 0)
        polls.append((time.time(), {t["name"] for t in running.values()}, gpu))
        time.sleep(0.05)
    output = proc.stdout.read().decode()
    assert proc.returncode != 0
    assert "kilosort2_5 needs the ks25 image" in output
    dat_done = (sorting.sorter_output / "recording.dat").stat().st_mtime
    assert any("RecordingDat" in names for _, names, _ in polls)
    assert all(gpu == 0 for _, names, gpu in polls if "RecordingDat" in names)
    sort_polls = [(t, gpu) for t, names, gpu in polls if "Sort" in names]
    assert sort_polls and all(gpu == 1 for _, gpu in sort_polls)  # acute: 1 unit
    assert min(t for t, _ in sort_polls) >= dat_done
    # Failed once, then disabled (no retries: retry_count = 1).
    sort_tasks = server.api("task_list", status="DISABLED", upstream_status="", search="Sort")
    assert [t["resources"] for t in sort_tasks.values()] == [{"cpu": 2, "gpu": 1}]
    assert np.isfinite(dat_done)
