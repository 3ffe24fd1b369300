"""A lab's own step package, installed for one test: the `wisc_sorting.steps` entry point names its Step."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tasks.steps import pipeline, registry


@contextmanager
def installed_step_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str, step: str, modules: dict[str, str]
) -> Iterator[None]:
    """`package` (modules: name -> source, `declare.py` holding STEP) on sys.path and PYTHONPATH (the step
    program's too), its dist-info declaring the entry point; the step is registered until the end."""
    plugin = tmp_path / "plugin"
    (plugin / package).mkdir(parents=True)
    (plugin / package / "__init__.py").write_text("")
    for name, source in modules.items():
        (plugin / package / f"{name}.py").write_text(source)
    dist = plugin / f"{package}-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 0.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[{registry.PLUGIN_GROUP}]\n{step} = {package}.declare:STEP\n")
    monkeypatch.syspath_prepend(str(plugin))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]))
    registry.load_plugin_steps()
    try:
        yield
    finally:
        registry.STEPS.pop(step, None)
        pipeline.TASKS.pop(step, None)
