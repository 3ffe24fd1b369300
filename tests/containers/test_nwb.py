"""`wisc-sort export-nwb` on the demo sorting: the NWB file opens with pynwb, passes nwbinspector with no
critical issue, its spike times equal the sorting's (also per file, through the segment table), and the step
reruns when what it exports changes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.core.manifest import status
from tasks.inputs.segments import frame_to_file, read_segments
from tasks.steps.registry import NWB_FILE
from tests.support.cli import main_keeping_env
from tests.support.postpro_world import postpro, setup_world

pytestmark = pytest.mark.slow


def export(demo_world, tmp_path, *extra: str) -> int:
    argv = demo_world.argv(tmp_path, *extra)
    argv[0] = "export-nwb"
    return main_keeping_env(argv)


def sorter_spike_frames(sorter_output) -> dict[int, np.ndarray]:
    """Each cluster's spike frames, straight from phy's arrays (independent of the export's loader)."""
    times = np.load(sorter_output / "spike_times.npy").ravel().astype(np.int64)
    clusters = np.load(sorter_output / "spike_clusters.npy").ravel().astype(np.int64)
    return {int(c): np.sort(times[clusters == c]) for c in np.unique(clusters)}


def critical(path) -> list[str]:
    """nwbinspector's messages of importance CRITICAL or worse, as `check: message` (every one printed)."""
    from nwbinspector import Importance, inspect_nwbfile

    found = []
    for message in inspect_nwbfile(nwbfile_path=str(path)):
        print(f"nwbinspector {message.importance.name}: {message.check_function_name}: {message.message}")
        if message.importance.value >= Importance.CRITICAL.value:
            found.append(f"{message.check_function_name}: {message.message}")
    return found


def check_contents(sorting) -> list[int]:
    """The file against the sorting: spike times (kept recording, per file), metrics, waveforms, electrodes,
    segments, motion, provenance. Returns the unit ids."""
    from pynwb import NWBHDF5IO

    segments = read_segments(sorting.segments)
    rate = float(segments["imSampRate"].iloc[0])
    truth = {c: f for c, f in sorter_spike_frames(sorting.sorter_output).items() if f.size}
    metrics = pd.read_csv(sorting.root / "postpro_demo" / "metrics.csv", index_col="cluster_id")
    with NWBHDF5IO(str(sorting.path(NWB_FILE)), "r") as io:
        nwb = io.read()
        units = nwb.units.to_dataframe()
        assert sorted(units.index) == sorted(truth) == sorted(metrics.index)
        for unit_id, row in units.iterrows():
            frames = truth[unit_id]
            np.testing.assert_array_equal(np.round(np.asarray(row["spike_times"]) * rate), frames)
            fnames, within = frame_to_file(segments, frames)
            rows = np.asarray(row["spike_segment"])
            assert list(segments["fname"].to_numpy()[rows]) == list(fnames)
            assert set(segments["type"].to_numpy()[rows]) <= {"keep"}
            np.testing.assert_allclose(np.asarray(row["spike_times_in_file"]) * rate, within, atol=1e-3)
            assert row["cluster_id"] == unit_id and row["group"] == metrics.loc[unit_id, "group"]
            assert row["snr"] == pytest.approx(metrics.loc[unit_id, "snr"], nan_ok=True)
        assert any(column.endswith("_NREM") for column in units.columns)  # per-state metrics
        n_channels = len(nwb.electrodes)
        waveform = np.asarray(units["waveform_mean"].iloc[0])
        assert waveform.shape[1] == n_channels > 300 and np.abs(waveform).max() > 0
        module = nwb.processing["ecephys"]
        assert len(module["segments"]) == len(segments)
        assert list(module["segments"].to_dataframe()["type"]) == list(segments["type"])
        motion = module["motion_clean"].to_dataframe()
        assert len(motion) >= 2 and np.asarray(motion["displacement_um"].iloc[0]).size == len(
            module["motion_clean_depth_bins"]
        )
        provenance = module["provenance"].to_dataframe()
        assert {"opts.yaml", "postpro_opts.yaml", "versions", "manifest sort"} <= set(provenance["item"])
        assert nwb.subject.subject_id == "DEMO1-Mouse"
    return sorted(units.index)


def test_the_demo_sorting_exports_to_a_valid_nwb_file(demo_world, sorted_run, tmp_path, capsys):
    sorting, opts_path = setup_world(demo_world, sorted_run, tmp_path)
    # Before any postprocessing: one line, nothing written.
    assert export(demo_world, tmp_path, "--postpro", "postpro_demo") == 2
    assert "no postprocessing set 'postpro_demo'" in capsys.readouterr().err
    assert "nwb" not in sorting.opts.read_text()
    assert postpro(demo_world, tmp_path, opts_path, "--allow-uncurated") == 0

    assert export(demo_world, tmp_path, "--postpro", "postpro_demo") == 0
    out = capsys.readouterr().out
    path = sorting.path(NWB_FILE)
    assert "added nwb.postpro = postpro_demo" in out and f"nwb: {path}" in out
    assert "add species (e.g. Mus musculus) and age" in out
    assert status(sorting, "nwb") == "done"
    assert [m.split(":")[0] for m in critical(path)] == ["check_subject_age"]

    # The user describes the subject, as DANDI asks: the step reruns, nwbinspector finds nothing critical.
    sorting.opts.write_text(sorting.opts.read_text() + "  species: Mus musculus\n  age: P90D\n")
    assert status(sorting, "nwb") == "stale"
    mtime = path.stat().st_mtime_ns
    assert export(demo_world, tmp_path) == 0 and path.stat().st_mtime_ns != mtime
    assert "add species" not in capsys.readouterr().out
    assert critical(path) == []
    units = check_contents(sorting)

    # A second export redoes nothing; an edit of phy's curation makes the file stale.
    mtime = path.stat().st_mtime_ns
    assert export(demo_world, tmp_path) == 0 and path.stat().st_mtime_ns == mtime
    (sorting.sorter_output / "cluster_group.tsv").write_text(f"cluster_id\tgroup\n{units[0]}\tnoise\n")
    assert status(sorting, "nwb") == "stale"
