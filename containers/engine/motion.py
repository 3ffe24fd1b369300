"""Motion interpolation matrices per time bin, as SpikeInterface's interpolate_motion computes them.

Hand-written for speed: SpikeInterface's kriging recomputes the pseudo-inverse of the source-to-source
kernel (384x384) for every motion bin of every chunk. It does not depend on the motion: here it is
computed once, and each bin's matrix once (the chain caches them). numpy/scipy only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial import distance

KernelFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def kriging_distance(locations_1: np.ndarray, locations_2: np.ndarray, sigma_um, p: float) -> np.ndarray:
    """SpikeInterface's get_kriging_kernel_distance: exp(-(d/sigma)^p), or per-axis sigmas (cityblock)."""
    if np.isscalar(sigma_um):
        return np.exp(-((distance.cdist(locations_1, locations_2, metric="euclidean") / sigma_um) ** p))
    sigma_x, sigma_y = sigma_um
    dist_x = np.abs(locations_1[:, 0][:, None] - locations_2[:, 0][None, :])
    dist_y = np.abs(locations_1[:, 1][:, None] - locations_2[:, 1][None, :])
    return np.exp(-((dist_x / sigma_x) ** p) - (dist_y / sigma_y) ** p)


class KrigingKernel:
    """get_spatial_interpolation_kernel(method="kriging") with the source pseudo-inverse computed once."""

    def __init__(
        self, source: np.ndarray, sigma_um=20.0, p: float = 1, force_extrapolate: bool = False
    ) -> None:
        self.source = np.asarray(source, dtype=np.float64)
        self.sigma_um, self.p, self.force_extrapolate = sigma_um, p, force_extrapolate
        kxx = kriging_distance(self.source, self.source, sigma_um, p)
        self.pinv = np.linalg.pinv(kxx + 1e-6 * np.eye(kxx.shape[0]))
        self.low, self.high = self.source.min(axis=0), self.source.max(axis=0)

    def __call__(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(n_source, n_target) float32; `source` must be the locations given at construction."""
        inside = np.all((target >= self.low) & (target <= self.high), axis=1)
        kernel = (kriging_distance(target, self.source, self.sigma_um, self.p) @ self.pinv).T.copy()
        sums = kernel.sum(axis=0)
        kernel[:, inside] /= sums[inside].reshape(1, -1)
        if not self.force_extrapolate:
            kernel[:, ~inside] = 0
        return kernel.astype(np.float32)


class MotionMatrices:
    """matrix(b): the (C_in, C_out) interpolation of time bin b, the channels moved by that bin's motion.

    displacements (n_bins, C_in): each source channel's displacement at the bin's centre (um, along `dim`);
    channel_inds: the output channels (border channels removed), as SpikeInterface's channel_inds.
    """

    def __init__(
        self,
        locations: np.ndarray,
        displacements: np.ndarray,
        dim: int,
        channel_inds: np.ndarray | None,
        kernel: KernelFn,
    ) -> None:
        self.locations = np.asarray(locations, dtype=np.float64)
        self.displacements = np.asarray(displacements, dtype=np.float64)
        self.dim, self.channel_inds, self.kernel = dim, channel_inds, kernel

    @property
    def num_bins(self) -> int:
        return self.displacements.shape[0]

    def __call__(self, b: int) -> np.ndarray:
        moved = self.locations.copy()
        moved[:, self.dim] += self.displacements[b]
        if self.channel_inds is not None:
            moved = moved[self.channel_inds]
        return self.kernel(self.locations, moved)
