"""A step is one declaration plus one module: a throwaway step, declared in a temporary package (an entry
point of group `wisc_sorting.steps`) with its module beside it, runs through Luigi and the step program."""

from __future__ import annotations

import json
import sys

import luigi
import pytest

from tasks.core.layout import SortingDir
from tasks.core.manifest import status
from tasks.steps import pipeline, registry
from tests.support.plugins import installed_step_plugin

DECLARATION = """from tasks.steps.registry import Step

STEP = Step(
    "hello", ("hello.txt",), lambda o: ("segments",), description="say hello", module="wisc_hello.hello"
)
"""
MODULE = '''"""The hello step: writes which luigi modules the step program loaded (none: compute only)."""
import json
import sys


def run(ctx):
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "luigi")
    (ctx.sorting.root / "hello.txt").write_text(json.dumps({"loaded": loaded, "n_jobs": ctx.n_jobs}))
'''


@pytest.fixture
def hello_plugin(tmp_path, monkeypatch):
    with installed_step_plugin(
        tmp_path, monkeypatch, "wisc_hello", "hello", {"declare": DECLARATION, "hello": MODULE}
    ):
        yield


def _sorting(tmp_path, monkeypatch) -> SortingDir:
    projects = tmp_path / "projects.yaml"
    projects.write_text(f"project: ssd\nproject_directory: {tmp_path / 'ssd'}\n...\n")
    monkeypatch.setenv("WISC_PROJECTS_FILE", str(projects))
    sorting = SortingDir.locate(tmp_path / "ssd", "exp", "full", "SUBJ", "imec0")
    sorting.root.mkdir(parents=True)
    sorting.opts.write_text("preprocessing: []\n")  # set up already: SetupSorting is complete
    sorting.segments.write_text("fname\ttype\n")
    return sorting


def test_a_declared_step_runs_through_luigi_and_the_step_program(hello_plugin, tmp_path, monkeypatch):
    sorting = _sorting(tmp_path, monkeypatch)
    task_class = pipeline.task_class("hello")
    assert task_class.__name__ == "Hello" and registry.step_module("hello") == "wisc_hello.hello"
    task = task_class(project="ssd", experiment="exp", subject="SUBJ", probe="imec0", n_jobs=1)
    result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="CRITICAL")
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    assert status(sorting, "hello") == "done"
    written = json.loads((sorting.root / "hello.txt").read_text())
    assert written == {"loaded": [], "n_jobs": 1}  # the step program never loaded luigi
    assert "hello" in registry.pipeline_steps({}) and sys.modules["wisc_hello.declare"]
