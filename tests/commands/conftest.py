"""Fixtures of the command-line tests: a generated archive (CliWorld) and an environment without WISC_*."""

from __future__ import annotations

import pytest

from tests.support.cli import WISC_ENV
from tests.support.cli_world import CliWorld, build_cli_world


@pytest.fixture
def clean_env(monkeypatch):
    """main() exports WISC_* for Luigi workers: undo that after each test, and start without any."""
    for name in (*WISC_ENV, "LUIGI_CONFIG_PATH"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def world(tmp_path) -> CliWorld:
    return build_cli_world(tmp_path / "world")
