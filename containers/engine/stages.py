"""The engine's stages: each maps a float32 (channels, frames) buffer on the device to the next.

A stage holds numpy parameters from planning and moves them to the buffer's device on first use; the
per-chunk work is torch only. Temporal stages (filters, phase shift) need `margin` frames of context on
each side; the other stages are pointwise in time and run on the trimmed chunk.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from containers.engine import kernels

# Spectral responses kept per FFT length (chunks are equal but for the last one and the random
# chunks of whitening), and per-bin motion matrices kept (chunks visit bins in order).
RESPONSE_CACHE = 4
MATRIX_CACHE = 8


@dataclass(frozen=True)
class Window:
    """Where a buffer lies: its first frame, and whether a recording end cut its margin short."""

    start: int
    cut_left: bool = False
    cut_right: bool = False

    @property
    def at_edge(self) -> bool:
        return self.cut_left or self.cut_right


class _DeviceCache:
    """numpy parameters as torch tensors, one copy per device."""

    def __init__(self) -> None:
        self._tensors: dict[tuple[str, str], torch.Tensor] = {}
        self.lock = threading.Lock()  # chunks' time pieces run in threads

    def get(self, name: str, array: np.ndarray, device: torch.device) -> torch.Tensor:
        key = (name, str(device))
        with self.lock:
            if key not in self._tensors:
                self._tensors[key] = torch.as_tensor(array).to(device)
            return self._tensors[key]


class Stage(ABC):
    margin = 0
    temporal = False

    def __init__(self) -> None:
        self.cache = _DeviceCache()

    @abstractmethod
    def apply(self, x: torch.Tensor, window: Window) -> torch.Tensor:
        """The next buffer from this one; `window` places it in the recording."""


class GainStage(Stage):
    """x * gain + offset per channel: scale_to_uV and `scale`."""

    def __init__(self, gain: np.ndarray, offset: np.ndarray) -> None:
        super().__init__()
        self.gain = np.asarray(gain, dtype=np.float32).reshape(-1, 1)
        self.offset = np.asarray(offset, dtype=np.float32).reshape(-1, 1)

    def apply(self, x: torch.Tensor, window: Window) -> torch.Tensor:
        x = x * self.cache.get("gain", self.gain, x.device)
        if np.any(self.offset):
            x += self.cache.get("offset", self.offset, x.device)
        return x


class SelectStage(Stage):
    """Keep these channel rows (bad channels removed)."""

    def __init__(self, indices: np.ndarray) -> None:
        super().__init__()
        self.indices = np.asarray(indices, dtype=np.int64)

    def apply(self, x: torch.Tensor, window: Window) -> torch.Tensor:
        return x.index_select(0, self.cache.get("indices", self.indices, x.device))


@dataclass(frozen=True)
class FilterPart:
    """A zero-phase (forward-backward) IIR filter as SpikeInterface designs it."""

    coeff: object  # sos array, or (b, a)
    mode: str  # "sos" | "ba"
    fs: float
    margin: int

    def power(self, n: int) -> np.ndarray:
        return kernels.filter_power(self.coeff, self.mode, n, self.fs)

    def at_edge(self, x: torch.Tensor, window: Window) -> torch.Tensor:
        return kernels.filtfilt_cpu(x, self.coeff, self.mode)


@dataclass(frozen=True)
class ShiftPart:
    """SpikeInterface's FFT phase shift by each channel's inter_sample_shift."""

    shifts: np.ndarray = field(compare=False)
    margin: int

    def at_edge(self, x: torch.Tensor, window: Window) -> torch.Tensor:
        return kernels.phase_shift_padded(x, self.shifts, self.margin, window.cut_left, window.cut_right)


class TemporalStage(Stage):
    """Adjacent filters and phase shifts as ONE FFT multiply (|H|^2 times the shift's ramp).

    Away from the recording's ends the margin (the sum of SpikeInterface's margins) makes the circular
    FFT equal to filtering the whole recording. A buffer cut by an end is computed part by part as
    SpikeInterface does there (scipy's padded filtfilt, zeros before a phase shift).
    """

    temporal = True

    def __init__(self, parts: list[FilterPart | ShiftPart]) -> None:
        super().__init__()
        self.parts = list(parts)
        self.margin = sum(part.margin for part in self.parts)
        self._responses: OrderedDict[tuple[int, str], torch.Tensor] = OrderedDict()

    def apply(self, x: torch.Tensor, window: Window) -> torch.Tensor:
        if window.at_edge:
            for part in self.parts:
                x = part.at_edge(x, window)
            return x
        n = kernels.fast_length(x.shape[1])
        return kernels.spectral_apply(x, self._response(n, x.device), n)

    def _response(self, n: int, device: torch.device) -> torch.Tensor:
        with self.cache.lock:
            return self._cached_response(n, device)

    def _cached_response(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, str(device))
        if key in self._responses:
            self._responses.move_to_end(key)
            return self._responses[key]
        response: np.ndarray = np.ones((1, n // 2 + 1), dtype=np.complex128)
        for part in self.parts:
            if isinstance(part, FilterPart):
                response = response * part.power(n)[None, :]
            else:
                response = response * kernels.shift_ramp(part.shifts, n)
        tensor = torch.from_numpy(response.astype(np.complex64)).to(device)
        self._responses[key] = tensor
        if len(self._responses) > RESPONSE_CACHE:
            self._responses.popitem(last=False)
        return tensor


class GlobalReferenceStage(Stage):
    """Global median/average reference, per group: (members, reference channels) index pairs.

    Channels in no group come out as zeros, as in SpikeInterface's grouped path.
    """

    def __init__(self, operator: str, groups: list[tuple[np.ndarray, np.ndarray]], n_channels: int) -> None:
        super().__init__()
        self.operator = operator
        self.groups = [(np.asarray(m, dtype=np.int64), np.asarray(r, dtype=np.int64)) for m, r in groups]
        self.covers_all = len(groups) == 1 and np.array_equal(self.groups[0][0], np.arange(n_channels))

    def apply(self, x: torch.Tensor, window: Window) -> torch.Tensor:
        out = x if self.covers_all else torch.zeros_like(x)
        for i, (members, refs) in enumerate(self.groups):
            ref_rows = x.index_select(0, self.cache.get(f"r{i}", refs, x.device))
            shift = kernels.channel_median(ref_rows) if self.operator == "median" else ref_rows.mean(dim=0)
            if self.covers_all:
                out = x - shift[None, :]
            else:
                index = self.cache.get(f"m{i}", members, x.device)
                out[index] = x.index_select(0, index) - shift[None, :]
        return out


class LocalMedianStage(Stage):
    """Local (annulus) median reference: channels grouped by neighbour count, one network per count."""

    def __init__(self, groups: list[tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__()
        # (channels (G,), neighbours (G, K)); channels without neighbours are left out: unreferenced.
        self.groups = [(np.asarray(c, dtype=np.int64), np.asarray(n, dtype=np.int64)) for c, n in groups]

    def apply(self, x: torch.Tensor, window: Window) -> torch.Tensor:
        out = x.clone()
        for i, (channels, neighbours) in enumerate(self.groups):
            index = self.cache.get(f"c{i}", channels, x.device)
            shift = torch.empty((channels.size, x.shape[1]), dtype=x.dtype, device=x.device)
            kernels.neighbour_median(x, self.cache.get(f"n{i}", neighbours, x.device), shift)
            out[index] -= shift
        return out


class AffineStage(Stage):
    """y = A_b^T x + bias, A_b (C_in, C_out) per time bin b: motion kriging, whitening, scale, folded.

    `matrix(b)` is called once per bin and cached; `bin_starts[b]` is the first frame of bin b (bin 0
    also takes the frames before it, the last bin those after: SpikeInterface clips to its bins).
    """

    def __init__(
        self, matrix: Callable[[int], np.ndarray], bin_starts: np.ndarray, bias: np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.matrix = matrix
        self.bin_starts = np.asarray(bin_starts, dtype=np.int64)
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32).reshape(-1, 1)
        self._matrices: OrderedDict[tuple[int, str], torch.Tensor] = OrderedDict()

    def apply(self, x: torch.Tensor, window: Window) -> torch.Tensor:
        first, last = window.start, window.start + x.shape[1]
        b0 = max(0, int(np.searchsorted(self.bin_starts, first, side="right")) - 1)
        b1 = max(0, int(np.searchsorted(self.bin_starts, last - 1, side="right")) - 1)
        if b0 == b1:
            out = self._transposed(b0, x.device) @ x
        else:
            out = torch.empty(
                (self._transposed(b0, x.device).shape[0], x.shape[1]), dtype=x.dtype, device=x.device
            )
            for b in range(b0, b1 + 1):
                lo = max(first, int(self.bin_starts[b])) - first if b > b0 else 0
                hi = min(last, int(self.bin_starts[b + 1])) - first if b < b1 else x.shape[1]
                out[:, lo:hi] = self._transposed(b, x.device) @ x[:, lo:hi]
        if self.bias is not None:
            out += self.cache.get("bias", self.bias, x.device)
        return out

    def _transposed(self, b: int, device: torch.device) -> torch.Tensor:
        key = (b, str(device))
        with self.cache.lock:
            if key not in self._matrices:
                matrix = np.asarray(self.matrix(b), dtype=np.float32)
                self._matrices[key] = torch.from_numpy(np.ascontiguousarray(matrix.T)).to(device)
                if len(self._matrices) > MATRIX_CACHE:
                    self._matrices.popitem(last=False)
            self._matrices.move_to_end(key)
            return self._matrices[key]
