"""Kilosort 2.5 checked without MATLAB: `wisc-sort sort` with the lab's options runs to the MATLAB call,
where a fake compiled Kilosort (tests/sorters/ks25_output.py) keeps what it was handed and writes rezToPhy's
file set; then validation, postprocessing and phy's loader on that output."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from probeinterface import read_probeinterface

from tasks.core.manifest import read_manifest
from tasks.phy.validation import read_params
from tasks.steps.postpro_stages import PostproSet
from tests.sorters.ks25_output import install_fake, load_mat
from tests.sorters.phy_open import open_in_phy
from tests.support.pipeline_world import REPO, copy_sorting
from tests.support.postpro_world import postpro, setup_world

pytestmark = pytest.mark.slow
LAB_OPTS = REPO / "opts" / "sorting_acute_df.yaml"


@pytest.fixture(scope="module")
def ks25_sorted(demo_world, first_run, tmp_path_factory):
    """The demo world's preprocessing with the lab's Kilosort 2.5 options, sorted through the fake."""
    root = tmp_path_factory.mktemp("ks25")
    sorting = demo_world.sorting(root)
    copy_sorting(first_run[0], sorting)
    opts, lab = yaml.safe_load(sorting.opts.read_text()), yaml.safe_load(LAB_OPTS.read_text())
    opts["preprocessing"] += [s for s in lab["preprocessing"] if s["step_name"] in ("whiten", "scale")]
    opts["sorting"] = {k: v for k, v in lab["sorting"].items() if k != "sorter_path"}
    sorting.opts.write_text(yaml.safe_dump(opts, sort_keys=False))
    capture = root / "kilosort2_5_was_handed"
    install_fake(root / "bin", demo_world.folder / "ground_truth" / "sorting.npz", capture)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{path}"
    try:
        assert demo_world.run(root) == 0
    finally:
        os.environ["PATH"] = path
    return sorting, capture


def test_kilosort2_5_reads_our_recording_dat_and_settings_without_matlab(ks25_sorted):
    sorting, capture = ks25_sorted
    ops, chan = load_mat(capture / "ops.mat"), load_mat(capture / "chanMap.mat")
    dat = sorting.sorter_output / "recording.dat"
    n_channels = int(read_manifest(sorting, "recording_dat")["num_channels"])
    n_samples = dat.stat().st_size // (2 * n_channels)
    assert os.path.samefile(ops["fbinary"], dat) and ops["fproc"] == ops["fbinary"]  # in place, no copy
    assert (ops["NT"], ops["ntbuff"]) == (65472, 64) and ops["skip_kilosort_preprocessing"] == 1
    end = math.ceil(float(ops["trange"][1]) * float(ops["fs"]))  # Kilosort's tend
    assert float(ops["trange"][0]) == 0 and end % ops["NT"] == 0 and 0 < n_samples - end < ops["NT"]
    chain = yaml.safe_load(sorting.opts.read_text())["preprocessing"]
    scale = next(s for s in chain if s["step_name"] == "scale")
    assert ops["scaleproc"] == scale["step_params"]["gain"] == 200
    assert ops["fs"] == pytest.approx(float(read_manifest(sorting, "recording_dat")["sampling_frequency"]))
    assert ops["NchanTOT"] == ops["Nchan"] == n_channels and (ops["nblocks"], ops["do_correction"]) == (0, 0)
    expected = dict(spkTh=-6, ThPre=8, minFR=0.1, sigmaMask=30, nPCs=3, nfilt_factor=4, CAR=1)
    assert {k: ops[k] for k in expected} == expected and list(ops["Th"]) == [10, 4]
    probe = read_probeinterface(sorting.root / "preprocessed_si_probe.json").to_dataframe()
    assert np.array_equal(chan["chanMap"], np.arange(1, n_channels + 1))
    assert np.array_equal(chan["chanMap0ind"], np.arange(n_channels)) and chan["Nchannels"] == n_channels
    assert np.all(chan["connected"] == 1) and np.all(chan["kcoords"] == 1)
    assert np.allclose(chan["xcoords"], probe["x"]) and np.allclose(chan["ycoords"], probe["y"])


def test_kilosort2_5_output_validated_installed_and_opened_in_phylib(ks25_sorted):
    sorting, _ = ks25_sorted
    out = sorting.sorter_output
    manifest = read_manifest(sorting, "sort")
    assert manifest["sorter_name"] == "kilosort2_5" and manifest["sorter_version"] == "compiled"
    assert np.load(out / "spike_times.npy").dtype == np.uint64 and np.load(out / "amplitudes.npy").ndim == 2
    assert not (out / "cluster_group.tsv").exists()  # Kilosort's copy of its labels is not phy's curation
    assert (out / "cluster_KSLabel.tsv").read_bytes().startswith(b"cluster_id\tKSLabel\r\n")  # MATLAB CRLF
    assert read_params(out / "params.py")["dat_path"] == "recording.dat"  # ours, relative: not fproc
    summary = open_in_phy(out)
    assert summary["n_spikes"] == manifest["n_spikes"] and len(summary["clusters"]) == manifest["n_units"]


def test_kilosort2_5_output_postprocessed_with_its_own_amplitudes(demo_world, ks25_sorted, tmp_path, capsys):
    sorting, opts_path = setup_world(demo_world, ks25_sorted[0], tmp_path)
    assert postpro(demo_world, tmp_path, opts_path, "--allow-uncurated") == 0, capsys.readouterr().err
    pset = PostproSet(sorting, "postpro_demo")
    table = pd.read_csv(pset.folder / "metrics.csv", index_col="cluster_id")
    clusters = np.unique(np.load(sorting.sorter_output / "spike_clusters.npy"))
    assert list(table.index) == clusters.tolist() and "amplitude_cutoff" in table
    metrics = read_manifest(sorting, "postpro.postpro_demo.metrics")
    assert metrics["amplitude_cutoff_source"] == "sorter amplitudes.npy"
