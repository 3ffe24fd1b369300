"""The power-user interface: `luigi --module tasks.dag <Task>` with luigi.cfg doing what the wisc-sort
flags do,
and `luigi-deps-tree --module tasks.dag Pipeline` showing the pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.manifest import read_manifest, status
from tasks.steps.registry import PREPRO_STEPS
from tests.support.pipeline_world import EXPERIMENT, PROBE, REPO, SUBJECT, copy_sorting, edit_drift

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
TARGET = ["--project", "shared_ssd", "--experiment", EXPERIMENT, "--subject", SUBJECT, "--probe", PROBE]


def write_luigi_cfg(demo_world, root: Path) -> None:
    """What `--projects-file`, `--subjects-dir`, `--cache-file` and `--n-jobs` say, as luigi.cfg."""
    (root / "luigi.cfg").write_text(
        f"[wisc]\nprojects_file = {demo_world.projects_file(root)}\n"
        f"subjects_dir = {demo_world.subjects_dir}\ncache_file = {root / 'cache.parquet'}\n"
        "[Preprocess]\nn_jobs = 2\n[Pipeline]\nn_jobs = 2\n"
        "[retcode]\nmissing_data = 20\nnot_run = 25\ntask_failed = 30\nscheduling_error = 35\n"
        "unhandled_exception = 40\n"
    )


def luigi_command(program: str, root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WISC_", "LUIGI_CONFIG_PATH"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([str(BIN / program), *args], cwd=root, env=env, capture_output=True, text=True)


def test_luigi_module_preprocess_reruns_what_changed(demo_world, first_run, tmp_path):
    source, _ = first_run
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(source, sorting)
    write_luigi_cfg(demo_world, tmp_path)
    edit_drift(sorting, "clean_motion_kwargs", sigma_smooth_s=3.0)
    before = {step: sorting.manifest(step).read_text() for step in PREPRO_STEPS}

    tree = luigi_command("luigi-deps-tree", tmp_path, "--module", "tasks.dag", "Pipeline", *TARGET)
    assert tree.returncode == 0, tree.stderr[-2000:]
    for family in ("Pipeline", "Preprocess", "Sort", "RecordingDat", "MotionClean", "Peaks", "SetupSorting"):
        assert family in tree.stdout
    assert "PENDING" in tree.stdout and "COMPLETE" in tree.stdout

    run = luigi_command(
        "luigi", tmp_path, "--module", "tasks.dag", "Preprocess", *TARGET, "--local-scheduler"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert all(status(sorting, step) == "done" for step in PREPRO_STEPS)
    changed = {step for step in PREPRO_STEPS if sorting.manifest(step).read_text() != before[step]}
    assert changed == {"motion_clean", "motion_plot", "preprocessed_probe"}
    assert read_manifest(sorting, "motion_clean")["n_jobs"] == 2  # [Preprocess] n_jobs from luigi.cfg
