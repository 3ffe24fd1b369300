"""Postprocessing on a real sort of the generated world: metrics.csv, per-state rates, gate, reruns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tasks.steps.postpro_stages import PostproSet
from tasks.steps.postpro_state import postpro_sets, postpro_status
from tests.support.pipeline_world import EXPERIMENT, SUBJECT
from tests.support.postpro_world import postpro, setup_world

pytestmark = pytest.mark.slow


def finished(pset: PostproSet) -> dict[str, str]:
    return {
        p.name: json.loads(p.read_text())["finished"]
        for p in pset.sorting.pipeline.glob(f"{pset.step}.*.json")
        if not p.name.endswith(".progress.json")
    }


def test_postpro_metrics_per_state_by_hand_and_stage_aware_reruns(demo_world, sorted_run, tmp_path, capsys):
    sorting, opts_path = setup_world(demo_world, sorted_run, tmp_path)
    assert postpro(demo_world, tmp_path, opts_path) == 2  # the gate: nothing curated, nothing written
    err = capsys.readouterr().err
    assert "curation incomplete: cluster_info.tsv missing" in err and "lack a group: 0, 1, 2" in err
    assert not (sorting.root / "postpro_demo").exists()

    assert postpro(demo_world, tmp_path, opts_path, "--allow-uncurated") == 0
    pset = PostproSet(sorting, "postpro_demo")
    assert postpro_sets(sorting) == ["postpro_demo"] and postpro_status(sorting, "postpro_demo") == "done"
    table = pd.read_csv(pset.folder / "metrics.csv", index_col="cluster_id")
    clusters = np.load(sorting.sorter_output / "spike_clusters.npy").ravel()
    times = np.load(sorting.sorter_output / "spike_times.npy").ravel()
    assert sorted(table.index) == sorted(np.unique(clusters))  # one row per unit
    for column in (
        "num_spikes",
        "firing_rate",
        "presence_ratio",
        "snr",
        "isi_violations_ratio",
        "amplitude_cutoff",
    ):
        assert column in table
    for state in ("NREM", "Wake", "REM"):
        assert f"firing_rate_{state}" in table and f"num_spikes_{state}" in table
    assert "snr_NREM" not in table  # SpikeInterface 0.105 has no per-period snr
    assert set(table["group_source"]) == {"auto"} and set(table["group"]) <= {"good", "mua"}

    # By hand: the hypnogram's Wake bout is 6-11 s of experiment time; the world's first file starts at 0.
    from tasks.inputs.hypnogram import read_hypnogram, state_frames
    from tasks.inputs.segments import read_segments

    frames = state_frames(read_hypnogram(pset.hypnogram), read_segments(sorting.segments))
    rate = float(read_segments(sorting.segments)["imSampRate"].iloc[0])
    for state in ("NREM", "Wake"):
        intervals = frames[state]
        inside = np.zeros(times.size, dtype=bool)
        for start, end in intervals:
            inside |= (times >= start) & (times < end)
        seconds = (intervals[:, 1] - intervals[:, 0]).sum() / rate
        unit = int(table["num_spikes"].idxmax())
        by_hand = (inside & (clusters == unit)).sum() / seconds
        assert table.loc[unit, f"firing_rate_{state}"] == pytest.approx(by_hand, rel=1e-6)
        assert table.loc[unit, f"num_spikes_{state}"] == (inside & (clusters == unit)).sum()
    assert (pset.folder / "summary_plots" / "firing_rate_NREM.png").is_file()
    assert len(list((pset.folder / "summary_plots" / "units").glob("unit_*.png"))) == min(20, len(table))

    # Stage-aware: one extension's options -> that extension (and the plots that show it) only.
    before = finished(pset)
    opts = yaml.safe_load(pset.opts.read_text())
    opts["extensions"]["template_metrics"] = {"upsampling_factor": 5}
    pset.opts.write_text(yaml.safe_dump(opts, sort_keys=False))
    assert postpro_status(sorting, "postpro_demo") == "stale"
    assert postpro(demo_world, tmp_path, pset.opts, "--allow-uncurated") == 0
    after = finished(pset)
    rerun = sorted(k.split(".")[-2] for k in after if after[k] != before[k])
    assert rerun == ["template_metrics"]

    # phy curation: a curated label is never overwritten by the auto pre-label; only table and plots rerun.
    units = sorted(np.unique(clusters))
    (sorting.sorter_output / "cluster_info.tsv").write_text(
        "cluster_id\tgroup\n" + "".join(f"{u}\t\n" for u in units)
    )
    (sorting.sorter_output / "cluster_group.tsv").write_text(f"cluster_id\tgroup\n{units[0]}\tnoise\n")
    before = finished(pset)
    assert postpro(demo_world, tmp_path, pset.opts, "--allow-uncurated") == 0
    after = finished(pset)
    assert sorted(k.split(".")[-2] for k in after if after[k] != before[k]) == ["plots", "table"]
    table = pd.read_csv(pset.folder / "metrics.csv", index_col="cluster_id")
    assert table.loc[units[0], "group"] == "noise" and table.loc[units[0], "group_source"] == "phy"
    assert (table.loc[units[1:], "group_source"] == "auto").all()
    manifest = json.loads(pset.manifest("table").read_text())
    assert manifest["curation_complete"] is False and manifest["uncurated_units"] == len(units) - 1

    # A new hypnogram: the per-state metrics, table and plots rerun; the analyzer and extensions don't.
    hyp = tmp_path / "hyp" / EXPERIMENT / SUBJECT / "hypnogram.htsv"
    hyp.write_text(hyp.read_text().replace("N2", "REM"))
    before = finished(pset)
    assert postpro(demo_world, tmp_path, pset.opts, "--allow-uncurated") == 0
    after = finished(pset)
    assert sorted(k.split(".")[-2] for k in after if after[k] != before[k]) == ["plots", "states", "table"]
    assert list((sorting.root / "postpro_demo.bak").iterdir())  # superseded outputs kept


def test_missing_hypnogram_is_one_line_with_the_path(demo_world, sorted_run, tmp_path, capsys):
    sorting, opts_path = setup_world(demo_world, sorted_run, tmp_path)
    (tmp_path / "hyp" / EXPERIMENT / SUBJECT / "hypnogram.htsv").unlink()
    assert postpro(demo_world, tmp_path, opts_path, "--allow-uncurated") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{EXPERIMENT}/{SUBJECT}/hypnogram.htsv: hypnogram missing" in err
    assert not (sorting.root / "postpro_demo").exists()
