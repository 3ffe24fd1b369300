"""What the slurm executor asks sbatch for, from the settings table, the step and the recording's kept hours
(no cluster needed: the jobs themselves run in test_slurm_executor.py)."""

from __future__ import annotations

import math

import pytest

from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.execution.executors import get_executor
from tasks.execution.slurm import JobState, batch_script, job_env, job_request


def _sorting(tmp_path, hours: float) -> SortingDir:
    sorting = SortingDir.locate(tmp_path / "ssd", "exp", "full", "SUBJ", "imec0")
    sorting.root.mkdir(parents=True)
    samples = int(hours * 3600 * 30000)
    sorting.segments.write_text(
        f"fname\ttype\tnSegmentSamp\timSampRate\na\tkeep\t{samples}\t30000\nb\texcluded\t99999999\t30000\n"
    )
    return sorting


def test_a_chronic_gpu_sort_asks_for_its_shards_cpus_memory_and_time(tmp_path, monkeypatch):
    monkeypatch.setenv("WISC_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("WISC_SLURM_ACCOUNT", "wisc-lab")
    monkeypatch.setenv("WISC_SLURM_SBATCH_OPTIONS", "--qos=long --comment='two words'")
    request = job_request("sort", _sorting(tmp_path, 10.0), 8, gpu_units=2)
    assert request.options() == [
        "--job-name=sort:exp/SUBJ/sorting.imec0", "--nodes=1", "--ntasks=1", "--cpus-per-task=8",
        f"--mem={2 * (8 + 5) * 1024}M", "--time=1800", "--gres=shard:2",
        "--partition=gpu", "--account=wisc-lab", "--qos=long", "--comment=two words",
    ]  # fmt: skip
    monkeypatch.setenv("WISC_SLURM_GPU_GRES", "gpu:a100")  # [wisc] slurm_gpu_gres: whole GPUs, of a type
    assert job_request("sort", _sorting(tmp_path / "b", 1.0), 4, gpu_units=1).gres == "gpu:a100:1"


def test_a_short_cpu_step_gets_the_minimum_time_and_the_base_memory(tmp_path):
    request = job_request("peaks", _sorting(tmp_path, 0.01), 2, gpu_units=0)
    assert (request.cpus, request.minutes, request.gres) == (2, 60, "")
    assert request.mem_mb == math.ceil((8 + 0.5 * 0.01) * 1024)


def test_the_job_records_its_id_and_node_and_execs_the_step():
    script = batch_script(["/venv/bin/python", "-m", "containers", "peaks", "/data/a b/sorting.imec0"])
    assert script.splitlines()[1] == (
        "exec /venv/bin/python -m containers peaks '/data/a b/sorting.imec0' "
        '--record "slurm_job_id=${SLURM_JOB_ID}" --record "slurm_node=${SLURMD_NODENAME}"'
    )


def test_a_worker_inside_an_allocation_hands_the_job_none_of_its_own(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "1000")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    env = job_env({"OMP_NUM_THREADS": "2"})
    assert "SLURM_JOB_ID" not in env and "SLURM_MEM_PER_NODE" not in env and "CUDA_VISIBLE_DEVICES" not in env
    assert env["SLURM_CONF"] == "/etc/slurm/slurm.conf" and env["OMP_NUM_THREADS"] == "2"


def test_slurm_admits_cores_and_gpus_so_luigid_counts_only_the_disk():
    assert get_executor("slurm").luigi_resources({"cpu": 8, "gpu": 2, "disk_write": 1}) == {"disk_write": 1}
    assert get_executor("local").luigi_resources({"cpu": 8, "gpu": 2}) == {"cpu": 8, "gpu": 2}


@pytest.mark.parametrize(
    ("state", "code", "expected"),
    [("COMPLETED", "0:0", 0), ("FAILED", "3:0", 3), ("CANCELLED", "0:15", 143), ("TIMEOUT", "0:0", 1),
     ("CANCELLED", "0:0", 1), ("UNKNOWN", "", 1)],
)  # fmt: skip
def test_the_jobs_end_becomes_the_steps_exit_code(state, code, expected):
    assert JobState(state, exit_code=code).returncode() == expected


def test_without_sbatch_the_run_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UserError, match=r"^slurm executor: sbatch is not on PATH"):
        get_executor("slurm").check(["peaks"], [{}])


def test_unbalanced_quotes_in_the_extra_options_are_one_line_naming_the_key(monkeypatch, tmp_path):
    monkeypatch.setenv("WISC_SLURM_SBATCH_OPTIONS", "--comment='open")
    with pytest.raises(UserError, match=r"^\[wisc_slurm\] sbatch_options = "):
        job_request("peaks", _sorting(tmp_path, 1.0), 1, 0).options()
