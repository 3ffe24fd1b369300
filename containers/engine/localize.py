"""Peak localization with SpikeInterface's semantics, batched over all peaks of a chunk in torch.

Hand-written for speed and batching: SpikeInterface's `monopolar_triangulation` (the lab's default) runs
one scipy L-BFGS-B optimization per peak in a Python loop, and `center_of_mass` / `grid_convolution`
loop over main channels in numpy. Here every peak of a chunk is localized at once: center of mass as
one weighted sum, the monopolar fit as SpikeInterface's own optimizer stepped for all peaks in lockstep
(monopolar.py), grid convolution as one matrix product per main channel. Planning (grid templates) uses
SpikeInterface itself; the kernels need only torch, numpy and scipy. Waveforms are SpikeInterface's
dense ones: `nbefore` samples before the peak to `nafter` after it, on the channels within `radius_um`
of the peak's channel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .detect import Unsupported, neighbour_index, padded_rows

# SpikeInterface's dtype_localize_by_method (spikeinterface.postprocessing.unit_locations).
LOCATION_DTYPES = {
    "center_of_mass": np.dtype([("x", "float32"), ("y", "float32")]),
    "grid_convolution": np.dtype([("x", "float32"), ("y", "float32"), ("z", "float32")]),
    "monopolar_triangulation": np.dtype(
        [("x", "float32"), ("y", "float32"), ("z", "float32"), ("alpha", "float32")]
    ),
}
# Keyword defaults of SpikeInterface's Localize* nodes (prototype: None means the Gaussian one).
LOCALIZE_DEFAULTS: dict[str, dict[str, Any]] = {
    "center_of_mass": {"radius_um": 75.0, "feature": "ptp"},
    "monopolar_triangulation": {
        "radius_um": 75.0,
        "max_distance_um": 150.0,
        "optimizer": "minimize_with_log_penality",
        "enforce_decrease": True,
        "feature": "ptp",
    },
    "grid_convolution": {
        "radius_um": 40.0,
        "upsampling_um": 5.0,
        "sigma_ms": 0.25,
        "margin_um": 50.0,
        "prototype": None,
        "percentile": 5.0,
        "peak_sign": "neg",
        "weight_method": {},
    },
}


def gather_waveforms(
    padded: torch.Tensor, samples: torch.Tensor, channel_rows: torch.Tensor, nbefore: int, nafter: int
) -> torch.Tensor:
    """(n_peaks, nbefore + nafter, k) waveforms from `padded` (n_samples, n_channels + 1), whose last
    column is zeros (the sentinel that padded channel rows point at)."""
    times = samples[:, None] + torch.arange(-nbefore, nafter, device=samples.device)
    return padded[times[:, :, None], channel_rows[:, None, :]]


def amplitude_feature(waveforms: torch.Tensor, feature: str, nbefore: int) -> torch.Tensor:
    """Per channel: ptp, mean, energy (L2 norm over time) or the voltage at the peak sample."""
    if feature == "ptp":
        return waveforms.amax(dim=1) - waveforms.amin(dim=1)
    if feature == "mean":
        return waveforms.mean(dim=1)
    if feature == "energy":
        return torch.linalg.vector_norm(waveforms, dim=1)
    return waveforms[:, nbefore]


def _check(method: str, kwargs: dict, allowed: dict[str, tuple]) -> dict:
    opts = {**LOCALIZE_DEFAULTS[method], **kwargs}
    unknown = sorted(set(opts) - set(LOCALIZE_DEFAULTS[method]))
    if unknown:
        raise Unsupported(f"localize_peaks_kwargs {unknown}: not supported by the engine's {method}")
    for key, values in allowed.items():
        if opts[key] not in values:
            raise Unsupported(
                f"localize_peaks_kwargs.{key} {opts[key]!r}: the engine's {method} takes {values}"
            )
    return opts


class CenterOfMass:
    """SpikeInterface's `center_of_mass`: the feature-weighted mean of the neighbour channels' positions."""

    method = "center_of_mass"

    def __init__(self, locations: np.ndarray, nbefore: int, device: torch.device, **kwargs: Any) -> None:
        opts = _check(self.method, kwargs, {"feature": ("ptp", "mean", "energy", "peak_voltage")})
        self.feature, self.nbefore = opts["feature"], nbefore
        self.channel_index = torch.as_tensor(neighbour_index(locations, opts["radius_um"]), device=device)
        self.padded_locations = _padded_locations(locations, device)

    def __call__(self, waveforms: torch.Tensor, main_channels: torch.Tensor) -> dict[str, torch.Tensor]:
        weights = amplitude_feature(waveforms, self.feature, self.nbefore).double()
        xy = _center_of_mass(weights, self.padded_locations[self.channel_index[main_channels]])
        return {"x": xy[:, 0], "y": xy[:, 1]}


def _padded_locations(locations: np.ndarray, device: torch.device) -> torch.Tensor:
    """Channel positions (float64) plus the sentinel channel's, placed at the origin (never weighted)."""
    padded = np.concatenate([locations, np.zeros((1, locations.shape[1]))]).astype(np.float64)
    return torch.as_tensor(padded, device=device)


def _center_of_mass(weights: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return (weights[:, :, None] * positions).sum(dim=1) / weights.sum(dim=1, keepdim=True)


class MonopolarTriangulation:
    """SpikeInterface's `monopolar_triangulation` with `minimize_with_log_penality`: features on the
    device, then SpikeInterface's own optimizer path for every peak (containers/engine/monopolar.py)."""

    method = "monopolar_triangulation"

    def __init__(
        self, locations: np.ndarray, nbefore: int, device: torch.device, workers: int = 1, **kwargs: Any
    ) -> None:
        opts = _check(
            self.method,
            kwargs,
            {"feature": ("ptp", "energy", "peak_voltage"), "optimizer": ("minimize_with_log_penality",)},
        )
        self.feature, self.nbefore, self.workers = opts["feature"], nbefore, workers
        self.max_distance = float(opts["max_distance_um"])
        index = neighbour_index(locations, opts["radius_um"])
        self.channel_index = torch.as_tensor(index, device=device)
        self.padded_locations = _padded_locations(locations, device)
        self.counts = torch.as_tensor((index < locations.shape[0]).sum(axis=1), device=device)
        from .monopolar import start_workers

        start_workers(workers)

    def __call__(self, waveforms: torch.Tensor, main_channels: torch.Tensor) -> dict[str, torch.Tensor]:
        from .monopolar import solve

        data = amplitude_feature(waveforms, self.feature, self.nbefore)
        if self.feature == "peak_voltage":
            data = data.abs()
        positions = self.padded_locations[self.channel_index[main_channels]]
        counts = self.counts[main_channels]
        solved = solve(
            data.float().cpu().numpy(),
            positions.cpu().numpy(),
            counts.cpu().numpy(),
            self.max_distance,
            self.workers,
        )
        columns = torch.as_tensor(solved, device=waveforms.device)
        return {"x": columns[:, 0], "y": columns[:, 1], "z": columns[:, 2], "alpha": columns[:, 3]}


class GridConvolution:
    """SpikeInterface's `grid_convolution`: dot products of the waveforms (projected on the prototype)
    with a grid of artificial templates, the top percentile kept, positions as their weighted mean."""

    method = "grid_convolution"

    def __init__(
        self,
        locations: np.ndarray,
        nbefore: int,
        nafter: int,
        sampling_frequency: float,
        device: torch.device,
        **kwargs: Any,
    ) -> None:
        from spikeinterface.postprocessing.localization_tools import (
            get_grid_convolution_templates_and_weights,
        )

        opts = _check(self.method, kwargs, {"peak_sign": ("neg", "pos")})
        self.device, self.keep_percentile = device, 100 - opts["percentile"]
        if not 0 <= self.keep_percentile <= 100:
            raise ValueError("localize_peaks_kwargs.percentile must be in [0, 100]")
        prototype = opts["prototype"]
        if prototype is None:  # SpikeInterface's Gaussian prototype
            times_ms = np.arange(-nbefore, nafter) * 1000 / sampling_frequency
            prototype = np.exp(-(times_ms**2) / (2 * opts["sigma_ms"] ** 2)) * (
                -1 if opts["peak_sign"] == "neg" else 1
            )
        self.prototype = torch.as_tensor(np.asarray(prototype, dtype=np.float64).ravel(), device=device)
        positions, weights, nearest, z_factors = get_grid_convolution_templates_and_weights(
            locations, opts["radius_um"], opts["upsampling_um"], opts["margin_um"], opts["weight_method"]
        )
        self.z_factors = torch.as_tensor(np.asarray(z_factors, dtype=np.float64), device=device)
        self.tables = []  # per main channel: (template positions, weights (w, c, t))
        channel_masks = np.zeros((locations.shape[0], locations.shape[0]), dtype=bool)
        for chan in range(locations.shape[0]):
            near = nearest[chan]
            channel_masks[chan] = (weights[:, :, near] > 0).sum(axis=(0, 2)) > 0
            sub = weights[:, :, near][:, channel_masks[chan]]
            self.tables.append(
                (
                    torch.as_tensor(positions[near], device=device),
                    torch.as_tensor(sub, device=device).double(),
                )
            )
        self.channel_index = torch.as_tensor(padded_rows(channel_masks), device=device)

    def __call__(self, waveforms: torch.Tensor, main_channels: torch.Tensor) -> dict[str, torch.Tensor]:
        projected = torch.einsum("ntk,t->nk", waveforms.double(), self.prototype)
        out = torch.zeros((main_channels.shape[0], 3), dtype=torch.float64, device=self.device)
        order = torch.argsort(main_channels, stable=True)
        chans, counts = torch.unique_consecutive(main_channels[order], return_counts=True)
        for chan, idx in zip(chans.tolist(), torch.split(order, counts.tolist()), strict=True):
            positions, sub = self.tables[chan]
            out[idx] = self._locate(projected[idx, : sub.shape[1]], positions, sub)
        return {"x": out[:, 0], "y": out[:, 1], "z": out[:, 2]}

    def _locate(self, projected: torch.Tensor, positions: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
        dots = torch.einsum("nc,wct->nwt", projected, sub).float()  # SpikeInterface stores them as float32
        negative = dots < 0
        if self.keep_percentile > 0:
            flat = torch.where(negative, torch.nan, dots).flatten(1)
            threshold = torch.nan_to_num(torch.nanquantile(flat, self.keep_percentile / 100, dim=1))
            dots = torch.where(dots < threshold[:, None, None], 0, dots)
        dots = torch.where(negative, 0, dots).double()
        scalar = dots.sum(dim=2)  # (n, w)
        xy = torch.einsum("nwt,tj->nj", dots, positions)
        z = scalar @ self.z_factors
        found = torch.cat([xy, z[:, None]], dim=1) / scalar.sum(dim=1, keepdim=True)
        return torch.nan_to_num(found, nan=0.0, posinf=0.0, neginf=0.0)


Localizer = CenterOfMass | MonopolarTriangulation | GridConvolution


def plan_localization(
    locations: np.ndarray,
    sampling_frequency: float,
    localize_kwargs: dict,
    nbefore: int,
    nafter: int,
    device: str | torch.device = "cpu",
    workers: int = 1,
) -> Localizer:
    """The localizer for `localize_kwargs` (SpikeInterface's localize_peaks method and method kwargs);
    `workers`: processes for the monopolar solve."""
    kwargs = dict(localize_kwargs)
    method = kwargs.pop("method", "center_of_mass")
    device = torch.device(device)
    if method == "center_of_mass":
        return CenterOfMass(locations, nbefore, device, **kwargs)
    if method == "monopolar_triangulation":
        return MonopolarTriangulation(locations, nbefore, device, workers=workers, **kwargs)
    if method == "grid_convolution":
        return GridConvolution(locations, nbefore, nafter, sampling_frequency, device, **kwargs)
    raise Unsupported(
        f"localize_peaks_kwargs.method {method!r}: the engine localizes with {sorted(LOCATION_DTYPES)}"
    )


def locations_array(method: str, columns: dict[str, torch.Tensor]) -> np.ndarray:
    """SpikeInterface's location structured array from a localizer's output."""
    dtype = LOCATION_DTYPES[method]
    n = next(iter(columns.values())).shape[0]
    out = np.zeros(n, dtype=dtype)
    for name in dtype.names:
        out[name] = columns[name].detach().cpu().numpy()
    return out
