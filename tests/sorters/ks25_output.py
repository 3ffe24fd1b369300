"""Test helper: a fake of the MATLAB-compiled Kilosort 2.5 (`ks2_5_compiled`, no MATLAB here).

It keeps the ops.mat and chanMap.mat it is handed, for the test to check, and writes the files Kilosort 2.5's
rezToPhy writes (MouseLand/Kilosort utils/rezToPhy.m), with the dtypes and shapes MATLAB's writeNPY leaves
(column vectors are (n, 1)), CRLF tables, its copy of cluster_KSLabel.tsv as cluster_group.tsv and its
params.py. Its clusters are the ground-truth units, read from the recording it was given.
"""

from __future__ import annotations

import math
import shutil
import stat
import sys
from pathlib import Path

import numpy as np

NT0, NT0MIN, N_NEIGH = 61, 20, 32  # Kilosort 2.5's template length, trough sample, feature channels


def install_fake(bin_dir: Path, truth: Path, capture: Path) -> None:
    """`bin_dir/ks2_5_compiled`: with bin_dir first on PATH, SpikeInterface runs it as the compiled sorter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "ks2_5_compiled"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[2])!r})\n"
        "from tests.sorters.ks25_output import fake_kilosort2_5\n"
        f"fake_kilosort2_5(sys.argv[1], {str(truth)!r}, {str(capture)!r})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def load_mat(path: Path) -> dict:
    """A .mat file's variables (MATLAB structs as dicts), as Kilosort's `load` sees them."""
    import scipy.io

    data = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    ops = data.get("ops")
    return {k: v for k, v in vars(ops).items() if not k.startswith("_")} if ops is not None else data


def fake_kilosort2_5(folder: str, truth: str, capture: str) -> None:
    folder, capture_dir = Path(folder), Path(capture)
    capture_dir.mkdir(parents=True, exist_ok=True)
    for name in ("ops.mat", "chanMap.mat"):
        shutil.copy2(folder / name, capture_dir / name)
    ops, chan = load_mat(folder / "ops.mat"), load_mat(folder / "chanMap.mat")
    n_chan = int(ops["NchanTOT"])
    data = np.memmap(ops["fbinary"], dtype=np.int16, mode="r").reshape(-1, n_chan)
    end = min(data.shape[0], math.ceil(float(ops["trange"][1]) * float(ops["fs"])))
    with np.load(truth) as gt:
        frames, units = gt["spike_frames"], gt["spike_unit_ids"]
    keep = (frames >= NT0MIN) & (frames < end - NT0)
    positions = np.column_stack([chan["xcoords"], chan["ycoords"]]).astype(np.float64)
    write_rez_to_phy(folder, data, frames[keep], units[keep], positions, ops)


def _templates(data: np.ndarray, times: np.ndarray, labels: np.ndarray, n_templates: int) -> np.ndarray:
    """Mean snippet of up to 50 spikes per template, unit norm: (templates, NT0, channels) float32."""
    out = np.zeros((n_templates, NT0, data.shape[1]), dtype=np.float32)
    for t in range(n_templates):
        at = times[labels == t][:50]
        mean = np.mean([data[s - NT0MIN : s - NT0MIN + NT0] for s in at], axis=0)
        out[t] = mean / max(np.linalg.norm(mean), 1e-6)
    return out


def write_rez_to_phy(
    folder: Path, data: np.ndarray, frames: np.ndarray, units: np.ndarray, positions: np.ndarray, ops: dict
) -> None:
    order = np.argsort(frames, kind="stable")
    times, (unit_ids, labels) = frames[order], np.unique(units[order], return_inverse=True)
    n_templates, n_chan = unit_ids.size, data.shape[1]
    templates = _templates(data, times, labels, n_templates)
    best = np.abs(templates).max(axis=1).argmax(axis=1)
    distance = np.linalg.norm(positions[best][:, None] - positions[None], axis=2)
    neigh = np.argsort(distance, axis=1)[:, :N_NEIGH].astype(np.uint32)  # iNeighPC, zero-based after the -1
    snippets = np.stack([data[s - NT0MIN : s - NT0MIN + NT0] for s in times]).astype(np.float32)
    local = np.take_along_axis(snippets, neigh[labels][:, None, :].astype(np.int64), axis=2)  # (n, NT0, 32)
    flat = local.transpose(0, 2, 1).reshape(-1, NT0)
    pcs = np.linalg.svd(flat[:: max(1, flat.shape[0] // 5000)], full_matrices=False)[2][: int(ops["nPCs"])]
    pc_features = np.einsum("nts,pt->nps", local, pcs).astype(np.float32)  # (n, nPCs, 32)
    amplitudes = np.einsum("ntc,ntc->n", snippets, templates[labels]).astype(np.float64)[:, None]
    scaleproc = float(ops["scaleproc"])
    arrays = {
        "spike_times.npy": times.astype(np.uint64)[:, None],
        "spike_templates.npy": labels.astype(np.uint32)[:, None],
        "spike_clusters.npy": labels.astype(np.uint32)[:, None],
        "amplitudes.npy": np.abs(amplitudes),
        "templates.npy": templates,
        "templates_ind.npy": np.tile(np.arange(n_chan, dtype=np.float64), (n_templates, 1)),
        "channel_map.npy": np.arange(n_chan, dtype=np.int32)[None, :],
        "channel_positions.npy": positions,
        "template_features.npy": np.abs(pc_features[:, 0, :]).astype(np.float32),
        "template_feature_ind.npy": neigh,
        "pc_features.npy": pc_features,
        "pc_feature_ind.npy": neigh,
        "whitening_mat.npy": np.eye(n_chan) / scaleproc,
        "whitening_mat_inv.npy": np.eye(n_chan) * scaleproc,
        "similar_templates.npy": np.corrcoef(templates.reshape(n_templates, -1)).astype(np.float32),
    }
    for name, array in arrays.items():
        np.save(folder / name, array)
    peak = np.ptp(templates * scaleproc, axis=1).max(axis=1)
    tables = {"KSLabel": ["good"] * n_templates, "ContamPct": ["0.0"] * n_templates}
    tables["Amplitude"] = [f"{a:.1f}" for a in peak]
    for key, values in tables.items():
        rows = "".join(f"{i}\t{v}\r\n" for i, v in enumerate(values))
        (folder / f"cluster_{key}.tsv").write_text(f"cluster_id\t{key}\r\n{rows}", newline="")
    shutil.copyfile(folder / "cluster_KSLabel.tsv", folder / "cluster_group.tsv")
    fs = float(ops["fs"])
    rate = f"{fs:e}" if fs % 1 else f"{int(fs)}."  # MATLAB's %i of a non-integer prints %e
    (folder / "params.py").write_text(
        f"dat_path = '{Path(ops['fproc']).as_posix()}'\nn_channels_dat = {n_chan}\ndtype = 'int16'\n"
        f"offset = 0\nsample_rate = {rate}\nhp_filtered = True"
    )
