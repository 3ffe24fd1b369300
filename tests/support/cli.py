"""Running the command line in tests: the installed `wisc-sort` for subprocesses, `run_cli` in process, and
the checks every bad-input test makes (one `wisc-sort: error:` line, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tasks.commands.cli import main

WISC_SORT = str(Path(sys.executable).parent / "wisc-sort")
WISC_ENV = ("WISC_PROJECTS_FILE", "WISC_SUBJECTS_DIR", "WISC_EXCLUSIONS_PROJECT", "WISC_CACHE_FILE")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`wisc-sort ARGV` in this process: (exit code, stdout, stderr)."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def main_keeping_env(argv: list[str]) -> int:
    """`wisc-sort ARGV` in this process, the environment (which commands may set) restored afterwards."""
    saved = dict(os.environ)
    try:
        return main(argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Result:
    rc: int
    out: str
    err: str


def run_inprocess(capsys, argv: list[str]) -> Result:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    return Result(rc, captured.out, captured.err)


def run_subprocess(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Result:
    clean = {k: v for k, v in os.environ.items() if k not in (*WISC_ENV, "LUIGI_CONFIG_PATH")}
    proc = subprocess.run(
        [str(WISC_SORT), *argv], cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("wisc-sort: warning:")]


def assert_one_error(result: Result, expect: list[str]) -> str:
    """Non-zero exit, no traceback, nothing on stdout, one `wisc-sort: error:` line holding `expect`."""
    assert result.rc != 0, result
    assert "Traceback" not in result.out + result.err
    assert result.out == ""
    others = [line for line in result.err.splitlines() if not line.startswith("wisc-sort: warning:")]
    assert len(others) == 1, result.err
    assert others[0].startswith("wisc-sort: error: "), result.err
    for text in expect:
        assert text in others[0], (text, others[0])
    return others[0]
