"""Every sorter's output opens in phy's own loader (phylib), before and after `wisc-sort finalize`."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from containers.steps.sort import run as sort
from tasks.commands.cli import main
from tasks.core.manifest import now, write_manifest
from tasks.steps.postpro_stages import PostproSet, expected_stages, write_stage_manifest
from tasks.steps.registry import expected
from tests.containers.test_sorting import _make_sorting_dir
from tests.sorters.phy_open import open_in_phy
from tests.support.finalize_world import POSTPRO, build_sorting, make_world

pytestmark = pytest.mark.slow
SORTERS = {  # sorter -> (seconds of the 32-channel recording, sorter_params)
    "tridesclous2": (10.0, {"seed": 0}),
    "spykingcircus2": (10.0, {"seed": 0}),
    "lupin": (10.0, {"seed": 0}),
    "kilosort4": (8.0, {"do_CAR": False, "nblocks": 0, "torch_device": "cpu"}),
}


@pytest.fixture(scope="module", params=sorted(SORTERS))
def sorted_dir(request, tmp_path_factory) -> Path:
    """The sort step with each sorter on a generated 32-channel recording.dat: its sorter_output."""
    name = request.param
    duration, params = SORTERS[name]
    ctx, _ = _make_sorting_dir(
        tmp_path_factory.mktemp(name), {"sorter_name": name, "sorter_params": params}, duration
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sorters' own chatter
        sort(ctx)
    return ctx.sorting.sorter_output


def finalized(tmp_path: Path, sorter_output: Path, keep_dat: bool, monkeypatch, capsys) -> Path:
    """`sorter_output` in a finished, curated sorting tree (finalize_world), moved home by `wisc-sort
    finalize`; the destination's sorter_output."""
    monkeypatch.setenv("WISC_DISK_RESERVE_GB", "0")
    world = make_world(tmp_path / "cfg", tmp_path / "ssd", tmp_path / "shared")
    source = world.source()
    build_sorting(source)
    shutil.rmtree(source.sorter_output)
    shutil.copytree(sorter_output, source.sorter_output)
    clusters = np.unique(np.load(source.sorter_output / "spike_clusters.npy"))
    rows = "".join(f"{c}\tgood\n" for c in clusters)  # curated in phy: every unit labelled
    (source.sorter_output / "cluster_group.tsv").write_text("cluster_id\tgroup\n" + rows)
    (source.sorter_output / "cluster_info.tsv").write_text("cluster_id\tgroup\n" + rows)
    for step in ("recording_dat", "sort"):  # the real files now: their manifests record them
        write_manifest(source, expected(source, step), now())
    pset = PostproSet(source, POSTPRO)  # and the curation: postprocessing saw it
    for stage in expected_stages(pset).values():
        write_stage_manifest(pset, stage, now())
    argv = world.argv(*(["--keep-recording-dat"] if keep_dat else []))
    assert main(argv) == 0, capsys.readouterr().err
    assert not source.root.exists()
    return world.destination().sorter_output


@pytest.mark.parametrize("keep_dat", [True, False], ids=["keep-recording-dat", "recording-dat-deleted"])
def test_sorter_output_opens_in_phylib_before_and_after_finalize(
    sorted_dir, keep_dat, tmp_path, monkeypatch, capsys
):
    before = open_in_phy(sorted_dir)
    assert len(before["clusters"]) >= 3 and before["n_channels"] == 32
    after_dir = finalized(tmp_path, sorted_dir, keep_dat, monkeypatch, capsys)
    assert (after_dir / "recording.dat").is_file() == keep_dat
    after = open_in_phy(after_dir, raw=keep_dat, curated=True)
    assert after == {**before, "raw": keep_dat}


def test_wisc_sort_output_opens_in_phylib(sorted_run):
    """The demo world sorted by `wisc-sort sort` (recording_dat's file, the sort step's params.py)."""
    summary = open_in_phy(sorted_run.sorter_output)
    assert summary["raw"] and len(summary["clusters"]) > 5
