"""The architecture holds: no import cycle, the planning layer never imports the compute layer (not even in a
function), `import tasks` loads nothing, `wisc-sort status` runs light, a step program never loads luigi."""

from __future__ import annotations

import subprocess
import sys

from tests.support.imports import PACKAGES, cycles, external_imports, import_graph, module_files, reachable

HEAVY = ("spikeinterface", "probeinterface", "neo", "matplotlib", "numba", "torch", "sklearn", "scipy")


def _blocked(names: tuple[str, ...]) -> str:
    return "import sys; " + "; ".join(f"sys.modules[{name!r}] = None" for name in names)


def test_no_import_cycle_function_level_imports_included():
    assert cycles(import_graph()) == []


def test_the_planning_layer_never_names_the_compute_layer():
    graph = import_graph()
    crossing = {m: sorted(x for x in deps if x.startswith("containers")) for m, deps in graph.items()}
    assert {m: deps for m, deps in crossing.items() if m.startswith("tasks") and deps} == {}


def test_no_step_program_module_reaches_luigi_even_through_function_level_imports():
    graph, external = import_graph(), external_imports()
    reaches = {}
    for module in graph:
        if module.startswith("containers"):
            via = sorted(m for m in {module} | reachable(graph, module) if "luigi" in external[m])
            if via:
                reaches[module] = via
    assert reaches == {}


def test_import_tasks_loads_nothing():
    heavy = ("luigi", "pandas", "numpy", "yaml")
    code = f"import sys, tasks; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_planning_module_imports_without_the_compute_layer_or_heavy_packages():
    planning = sorted(name for name in module_files() if name.startswith("tasks"))
    blocked = _blocked((*HEAVY, "containers"))
    code = f"{blocked}; import importlib\nfor m in {planning!r}: importlib.import_module(m)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_status_runs_without_the_compute_layer_or_heavy_packages(tmp_path):
    projects = tmp_path / "projects.yaml"
    (tmp_path / "ssd").mkdir()
    projects.write_text(f"project: ssd\nproject_directory: {tmp_path / 'ssd'}\n...\n")
    code = (
        f"{_blocked((*HEAVY, 'containers'))}; from tasks.commands.cli import main; "
        f"sys.exit(main(['status', '--projects-file', {str(projects)!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_step_program_module_imports_without_luigi():
    compute = sorted(name for name in module_files() if name.startswith("containers"))
    code = f"{_blocked(('luigi',))}; import importlib\nfor m in {compute!r}: importlib.import_module(m)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_luigi_sees_the_pipeline_tasks_through_tasks_dag():
    code = "import tasks.dag; from luigi.task_register import Register; print(sorted(Register.task_names()))"
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for task in (
        "Peaks",
        "Motion",
        "MotionClean",
        "RecordingDat",
        "Sort",
        "Preprocess",
        "Pipeline",
        "Postpro",
        "ExportNwb",
    ):
        assert f"'{task}'" in names
    assert set(PACKAGES) == {"tasks", "containers"}
