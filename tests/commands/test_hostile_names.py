"""Hostile names (subject, experiment, alias, probe, postprocessing set, project folders) with spaces,
quotes, `$(...)`, `;`, non-ASCII and `../`, in the YAML files and on the command line: plain names work as
data (no path goes through a shell), names that would leave the project roots are refused in one line, and
nothing is ever written outside the project roots (a sentinel folder around them stays as it was)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tasks.core.layout import SortingDir
from tasks.core.manifest import status
from tasks.inputs.resolve import Target, resolve
from tasks.settings import load_paths
from tasks.steps.registry import PREPRO_STEPS
from tasks.steps.setup import prepare_sorting
from tests.support.cli import WISC_SORT, run_cli
from tests.support.cli_world import build_cli_world, contents
from tests.support.pipeline_world import EXPERIMENT, PROBE, SUBJECT, copy_sorting

REPO = Path(__file__).resolve().parents[2]
DEMO_OPTS = REPO / "opts" / "sorting_demo.yaml"
WISC_ENV = ("WISC_PROJECTS_FILE", "WISC_SUBJECTS_DIR", "WISC_EXCLUSIONS_PROJECT", "WISC_CACHE_FILE")
# Plain names, hostile to anything that would pass them through a shell or a naive parser.
HOSTILE = "a b 'q' \"d\" $(touch PWNED); `touch PWNED` ü漢 -x"
PWNED = "PWNED"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in WISC_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # a `touch PWNED` that ran would land here


def pwned(root: Path) -> list[Path]:
    """Files a `touch PWNED` run by a shell would have made (named exactly that)."""
    return list(root.rglob(PWNED))


def rename_experiment(world, experiment: str, alias: str = "full") -> None:
    """The subject file with its experiment (and alias) renamed, written as YAML (quoting as needed)."""
    data = yaml.safe_load(world.subject_file.read_text())
    exp = data["experiments"].pop(world.experiment)
    exp["aliases"] = {alias: exp["aliases"]["full"]}
    data["experiments"][experiment] = exp
    world.subject_file.write_text(yaml.safe_dump(data, allow_unicode=True))


# -- names that would leave the project roots: refused in one line, nothing written anywhere ----------------

ESCAPES = {
    "experiment_in_subject_file": ("../../escaped", "full", "CNPIX99-Test,imec0"),
    "experiment_dotdot": ("..", "full", "CNPIX99-Test,imec0"),
    "alias_in_subject_file": (None, "../up", "CNPIX99-Test,imec0"),
    "subject_on_command_line": (None, "full", "../CNPIX99-Test,imec0"),
    "probe_on_command_line": (None, "full", "CNPIX99-Test,../../imec0"),
}


@pytest.mark.parametrize("case", ESCAPES, ids=list(ESCAPES))
def test_names_that_would_escape_are_refused(tmp_path, capsys, case):
    world = build_cli_world(tmp_path / "sentinel" / "world")
    experiment, alias, input_ = ESCAPES[case]
    experiment = experiment or world.experiment
    rename_experiment(world, experiment, alias)
    before = contents(tmp_path)
    argv = ["sort", "--project", "shared_ssd", "--experiment", experiment, "--alias", alias,
            "--input", input_, *world.path_args(), "--opts", str(DEMO_OPTS), "--prepro-only"]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "is not a plain folder name" in line and "rename it" in line, line
    assert contents(tmp_path) == before  # the sentinel around the project roots: nothing written
    assert not (tmp_path / "sentinel" / "escaped").exists()


def test_postpro_set_name_that_would_escape_is_refused(tmp_path, capsys):
    world = build_cli_world(tmp_path / "sentinel" / "world")
    before = contents(tmp_path)
    code, out, err = run_cli(world.argv("postpro", "--postpro", "../../../escaped"), capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "postprocessing set '../../../escaped' is not a plain folder name" in line
    assert contents(tmp_path) == before


# -- plain names with every character a shell would trip on: they work ------------------------------------


def test_hostile_plain_names_work_as_data(tmp_path, capsys):
    # The raw files' folder too (the test's .meta writer is latin-1: no CJK there; SpikeGLX is on Windows)
    world = build_cli_world(tmp_path / f"world {HOSTILE.replace('漢', '')}")
    subject = f"S {HOSTILE}"
    original_exclusions = world.exclusions_file("imec0")
    world.subject_file.rename(world.subjects_dir / f"{subject}.yml")
    world.subject_file = world.subjects_dir / f"{subject}.yml"
    world.subject = subject
    rename_experiment(world, f"E {HOSTILE}", f"A {HOSTILE}")
    excl = world.shared_dir / f"E {HOSTILE}" / subject / "imec0.ap.artifacts.htsv"
    excl.parent.mkdir(parents=True)
    shutil.copy(original_exclusions, excl)
    argv = ["segments", "--project", "shared_ssd", "--experiment", f"E {HOSTILE}", "--alias", f"A {HOSTILE}",
            "--input", f"{subject},imec0", *world.path_args()]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    paths = load_paths(projects_file=world.projects_file, subjects_dir=world.subjects_dir)
    target = Target("shared_ssd", f"E {HOSTILE}", f"A {HOSTILE}", subject, "imec0")
    resolved = resolve(paths, target)
    prepare_sorting(resolved, DEMO_OPTS)
    expected = world.ssd_dir / f"E {HOSTILE}" / f"A {HOSTILE}" / subject / "sorting.imec0"
    assert resolved.sorting.root == expected and (expected / "segments.htsv").is_file()
    assert pwned(tmp_path) == []


@pytest.mark.slow
def test_a_step_runs_under_hostile_names(demo_world, first_run, tmp_path):
    """The real command and a real step program (a subprocess, paths as arguments) under a project folder,
    experiment, alias and subject named with quotes, `$(...)`, `;` and non-ASCII, from a plain data folder."""
    project = tmp_path / f"proj {HOSTILE}"
    experiment, alias, subject = f"E {HOSTILE}", f"A {HOSTILE}", f"S {HOSTILE}"
    subjects = tmp_path / "subjects"
    subjects.mkdir()
    data = yaml.safe_load((demo_world.subjects_dir / f"{SUBJECT}.yml").read_text())
    exp = data["experiments"].pop(EXPERIMENT)
    exp["aliases"] = {alias: exp["aliases"]["full"]}
    data["experiments"][experiment] = exp
    (subjects / f"{subject}.yml").write_text(yaml.safe_dump(data, allow_unicode=True))
    shared = tmp_path / "shared"
    excl = shared / experiment / subject / f"{PROBE}.ap.artifacts.htsv"
    excl.parent.mkdir(parents=True)
    shutil.copy(demo_world.folder / "shared" / EXPERIMENT / SUBJECT / excl.name, excl)
    projects = tmp_path / "projects.yaml"
    projects.write_text(yaml.safe_dump_all([
        {"project": "shared", "project_directory": str(shared)},
        {"project": f"ssd {HOSTILE}", "project_directory": str(project)},
    ], allow_unicode=True))  # fmt: skip
    sorting = SortingDir.locate(project, experiment, alias, subject, PROBE)
    copy_sorting(first_run[0], sorting)
    sorting.manifest("motion_plot").unlink()  # one step to run
    folder = tmp_path / "data folder"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in WISC_ENV}
    result = subprocess.run(
        [WISC_SORT, "sort", "--projects-file", str(projects), "--subjects-dir", str(subjects),
         "--cache-file", str(tmp_path / "cache.parquet"), "--project", f"ssd {HOSTILE}",
         "--experiment", experiment, "--alias", alias, "--input", f"{subject},{PROBE}", "--prepro-only",
         "--local-scheduler"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(status(sorting, step) == "done" for step in PREPRO_STEPS)
    assert sorting.path("preprocessing/motion_summary.png").stat().st_size > 0
    assert pwned(tmp_path) == [] and pwned(Path.cwd()) == []
