"""Session fixtures shared by the pipeline tests: one generated demo world, reused read-only."""

from __future__ import annotations

import pytest

from tests.support.pipeline_world import World, copy_sorting, fast_options, write_options


@pytest.fixture
def no_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    """No disk reserve: tests on small filesystems need every byte ([wisc] disk_reserve_gb = 0)."""
    monkeypatch.setenv("WISC_DISK_RESERVE_GB", "0")


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory) -> World:
    from containers.demo.world import write_demo_world

    folder = tmp_path_factory.mktemp("demo_world")
    write_demo_world(folder, duration_s=20.0, num_units=20, seed=1)
    return World(folder)


@pytest.fixture(scope="session")
def first_run(demo_world, tmp_path_factory):
    """One complete --prepro-only run with fast options; tests work on their own copies of it."""
    root = tmp_path_factory.mktemp("first_run")
    opts = write_options(root / "fast.yaml", fast_options())
    assert demo_world.run(root, "--opts", str(opts), "--prepro-only") == 0
    return demo_world.sorting(root), opts


@pytest.fixture(scope="session")
def sorted_run(demo_world, first_run, tmp_path_factory):
    """The first run's preprocessing, then recording.dat and a tridesclous2 sort (the demo's CPU sorter);
    read-only: tests copy it."""
    root = tmp_path_factory.mktemp("sorted_run")
    sorting = demo_world.sorting(root)
    copy_sorting(first_run[0], sorting)
    assert demo_world.run(root) == 0
    return sorting
