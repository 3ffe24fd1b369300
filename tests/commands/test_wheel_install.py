"""A plain (non-editable) install works: the wheel carries opts/ as package data and `wisc-sort` starts."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_into_a_fresh_venv_and_finds_its_options(tmp_path):
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True
    )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    wheel = next(wheels.glob("wisc_sorting-*.whl"))
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True)
    for argv in (["--help"], ["demo", "--help"]):
        result = subprocess.run(
            [env_dir / "bin" / "wisc-sort", *argv], capture_output=True, text=True, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert "wisc-sort" in result.stdout
    code = "from tasks.options.files import default_options; print(default_options('sorting_demo.yaml'))"
    found = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    path = Path(found.stdout.strip())
    assert (
        path.is_relative_to(env_dir) and path.read_text() == (REPO / "opts" / "sorting_demo.yaml").read_text()
    )
