"""Torch kernels of the engine: spectral filtering, phase shift, median references, the int16 cast.

Hand-written although SpikeInterface has each step, for speed: SpikeInterface filters with scipy's
sosfiltfilt (float64, one channel after another), shifts phases in a second FFT, and computes the
local median in a Python loop over channels. Here the zero-phase filter and the phase shift are one
FFT multiply, and the local median is a pruned sorting network of elementwise min/max over all channels
at once (5-10x faster than torch.sort or torch.kthvalue on small neighbour sets on CPU).
Only torch, numpy and scipy: this module must import on a GPU machine without SpikeInterface.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy import fft as sfft
from scipy import signal

INT16_MIN, INT16_MAX = -32768.0, 32767.0
# Local median in time blocks this long on CPU: the K neighbour copies stay in cache.
CPU_MEDIAN_BLOCK = 256


def fast_length(n: int) -> int:
    """An FFT length >= n made of small primes (a 33400-sample buffer has the prime factor 167)."""
    return sfft.next_fast_len(int(n), real=True)


def filter_power(coeff, mode: str, n: int, fs: float) -> np.ndarray:
    """|H(f)|^2 at the rfft frequencies of length n: the response of a forward-backward (filtfilt) pass."""
    freqs = np.fft.rfftfreq(n, d=1.0 / fs)
    if mode == "sos":
        _, h = signal.sosfreqz(np.asarray(coeff), worN=freqs, fs=fs)
    else:
        _, h = signal.freqz(*coeff, worN=freqs, fs=fs)
    return np.abs(h) ** 2


def shift_ramp(shifts: np.ndarray, n: int) -> np.ndarray:
    """(C, n//2+1) complex rotations delaying channel c by shifts[c] samples (SpikeInterface's sign)."""
    angular = 2 * np.pi * np.fft.rfftfreq(n)
    unique, inverse = np.unique(np.asarray(shifts, dtype=np.float64), return_inverse=True)
    return np.exp(-1j * unique[:, None] * angular[None, :])[inverse]


def spectral_apply(x: torch.Tensor, response: torch.Tensor, n: int) -> torch.Tensor:
    """Multiply the rfft of x (C, T) over length n >= T by response ((C or 1), n//2+1); back to (C, T)."""
    length = x.shape[1]
    spectrum = torch.fft.rfft(x, n=n, dim=1)
    spectrum.mul_(response)
    return torch.fft.irfft(spectrum, n=n, dim=1)[:, :length]


def filtfilt_cpu(x: torch.Tensor, coeff, mode: str) -> torch.Tensor:
    """scipy's sosfiltfilt/filtfilt (odd padding, steady-state start) as SpikeInterface applies them.

    Used only on buffers cut by the recording's ends, where SpikeInterface's output depends on scipy's
    padding; elsewhere the FFT product is used.
    """
    data = x.detach().cpu().numpy()
    if mode == "sos":
        out = signal.sosfiltfilt(np.asarray(coeff), data, axis=1)
    else:
        out = signal.filtfilt(*coeff, data, axis=1)
    return torch.from_numpy(out.astype(np.float32)).to(x.device)


def phase_shift_padded(x: torch.Tensor, shifts: np.ndarray, margin: int, cut_left: bool, cut_right: bool):
    """SpikeInterface's phase shift of x (C, T): `margin` zeros added on a side a recording end cut, and
    its cosine taper over the outer `margin` frames of a side that was not cut (they hold real data).
    """
    x = x.clone()
    taper = torch.from_numpy((1 - np.cos(np.arange(margin) / margin * np.pi)) / 2).to(x)
    if not cut_left:
        x[:, :margin] *= taper[: x.shape[1]]
    if not cut_right:
        x[:, -margin:] *= taper.flip(0)[-x.shape[1] :]
    pad_left, pad_right = (margin if cut_left else 0), (margin if cut_right else 0)
    padded = torch.nn.functional.pad(x, (pad_left, pad_right))
    n = fast_length(padded.shape[1])
    ramp = torch.from_numpy(shift_ramp(shifts, n).astype(np.complex64)).to(x.device)
    return spectral_apply(padded, ramp, n)[:, pad_left : pad_left + x.shape[1]]


@lru_cache(maxsize=64)
def median_network(k: int) -> tuple[tuple[int, int], ...]:
    """Compare-exchange pairs (lo, hi) that bring ranks (k-1)//2 and k//2 of k values into place.

    Batcher's odd-even merge sort on the next power of two, the missing inputs taken as +inf (they sort
    last, so the real ranks are unchanged); exchanges with a +inf input are dropped (their outcome is
    known), then every exchange that cannot reach the two median slots is pruned (9 inputs: 24 of 63).
    Returns pairs; a pair (a, -b-1) means "move slot b into slot a" (the +inf exchange done as a move).
    """
    size = 1
    while size < k:
        size *= 2
    infinite = [i >= k for i in range(size)]
    kept: list[tuple[int, int]] = []
    for a, b in _batcher_pairs(size):
        if infinite[b]:
            continue
        if infinite[a]:
            kept.append((a, -b - 1))
            infinite[a], infinite[b] = False, True
            continue
        kept.append((a, b))
    needed = {(k - 1) // 2, k // 2}
    pruned = []
    for a, b in reversed(kept):
        target = b if b >= 0 else -b - 1
        if a in needed or target in needed:
            pruned.append((a, b))
            needed |= {a, target}
    return tuple(reversed(pruned))


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def neighbour_median(x: torch.Tensor, neighbours: torch.Tensor, out: torch.Tensor) -> None:
    """out[c] = numpy-style median over time of x[neighbours[c, :]] (mean of the two middles for even K).

    x (C_all, T), neighbours (C, K) long, out (C, T). Works in time blocks on CPU (cache), whole on GPU.
    """
    k = neighbours.shape[1]
    block = CPU_MEDIAN_BLOCK if x.device.type == "cpu" else x.shape[1]
    columns = [neighbours[:, i].contiguous() for i in range(k)]
    slots = [torch.empty((neighbours.shape[0], block), dtype=x.dtype, device=x.device) for _ in range(k + 1)]
    network = median_network(k)
    for start in range(0, x.shape[1], block):
        chunk = x[:, start : start + block]
        width = chunk.shape[1]
        views = [slot[:, :width] for slot in slots]
        work, spare = views[:k], views[k]
        for i in range(k):
            torch.index_select(chunk, 0, columns[i], out=work[i])
        for a, b in network:
            if b < 0:
                work[a], work[-b - 1] = work[-b - 1], work[a]
                continue
            torch.minimum(work[a], work[b], out=spare)
            torch.maximum(work[a], work[b], out=work[b])
            work[a], spare = spare, work[a]
        torch.add(work[(k - 1) // 2], work[k // 2], out=out[:, start : start + width])
    out.mul_(0.5)


def channel_median(x: torch.Tensor) -> torch.Tensor:
    """Median over channels of x (C, T) -> (T,), numpy's convention (mean of the two middles).

    On CPU numpy's introselect beats torch's median by ~2x; on GPU torch selects in parallel.
    """
    if x.device.type == "cpu":
        return torch.from_numpy(np.median(x.numpy(), axis=0))
    count = x.shape[0]
    if count % 2:
        return x.kthvalue(count // 2 + 1, dim=0).values
    ordered = x.sort(dim=0).values
    return (ordered[count // 2 - 1] + ordered[count // 2]) * 0.5


def to_int16(x: torch.Tensor) -> torch.Tensor:
    """Clip to the int16 range, then round half to even (SpikeInterface's clip then astype(round=True))."""
    return x.clamp_(INT16_MIN, INT16_MAX).round_().to(torch.int16)
