"""Peak detection with SpikeInterface's `locally_exclusive` semantics on float32 chunks in torch.

Hand-written instead of calling SpikeInterface's numba kernel for speed and batching: that kernel runs
one chunk per worker process on one core and compares candidate pairs in a scalar loop, whereas here a
whole chunk (with margins) is thresholded and each candidate is compared to its spatio-temporal
neighbourhood with tensor gathers, on CPU threads or CUDA; the peaks stay on the device for
localization. Planning (noise levels, channel neighbourhoods) uses SpikeInterface itself; the kernel
needs only torch and numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .chain import EngineUnsupported

# SpikeInterface's base_peak_dtype (spikeinterface.core.base): equal by test, kept here so that the
# kernel imports without SpikeInterface.
PEAK_DTYPE = np.dtype(
    [
        ("sample_index", "int64"),
        ("channel_index", "int64"),
        ("amplitude", "float64"),
        ("segment_index", "int64"),
    ]
)
# SpikeInterface's LocallyExclusivePeakDetector keyword defaults.
DETECT_DEFAULTS: dict[str, Any] = {
    "peak_sign": "neg",
    "detect_threshold": 5.0,
    "exclude_sweep_ms": 1.0,
    "radius_um": 50.0,
}


class Unsupported(EngineUnsupported, ValueError):
    """An option of detection or localization the engine cannot honour: the caller runs SpikeInterface
    instead (the chain's EngineUnsupported, so one except clause catches both)."""


def neighbour_index(locations: np.ndarray, radius_um: float) -> np.ndarray:
    """(n_channels, max_neighbours) channel indices within `radius_um` (SpikeInterface's
    `channel_distance <= radius_um`), ascending, padded with n_channels (a sentinel column)."""
    distances = np.linalg.norm(locations[:, None, :] - locations[None, :, :], axis=2)
    return padded_rows(distances <= radius_um)


def padded_rows(mask: np.ndarray) -> np.ndarray:
    """Each row's True columns, ascending, padded to a rectangle with mask.shape[1]."""
    width = max(int(mask.sum(axis=1).max()), 1)
    index = np.full((mask.shape[0], width), mask.shape[1], dtype=np.int64)
    for row, cols in enumerate(mask):
        found = np.flatnonzero(cols)
        index[row, : found.size] = found
    return index


@dataclass(frozen=True)
class DetectParams:
    """What `locally_exclusive` needs, as arrays: thresholds in the traces' units."""

    abs_thresholds: np.ndarray  # (n_channels,) noise_levels * detect_threshold
    neighbours: np.ndarray  # (n_channels, k) from neighbour_index
    exclude_sweep_size: int  # samples
    peak_sign: str  # neg | pos | both

    @property
    def margin(self) -> int:
        """Samples a chunk needs on each side (SpikeInterface's get_margin: exclude_sweep_size + 1)."""
        return self.exclude_sweep_size + 1


def plan_detection(recording: Any, detect_kwargs: dict) -> DetectParams:
    """`DetectParams` for a SpikeInterface recording and the options of `detect_peaks` (method included).

    Noise levels as `detect_peaks` gets them: `noise_levels` when given, otherwise SpikeInterface's
    `get_noise_levels(recording, return_in_uV=False, random_slices_kwargs=...)` (cached on the recording,
    as SpikeInterface caches it).
    """
    kwargs = dict(detect_kwargs)
    method = kwargs.pop("method", "locally_exclusive")
    if method not in ("locally_exclusive", "locally_exclusive_torch"):
        raise Unsupported(f"detect_kwargs.method {method!r}: the engine detects with locally_exclusive only")
    noise_levels = kwargs.pop("noise_levels", None)
    random_slices_kwargs = kwargs.pop("random_slices_kwargs", None) or {}
    unknown = sorted(set(kwargs) - set(DETECT_DEFAULTS))
    if unknown:
        raise Unsupported(f"detect_kwargs {unknown}: not supported by the engine's locally_exclusive")
    opts = {**DETECT_DEFAULTS, **kwargs}
    if opts["peak_sign"] not in ("neg", "pos", "both"):
        raise ValueError(f"detect_kwargs.peak_sign {opts['peak_sign']!r}: use neg, pos or both")
    if noise_levels is None:
        from spikeinterface.core.recording_tools import get_noise_levels

        noise_levels = get_noise_levels(
            recording, return_in_uV=False, random_slices_kwargs=random_slices_kwargs, progress_bar=False
        )
    noise_levels = np.asarray(noise_levels)
    return DetectParams(
        abs_thresholds=(noise_levels * opts["detect_threshold"]).astype(np.float32),
        neighbours=neighbour_index(recording.get_channel_locations(), opts["radius_um"]),
        exclude_sweep_size=int(opts["exclude_sweep_ms"] * recording.get_sampling_frequency() / 1000.0),
        peak_sign=opts["peak_sign"],
    )


class LocallyExclusive:
    """The detector on one device: call it on a chunk's traces (with margins) for that chunk's peaks."""

    def __init__(self, params: DetectParams, device: str | torch.device = "cpu") -> None:
        self.params = params
        self.device = torch.device(device)
        self.thresholds = torch.as_tensor(params.abs_thresholds, dtype=torch.float32, device=self.device)
        n_channels = params.neighbours.shape[0]
        neighbours = torch.as_tensor(params.neighbours, device=self.device)
        self.real_neighbour = neighbours < n_channels
        self.neighbours = neighbours.clamp(max=n_channels - 1)  # padding: any channel, masked out
        sweep = params.exclude_sweep_size
        self.offsets = torch.arange(-sweep, sweep + 1, device=self.device)

    def _is_candidate(self, traces: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """SpikeInterface's candidate test at (t, c): beyond threshold, and a strict extremum on the left
        and a weak one on the right (1 <= t <= n - 2)."""
        value, prev, nxt, thr = traces[t, c], traces[t - 1, c], traces[t + 1, c], self.thresholds[c]
        found = torch.zeros_like(value, dtype=torch.bool)
        if self.params.peak_sign in ("neg", "both"):
            found |= (value <= -thr) & (value < prev) & (value <= nxt)
        if self.params.peak_sign in ("pos", "both"):
            found |= (value >= thr) & (value > prev) & (value >= nxt)
        return found

    def __call__(self, traces: torch.Tensor, margin: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Peaks of `traces` (n_samples, n_channels) float32 whose sample lies in [margin, n - margin).

        Returns (sample index within `traces`, channel index, amplitude), ordered by sample then channel,
        as SpikeInterface's numba kernel orders them. `margin` must be at least `params.margin`.
        Only threshold crossings are visited after one comparison over the chunk.
        """
        if margin < self.params.margin:
            raise ValueError(f"margin {margin} < {self.params.margin} samples that detection needs")
        inner = traces[margin : traces.shape[0] - margin]
        if self.params.peak_sign == "neg":
            crossing = inner <= -self.thresholds
        elif self.params.peak_sign == "pos":
            crossing = inner >= self.thresholds
        else:
            crossing = inner.abs() >= self.thresholds
        samples, channels = torch.nonzero(crossing, as_tuple=True)
        samples = samples + margin
        keep = self._is_candidate(traces, samples, channels)
        samples, channels = samples[keep], channels[keep]
        # Score |v| / threshold (>= 1 for candidates) over each candidate's sweep and neighbourhood; a
        # non-candidate scores 0 and never suppresses anything.
        times = (samples[:, None] + self.offsets)[:, :, None]  # (n, 2 sweep + 1, 1)
        nbrs = self.neighbours[channels][:, None, :]  # (n, 1, k)
        around = self._is_candidate(traces, times, nbrs) & self.real_neighbour[channels][:, None, :]
        score = torch.where(around, traces[times, nbrs].abs() / self.thresholds[nbrs], 0.0)
        own = traces[samples, channels].abs() / self.thresholds[channels]
        sweep = self.params.exclude_sweep_size
        later = score[:, sweep:].amax(dim=(1, 2))  # same sample (itself included) and later
        earlier = score[:, :sweep].amax(dim=(1, 2)) if sweep else torch.zeros_like(own)
        # SpikeInterface drops a peak when a neighbour within the sweep is larger, or equal and earlier.
        keep = (later <= own) & (earlier < own)
        samples, channels = samples[keep], channels[keep]
        return samples, channels, traces[samples, channels]


def peaks_array(
    samples: np.ndarray, channels: np.ndarray, amplitudes: np.ndarray, segment_index: int
) -> np.ndarray:
    """SpikeInterface's peak structured array from columns."""
    peaks = np.zeros(samples.size, dtype=PEAK_DTYPE)
    peaks["sample_index"] = samples
    peaks["channel_index"] = channels
    peaks["amplitude"] = amplitudes
    peaks["segment_index"] = segment_index
    return peaks
