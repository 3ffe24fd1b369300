"""Is a sort finished? Checks a phy/Kilosort folder as the lab does by eye (numpy only, no spikeinterface)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tasks.core.layout import SortingDir

# What phy needs from params.py to open the data; Kilosort and our exporter write all of them.
PARAMS_KEYS = ("dat_path", "n_channels_dat", "dtype", "offset", "sample_rate", "hp_filtered")


class SortFailed(ValueError):
    """The sorter's output is missing, truncated or inconsistent (Kilosort can crash near the end)."""


@dataclass(frozen=True)
class SortSummary:
    n_spikes: int
    n_units: int


def read_params(path: Path) -> dict:
    """params.py as a dict, without executing it: each line `name = <python literal>`."""
    path = Path(path)
    if not path.is_file():
        raise SortFailed(f"{path}: missing; the sorter did not finish")
    text = path.read_text()
    if not text.strip():
        raise SortFailed(f"{path}: empty; the sorter crashed before writing it")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as err:
        raise SortFailed(f"{path}: not parseable (line {err.lineno}: {err.msg})") from None
    params = {}
    for node in tree.body:
        if not (
            isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        ):
            raise SortFailed(f"{path}: line {node.lineno} is not a `name = value` assignment")
        try:
            params[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise SortFailed(f"{path}: line {node.lineno}: the value is not a literal") from None
    missing = [key for key in PARAMS_KEYS if key not in params]
    if missing:
        raise SortFailed(f"{path}: no {', '.join(missing)}")
    return params


def _load_vector(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SortFailed(f"{path}: missing; the sorter did not finish")
    if path.stat().st_size == 0:
        raise SortFailed(f"{path}: empty (0 bytes); the sorter crashed while writing it")
    try:
        array = np.load(path, mmap_mode="r")  # a day of spikes is ~1 GB: no need to hold it
    except (ValueError, OSError, EOFError) as err:
        raise SortFailed(f"{path}: not loadable ({err})") from None
    # Kilosort writes (n, 1) columns, SpikeInterface's phy export too; accept (n,) as well.
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise SortFailed(f"{path}: shape {array.shape}, expected (n,) or (n, 1)")
    if array.dtype.kind not in "iu":
        raise SortFailed(f"{path}: dtype {array.dtype}, expected integers")
    return array


def validate_sorter_output(folder: Path, n_samples: int | None) -> SortSummary:
    """Raise SortFailed naming the file and the fault unless `folder` holds a complete sort.

    Complete: params.py non-empty and parseable, spike_times.npy and spike_clusters.npy load, agree in
    length, and every spike time lies in [0, n_samples) (when n_samples is given).
    """
    folder = Path(folder)
    read_params(folder / "params.py")
    times = _load_vector(folder / "spike_times.npy")
    clusters = _load_vector(folder / "spike_clusters.npy")
    if times.size != clusters.size:
        raise SortFailed(
            f"{folder / 'spike_clusters.npy'}: {clusters.size} entries but spike_times.npy has {times.size}"
        )
    if times.size:
        first, last = int(times.min()), int(times.max())
        if first < 0:
            raise SortFailed(f"{folder / 'spike_times.npy'}: negative spike time {first}")
        if n_samples is not None and last >= n_samples:
            raise SortFailed(
                f"{folder / 'spike_times.npy'}: spike time {last} is past the recording's end "
                f"({n_samples} samples)"
            )
    n_units = int(np.unique(clusters).size) if clusters.size else 0
    return SortSummary(n_spikes=int(times.size), n_units=n_units)


def require_whole_sort(sorting: SortingDir) -> None:
    """A sort moved home or built on must be whole: its outputs as its manifest recorded them, params.py
    readable. One-line UserError otherwise (a damaged sort is never used as if it were complete)."""
    from tasks.core import manifest
    from tasks.core.errors import UserError

    state = manifest.status(sorting, "sort")
    if state in ("partial", "missing"):
        detail = f" ({manifest.describe_partial(sorting, 'sort')})" if state == "partial" else ""
        raise UserError(
            f"{sorting.sorter_output}: the sort is {state}{detail}; rerun it (wisc-sort sort), curate and "
            "postprocess, then finalize"
        )
    try:
        read_params(sorting.sorter_output / "params.py")
    except SortFailed as err:
        raise UserError(
            f"{err}; nothing was changed: rerun the sort (wisc-sort sort) or restore params.py"
        ) from None
