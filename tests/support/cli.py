"""Running the command line in tests: the installed `wisc-sort` for subprocesses, `run_cli` in process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tasks.commands.cli import main

WISC_SORT = str(Path(sys.executable).parent / "wisc-sort")


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
