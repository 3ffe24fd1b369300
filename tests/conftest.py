"""Session fixtures shared by the pipeline tests: one generated demo world, reused read-only."""

from __future__ import annotations

import pytest
from pipeline_world import World


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory) -> World:
    from containers.demo_world import write_demo_world

    folder = tmp_path_factory.mktemp("demo_world")
    write_demo_world(folder, duration_s=20.0, num_units=20, seed=1)
    return World(folder)
