"""Corrupted artifacts (a truncated `.npy`, a manifest that is not JSON, an `opts.yaml` broken by hand, a
half-written `params.py`): each gives a clear line or is treated as stale and recomputed; never a traceback,
never a silent reuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.core.layout import SortingDir
from tasks.core.manifest import read_manifest, status
from tasks.inputs.resolve import Target, resolve
from tasks.settings import load_paths
from tasks.steps.postpro_state import postpro_status
from tasks.steps.registry import PREPRO_STEPS, STEPS
from tasks.steps.setup import prepare_sorting
from tests.support.cli import run_cli
from tests.support.cli_world import build_cli_world
from tests.support.finalize_world import POSTPRO, build_sorting, make_world, snapshot
from tests.support.pipeline_world import copy_sorting

REPO = Path(__file__).resolve().parents[2]


def truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def half_written_params(s: SortingDir) -> str:
    params = s.sorter_output / "params.py"
    truncate(params, 17)  # `dat_path = 'recor`
    return "the sort is partial (params.py is 17 bytes, its manifest says"


def garbled_params_same_size(s: SortingDir) -> str:
    params = s.sorter_output / "params.py"
    size = params.stat().st_size
    params.write_text(("dat_path = 'rec" + " " * size)[:size])  # same size: only reading it tells
    return f"{params}: not parseable"


def truncated_npy(s: SortingDir) -> str:
    truncate(s.sorter_output / "spike_times.npy")
    return "the sort is partial (spike_times.npy is 100 bytes, its manifest says"


def manifest_not_json(s: SortingDir) -> str:
    s.manifest("sort").write_text('{"step": "sort", "signature": ')  # cut mid-write
    return "the sort is partial (its manifest is damaged"


def manifest_binary(s: SortingDir) -> str:
    s.manifest("sort").write_bytes(b"\xff\xfe\x00\x01garbage")
    return "the sort is partial (its manifest is damaged"


def manifest_not_an_object(s: SortingDir) -> str:
    s.manifest("sort").write_text("[1, 2]\n")
    return "the sort is partial (its manifest is damaged"


def opts_broken(s: SortingDir) -> str:
    s.opts.write_text("sorting: {sorter_name: [tridesclous2\n")
    return f"{s.opts}: malformed YAML at line 2"


def opts_not_a_mapping(s: SortingDir) -> str:
    s.opts.write_text("- sorting\n- tridesclous2\n")
    return f"{s.opts}: holds a list, not a mapping of options"


def truncated_analyzer_npy(s: SortingDir) -> str:
    truncate(s.root / POSTPRO / "analyzer" / "extensions" / "spike_amplitudes" / "amplitudes.npy")
    return f"postprocessing {POSTPRO} is partial, not done"


def postpro_manifest_not_json(s: SortingDir) -> str:
    s.pipeline.joinpath(f"postpro.{POSTPRO}.table.json").write_text("{")
    return f"postprocessing {POSTPRO} is partial, not done"


DAMAGES = [
    half_written_params,
    garbled_params_same_size,
    truncated_npy,
    manifest_not_json,
    manifest_binary,
    manifest_not_an_object,
    opts_broken,
    opts_not_a_mapping,
    truncated_analyzer_npy,
    postpro_manifest_not_json,
]


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.__name__ for d in DAMAGES])
def test_damaged_sorting_is_never_finalized_and_status_says_so(tmp_path, capsys, monkeypatch, damage):
    monkeypatch.setenv("WISC_DISK_RESERVE_GB", "0")
    world = make_world(tmp_path / "cfg", tmp_path / "ssd", tmp_path / "shared")
    source = world.source()
    build_sorting(source)
    expected = damage(source)
    before = snapshot(tmp_path)

    code, out, err = run_cli(["status", "--projects-file", str(world.projects_file)], capsys)
    assert code == 0 and "Traceback" not in out + err
    (line,) = out.strip().splitlines()
    if damage is not garbled_params_same_size:  # status compares sizes; finalize reads params.py
        assert "partial" in line or str(source.opts) in line, line

    code, out, err = run_cli([*world.argv(), "--dry-run"], capsys)  # the plan refuses too
    assert code == 2 and "Traceback" not in err
    code, out, err = run_cli(world.argv(), capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert expected in line, line
    assert snapshot(tmp_path) == before  # nothing moved, deleted or rewritten


@pytest.mark.parametrize("damage", [opts_broken, opts_not_a_mapping], ids=["broken", "not_a_mapping"])
def test_broken_opts_yaml_stops_sort_in_one_line(tmp_path, capsys, monkeypatch, damage):
    for name in ("WISC_PROJECTS_FILE", "WISC_SUBJECTS_DIR", "WISC_CACHE_FILE"):
        monkeypatch.delenv(name, raising=False)
    world = build_cli_world(tmp_path / "world")
    paths = load_paths(projects_file=world.projects_file, subjects_dir=world.subjects_dir)
    target = Target("shared_ssd", world.experiment, "full", world.subject, "imec0")
    prepare_sorting(resolve(paths, target), REPO / "opts" / "sorting_demo.yaml")
    sorting = SortingDir(world.sorting_dir())
    damage(sorting)
    before = snapshot(world.root)
    code, out, err = run_cli(world.argv("sort", "--prepro-only"), capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"wisc-sort: error: {sorting.opts}"), line
    assert snapshot(world.root) == before


@pytest.mark.slow
def test_truncated_npy_and_garbled_manifest_are_recomputed(demo_world, first_run, tmp_path):
    """The pipeline's own run: a truncated peak_locations.npy and a motion_clean manifest that is not JSON
    count as partial; the run moves them to *.bak/, recomputes both and nothing else."""
    sorting = demo_world.sorting(tmp_path)
    copy_sorting(first_run[0], sorting)
    locations = sorting.path(STEPS["peak_locations"].outputs[0])
    truncate(locations, 1000)
    sorting.manifest("motion_clean").write_text('{"step": "motion_clean", "sig')
    untouched = {
        s: sorting.manifest(s).read_text()
        for s in PREPRO_STEPS
        if s not in ("peak_locations", "motion_clean")
    }
    assert status(sorting, "peak_locations") == status(sorting, "motion_clean") == "partial"

    assert demo_world.run(tmp_path, "--prepro-only") == 0
    assert all(status(sorting, s) == "done" for s in PREPRO_STEPS)
    assert np.load(locations).shape == np.load(first_run[0].path(STEPS["peak_locations"].outputs[0])).shape
    assert read_manifest(sorting, "motion_clean") is not None
    assert {s: sorting.manifest(s).read_text() for s in untouched} == untouched
    kept = sorted(p.name for p in (sorting.root / "preprocessing.bak").rglob("*") if p.is_file())
    assert "peak_locations.npy" in kept and "motion_clean.manifest.json" in kept


def test_postpro_stage_sizes_are_recorded(tmp_path):
    world = make_world(tmp_path / "cfg", tmp_path / "ssd", tmp_path / "shared")
    build_sorting(world.source())
    assert postpro_status(world.source(), POSTPRO) == "done"
    manifest = read_manifest(world.source(), f"postpro.{POSTPRO}.spike_amplitudes")
    assert manifest["files"] == {"analyzer/extensions/spike_amplitudes/amplitudes.npy": 32 * 1024}
