"""The planning layer stays light: `tasks` and the CLI import with the heavy packages made unimportable."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("spikeinterface", "probeinterface", "neo", "matplotlib", "numba", "torch", "sklearn")


def test_tasks_and_cli_import_without_spikeinterface():
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in HEAVY)
    code = (
        f"import sys; {block}; import tasks, tasks.commands.cli, tasks.commands.sort, tasks.execution.gpu, tasks.core.diskspace; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_luigi_sees_the_pipeline_tasks():
    code = (
        "import luigi, tasks; from luigi.task_register import Register; print(sorted(Register.task_names()))"
    )
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for task in ("Peaks", "Motion", "MotionClean", "RecordingDat", "Sort", "Preprocess", "Pipeline"):
        assert f"'{task}'" in names
