"""Peak localization with SpikeInterface's semantics, batched over all peaks of a chunk in torch.

Hand-written for speed and batching: SpikeInterface's `monopolar_triangulation` (the lab's default) runs
one scipy L-BFGS-B optimization per peak in a Python loop, and `center_of_mass` / `grid_convolution`
loop over main channels in numpy. Here every peak of a chunk is localized at once: center of mass as
one weighted sum, the monopolar fit as one batched projected Levenberg-Marquardt solve in float64 on
SpikeInterface's objective (`minimize_with_log_penality`: amplitude in closed form, the log barrier on
z, its initial guess and bounds, `enforce_decrease` beforehand), grid convolution as one matrix
product per main channel. Planning (radial parents, grid templates) uses SpikeInterface itself; the
kernels need only torch and numpy. Waveforms are SpikeInterface's dense ones: `nbefore` samples
before the peak to `nafter` after it, on the channels within `radius_um` of the peak's channel.
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
LOG_BARRIER = 1e4  # SpikeInterface's objective: ... - log1p(10 z) / 10000
INITIAL_Z_UM = 20.0
MAX_STEP_UM = 10.0  # trust region of one solver step


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
    """SpikeInterface's `monopolar_triangulation` with `minimize_with_log_penality`, solved for all peaks
    at once: minimise mean((w - alpha q)^2) - log1p(10 z) / 1e4 over (x, y, z) in its bounds, where w is
    the feature normalised by its maximum, q = 1 / distance, alpha = w.q / q.q; then alpha is refitted on
    the unnormalised feature, as SpikeInterface does."""

    method = "monopolar_triangulation"

    def __init__(
        self,
        locations: np.ndarray,
        nbefore: int,
        device: torch.device,
        radial_parents: list | None = None,
        max_iterations: int = 100,
        **kwargs: Any,
    ) -> None:
        opts = _check(
            self.method,
            kwargs,
            {"feature": ("ptp", "energy", "peak_voltage"), "optimizer": ("minimize_with_log_penality",)},
        )
        self.feature, self.nbefore, self.max_iterations = opts["feature"], nbefore, max_iterations
        self.max_distance = float(opts["max_distance_um"])
        index = neighbour_index(locations, opts["radius_um"])
        self.channel_index = torch.as_tensor(index, device=device)
        self.padded_locations = _padded_locations(locations, device)
        self.decrease: tuple[torch.Tensor, torch.Tensor] | None = None
        if opts["enforce_decrease"]:
            if radial_parents is None:
                raise ValueError("enforce_decrease needs radial_parents (plan_localization computes them)")
            self.decrease = _decrease_tables(radial_parents, index.shape[1], device)

    def __call__(self, waveforms: torch.Tensor, main_channels: torch.Tensor) -> dict[str, torch.Tensor]:
        data = amplitude_feature(waveforms, self.feature, self.nbefore)
        if self.feature == "peak_voltage":
            data = data.abs()
        real = self.channel_index[main_channels] < self.padded_locations.shape[0] - 1
        if self.decrease is not None:
            data = _enforce_decrease(data, real, main_channels, *self.decrease)
        positions = self.padded_locations[self.channel_index[main_channels]]
        normalised = (data / data.amax(dim=1, keepdim=True)).double()
        # SpikeInterface's initial guess: the center of mass (stored as float32), z = 20 um.
        com = _center_of_mass(data.double(), positions).float().double()
        start = torch.cat([com, torch.full_like(com[:, :1], INITIAL_Z_UM)], dim=1)
        low = torch.cat([(com.float() - self.max_distance).double(), torch.ones_like(com[:, :1])], dim=1)
        high = torch.cat(
            [(com.float() + self.max_distance).double(), torch.full_like(com[:, :1], 10 * self.max_distance)],
            dim=1,
        )
        theta = solve_log_penalty(normalised, positions, real, start, low, high, self.max_iterations)
        q = _inverse_distance(theta, positions, real)
        alpha = (data.double() * q).sum(dim=1) / (q * q).sum(dim=1)
        return {"x": theta[:, 0], "y": theta[:, 1], "z": theta[:, 2], "alpha": alpha}


def _decrease_tables(
    radial_parents: list, width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """SpikeInterface's radial parents as (child (n_channels, steps), parents (n_channels, steps, p)),
    padded with `width`: a column that holds -inf during the sweep."""
    steps = max(max((len(p) for p in radial_parents), default=0), 1)
    most = max((len(rel) for chan in radial_parents for _, rel in chan), default=1)
    child = np.full((len(radial_parents), steps), width, dtype=np.int64)
    parents = np.full((len(radial_parents), steps, most), width, dtype=np.int64)
    for chan, pairs in enumerate(radial_parents):
        for step, (c, rel) in enumerate(pairs):
            child[chan, step] = c
            parents[chan, step, : len(rel)] = rel
    return torch.as_tensor(child, device=device), torch.as_tensor(parents, device=device)


def _enforce_decrease(
    data: torch.Tensor, real: torch.Tensor, main: torch.Tensor, child: torch.Tensor, parents: torch.Tensor
) -> torch.Tensor:
    """SpikeInterface's enforce_decrease_shells_data for every peak, step by step in its order (float32)."""
    minus_inf = torch.tensor(-torch.inf, dtype=data.dtype, device=data.device)
    work = torch.cat([torch.where(real, data, minus_inf), minus_inf.expand(data.shape[0], 1)], dim=1)
    child, parents = child[main], parents[main]
    for step in range(child.shape[1]):
        c = child[:, step : step + 1]
        value = work.gather(1, c)
        top = work.gather(1, parents[:, step]).amax(dim=1, keepdim=True)
        work.scatter_(1, c, torch.where(value > top, value * (top / value), value))
    return torch.where(real, work[:, :-1], torch.zeros((), dtype=data.dtype, device=data.device))


def _inverse_distance(theta: torch.Tensor, positions: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    offsets = theta[:, None, :2] - positions
    r2 = (offsets * offsets).sum(dim=2) + theta[:, 2:3] ** 2
    return r2.rsqrt() * real


def log_penalty_terms(
    theta: torch.Tensor, w: torch.Tensor, positions: torch.Tensor, real: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SpikeInterface's estimate_distance_error_with_log at theta (n, 3), its gradient and Hessian.

    With alpha in closed form the squared error is (|w|^2 - (w.q)^2 / q.q) / n_channels, q = 1 / r.
    """
    n_chan = real.sum(dim=1).to(w.dtype)
    z = theta[:, 2]
    offsets = torch.cat([theta[:, None, :2] - positions, z[:, None, None].expand(-1, w.shape[1], 1)], dim=2)
    q = (offsets * offsets).sum(dim=2).rsqrt() * real
    q2 = q * q
    q3 = q2 * q
    a, b = (w * q).sum(dim=1), q2.sum(dim=1)
    value = ((w * w).sum(dim=1) - a * a / b) / n_chan - torch.log1p(10 * z) / LOG_BARRIER
    # First derivatives of a = w.q and b = q.q (dq/dtheta = -q^3 offset).
    da = -torch.einsum("nk,nki->ni", w * q3, offsets)
    db = -2 * torch.einsum("nk,nki->ni", q2 * q2, offsets)
    # Second derivatives: d2q = 3 q^5 o o^T - q^3 I.
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    outer = torch.einsum("nk,nki,nkj->nij", w * q3 * q2, offsets, offsets)
    d2a = 3 * outer - (w * q3).sum(dim=1)[:, None, None] * eye
    q6 = q3 * q3
    d2b = (
        8 * torch.einsum("nk,nki,nkj->nij", q6, offsets, offsets)
        - 2 * (q2 * q2).sum(dim=1)[:, None, None] * eye
    )
    a_, b_ = a[:, None], b[:, None]
    grad_g = 2 * a_ * da / b_ - (a_ / b_) ** 2 * db
    a3, b3 = a[:, None, None], b[:, None, None]
    hess_g = (
        2 * torch.einsum("ni,nj->nij", da, da) / b3
        + 2 * a3 * d2a / b3
        - 2 * a3 * (torch.einsum("ni,nj->nij", da, db) + torch.einsum("ni,nj->nij", db, da)) / b3**2
        - (a3 / b3) ** 2 * d2b
        + 2 * a3**2 * torch.einsum("ni,nj->nij", db, db) / b3**3
    )
    grad = -grad_g / n_chan[:, None]
    grad[:, 2] -= 10 / (1 + 10 * z) / LOG_BARRIER
    hess = -hess_g / n_chan[:, None, None]
    hess[:, 2, 2] += 100 / (1 + 10 * z) ** 2 / LOG_BARRIER
    return value, grad, hess


def solve_log_penalty(
    w: torch.Tensor,
    positions: torch.Tensor,
    real: torch.Tensor,
    start: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    max_iterations: int = 100,
    tolerance_um: float = 1e-6,
) -> torch.Tensor:
    """Minimise `log_penalty_terms` for every row within [low, high]: projected Levenberg-Marquardt with
    the exact Hessian (variables at a bound with the gradient pushing out are held). Float64."""
    theta = start.clone()
    value, grad, hess = log_penalty_terms(theta, w, positions, real)
    damping = 1e-3 * hess.diagonal(dim1=1, dim2=2).abs().mean(dim=1).clamp_min(1e-12)
    todo = torch.arange(theta.shape[0], device=theta.device)
    eye = torch.eye(3, dtype=theta.dtype, device=theta.device)
    for _ in range(max_iterations):
        if todo.numel() == 0:
            break
        th, g, h, lam = theta[todo], grad[todo], hess[todo], damping[todo]
        lo, hi = low[todo], high[todo]
        held = ((th <= lo) & (g > 0)) | ((th >= hi) & (g < 0))
        free = (~held).to(th.dtype)
        reduced = h * free[:, :, None] * free[:, None, :] + torch.diag_embed(1 - free)
        # Damping at least enough to make the system positive definite: every step descends.
        lowest = torch.linalg.eigvalsh(reduced)[:, 0]
        shift = torch.maximum(lam, -2 * lowest + 1e-3 * lam)
        step, info = torch.linalg.solve_ex(reduced + shift[:, None, None] * eye, -(g * free))
        length = step.abs().amax(dim=1, keepdim=True)
        step = step * (MAX_STEP_UM / length).clamp(max=1.0)
        trial = torch.minimum(torch.maximum(th + step, lo), hi)
        t_value, t_grad, t_hess = log_penalty_terms(trial, w[todo], positions[todo], real[todo])
        better = (info == 0) & (t_value <= value[todo]) & torch.isfinite(t_value)
        moved = (trial - th).abs().amax(dim=1)
        keep = better[:, None]
        theta[todo] = torch.where(keep, trial, th)
        value[todo] = torch.where(better, t_value, value[todo])
        grad[todo] = torch.where(keep, t_grad, g)
        hess[todo] = torch.where(keep[:, :, None], t_hess, h)
        damping[todo] = torch.where(better, lam * 0.3, lam * 10)
        finished = (better & (moved < tolerance_um)) | (damping[todo] > 1e12) | ~torch.isfinite(value[todo])
        todo = todo[~finished]
    return theta


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
) -> Localizer:
    """The localizer for `localize_kwargs` (SpikeInterface's localize_peaks method and method kwargs)."""
    kwargs = dict(localize_kwargs)
    method = kwargs.pop("method", "center_of_mass")
    device = torch.device(device)
    if method == "center_of_mass":
        return CenterOfMass(locations, nbefore, device, **kwargs)
    if method == "monopolar_triangulation":
        parents = None
        if kwargs.get("enforce_decrease", True):
            from spikeinterface.postprocessing.localization_tools import make_radial_order_parents

            radius = kwargs.get("radius_um", LOCALIZE_DEFAULTS[method]["radius_um"])
            distances = np.linalg.norm(locations[:, None] - locations[None, :], axis=2)
            parents = make_radial_order_parents(locations, distances <= radius)
        return MonopolarTriangulation(locations, nbefore, device, radial_parents=parents, **kwargs)
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
