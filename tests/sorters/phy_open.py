"""Test helper: open a sorter_output folder as `phy template-gui params.py` does (phylib's TemplateModel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def open_in_phy(sorter_output: Path, raw: bool = True, curated: bool = False) -> dict:
    """Load `sorter_output/params.py` with phylib and check what phy's template GUI shows; a summary back.

    Checked: the spikes and clusters are the folder's own, every cluster has channels and a template,
    amplitudes and PC features load for its spikes, the sorter's label (cluster_KSLabel.tsv) covers every
    cluster, phy's curation column (`group`) covers them when `curated` and is absent (never written by a
    sort) otherwise, and, when `raw`, `dat_path` reaches
    recording.dat (the traces phy shows are its int16 values) and waveforms come from it.
    """
    from phylib.io.model import load_model

    sorter_output = Path(sorter_output)
    model = load_model(sorter_output / "params.py")
    try:
        times = np.load(sorter_output / "spike_times.npy").ravel()
        clusters = np.load(sorter_output / "spike_clusters.npy").ravel()
        assert model.n_spikes == times.size > 0
        assert np.array_equal(model.spike_samples, times)
        assert np.array_equal(model.cluster_ids, np.unique(clusters))
        assert model.amplitudes.shape == (times.size,) and np.all(np.isfinite(model.amplitudes))
        assert model.features is not None, "no PC features (pc_features.npy)"
        labels = model.metadata.get("KSLabel", {})
        assert set(labels) >= set(model.cluster_ids.tolist()), "cluster_KSLabel.tsv misses clusters"
        if curated:
            assert set(model.metadata["group"]) >= set(model.cluster_ids.tolist())
        else:
            assert "group" not in model.metadata, "phy's curation column came from the sort"
        for cluster in model.cluster_ids:
            _check_cluster(model, int(cluster), raw)
        if raw:
            _check_traces(model, sorter_output)
        else:
            assert model.traces is None
        return {
            "n_spikes": int(model.n_spikes),
            "clusters": model.cluster_ids.tolist(),
            "n_channels": int(model.n_channels),
            "sample_rate": float(model.sample_rate),
            "raw": model.traces is not None,
        }
    finally:
        model.close()


def _check_cluster(model, cluster: int, raw: bool) -> None:
    channels = model.get_cluster_channels(cluster)
    assert len(channels) > 0, f"cluster {cluster}: no channels"
    spikes = model.get_cluster_spikes(cluster)
    template = model.get_template(int(np.bincount(model.spike_templates[spikes]).argmax()))
    assert template.template.shape[0] == model.n_samples_waveforms and np.all(np.isfinite(template.template))
    sample = spikes[:20]
    features = model.get_features(sample, channels[:4])
    assert features.shape[:2] == (sample.size, min(4, len(channels)))
    if raw:
        waveforms = model.get_waveforms(sample, channels[:4])
        assert waveforms.shape == (sample.size, model.n_samples_waveforms, min(4, len(channels)))


def _check_traces(model, sorter_output: Path) -> None:
    """phy's traces are recording.dat's int16 values, channel-mapped: dat_path reaches the right file."""
    assert model.traces is not None, f"{sorter_output}: dat_path does not reach recording.dat"
    dat = np.memmap(sorter_output / "recording.dat", dtype="int16", mode="r")
    dat = dat.reshape(-1, model.n_channels_dat)
    assert model.traces.shape == (dat.shape[0], model.n_channels)
    assert np.array_equal(np.asarray(model.traces[:300]), dat[:300][:, model.channel_mapping])
