"""Motion's inputs in one pass: each chunk is read once (with margins), its peaks detected and localized
on the same tensor, and `peaks` / `peak_locations` come back with SpikeInterface's dtypes.

The fused pass follows SpikeInterface's own fused pass (`compute_motion` without peak selection):
waveforms for localization span `ms_before`=0.1 to `ms_after`=0.3 ms around the peak (the pipeline's
values too; `localize_kwargs` may override them), chunks are zero-padded at the recording's borders as
SpikeInterface's node pipeline pads them, and `grid_convolution` uses the Gaussian prototype unless
`localize_kwargs` gives a `prototype` (`localize_peaks` instead derives one from 5000 detected peaks,
which needs every peak before the first location: two passes). Memory is bounded by the chunk.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .detect import LocallyExclusive, Unsupported, peaks_array, plan_detection
from .localize import LOCATION_DTYPES, gather_waveforms, locations_array, plan_localization

__all__ = ["Unsupported", "detect_and_localize", "localize_given", "read_chunks"]

LOCALIZE_WAVEFORM_MS = {"ms_before": 0.1, "ms_after": 0.3}  # SpikeInterface's compute_motion


@dataclass
class Chunk:
    segment_index: int
    start: int  # first frame of the chunk proper
    end: int
    margin: int
    traces: torch.Tensor  # (end - start + 2 margin, n_channels + 1) float32, last column zeros


def read_chunks(
    recording: Any, chunk_size: int, margin: int, device: str | torch.device = "cpu"
) -> Iterator[Chunk]:
    """Every chunk of every segment with `margin` frames on each side (zeros beyond the recording),
    as float32 on `device` with an extra column of zeros (the channel padding of neighbour tables)."""
    for segment in range(recording.get_num_segments()):
        n = recording.get_num_samples(segment_index=segment)
        for start in range(0, n, chunk_size):
            end = min(n, start + chunk_size)
            first, last = max(0, start - margin), min(n, end + margin)
            raw = np.asarray(recording.get_traces(segment_index=segment, start_frame=first, end_frame=last))
            traces = torch.zeros(
                (end - start + 2 * margin, raw.shape[1] + 1), dtype=torch.float32, device=device
            )
            offset = margin - (start - first)
            with warnings.catch_warnings():  # a read-only memmap: torch only reads it, to copy it
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                source = torch.from_numpy(raw.astype(np.float32, copy=False))
            traces[offset : offset + raw.shape[0], :-1] = source
            yield Chunk(segment, start, end, margin, traces)


@contextmanager
def torch_threads(n_jobs: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n_jobs)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def detect_and_localize(
    recording: Any,
    detect_kwargs: dict,
    localize_kwargs: dict,
    *,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    n_jobs: int = 1,
    on_progress: Callable[[float], None] | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(peaks, peak_locations)` of `recording` in one read of its data.

    recording: a SpikeInterface recording whose traces are the chain's float32 output (other dtypes are
        cast to float32), with channel locations.
    detect_kwargs / localize_kwargs: `detect_peaks` / `localize_peaks` options as in the options files'
        `detect_kwargs` and `localize_peaks_kwargs` (with `method`; `random_slices_kwargs` or
        `noise_levels` for the noise; `ms_before`/`ms_after` for the waveforms).
    chunk_size: frames per chunk (default one second); device: "cpu" or "cuda:N"; n_jobs: torch threads.
    on_progress: called with the fraction of frames done after each chunk.
    timings: when given, wall seconds per phase (plan, read, detect, localize) are added to it.
    Raises `Unsupported` (a ValueError naming the key) for an option the engine does not implement.
    """
    fs = recording.get_sampling_frequency()
    device = torch.device(device)
    clock = _Clock(timings, device)
    with torch_threads(n_jobs), torch.inference_mode():
        with clock("plan"):
            detector = LocallyExclusive(plan_detection(recording, detect_kwargs), device)
            method, localizer, nbefore, nafter = _plan_localization(
                recording, localize_kwargs, device, n_jobs
            )
        margin = max(detector.params.margin, nbefore, nafter)
        total = sum(recording.get_num_samples(segment_index=s) for s in range(recording.get_num_segments()))
        chunks = read_chunks(recording, int(chunk_size or round(fs)), margin, device)
        peaks, locations, done = [], [], 0
        while True:
            with clock("read"):
                chunk = next(chunks, None)
            if chunk is None:
                break
            with clock("detect"):
                samples, channels, amplitudes = detector(chunk.traces[:, :-1], margin)
            with clock("localize"):
                rows = localizer.channel_index[channels]
                waveforms = gather_waveforms(chunk.traces, samples, rows, nbefore, nafter)
                located = localizer(waveforms, channels) if samples.numel() else None
            starts = (samples + chunk.start - margin).cpu().numpy()
            peaks.append(
                peaks_array(starts, channels.cpu().numpy(), amplitudes.cpu().numpy(), chunk.segment_index)
            )
            empty = np.zeros(0, dtype=LOCATION_DTYPES[method])
            locations.append(empty if located is None else locations_array(method, located))
            done += chunk.end - chunk.start
            if on_progress is not None:
                on_progress(done / total)
    return np.concatenate(peaks), np.concatenate(locations)


def localize_given(
    recording: Any,
    peaks: np.ndarray,
    localize_kwargs: dict,
    *,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    n_jobs: int = 1,
    on_progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Locations of given `peaks` (SpikeInterface's peak dtype) in one read of `recording`: what a change
    of localization options reruns, without detecting again. Same waveforms and solvers as the fused pass."""
    device = torch.device(device)
    with torch_threads(n_jobs), torch.inference_mode():
        method, localizer, nbefore, nafter = _plan_localization(recording, localize_kwargs, device, n_jobs)
        out = np.zeros(peaks.size, dtype=LOCATION_DTYPES[method])
        fs = recording.get_sampling_frequency()
        margin = max(nbefore, nafter)
        total = sum(recording.get_num_samples(segment_index=s) for s in range(recording.get_num_segments()))
        done = 0
        for chunk in read_chunks(recording, int(chunk_size or round(fs)), margin, device):
            sample = peaks["sample_index"]
            inside = (peaks["segment_index"] == chunk.segment_index) & (sample >= chunk.start)
            index = np.flatnonzero(inside & (sample < chunk.end))
            if index.size:
                samples = torch.as_tensor(sample[index] - chunk.start + margin, device=device)
                channels = torch.as_tensor(peaks["channel_index"][index], device=device)
                rows = localizer.channel_index[channels]
                waveforms = gather_waveforms(chunk.traces, samples, rows, nbefore, nafter)
                out[index] = locations_array(method, localizer(waveforms, channels))
            done += chunk.end - chunk.start
            if on_progress is not None:
                on_progress(done / total)
    return out


def _plan_localization(recording: Any, localize_kwargs: dict, device: torch.device, n_jobs: int) -> tuple:
    """(method, localizer, frames before, frames after) for `localize_kwargs`; Unsupported names the key."""
    localize = dict(localize_kwargs)
    method = localize.get("method", "center_of_mass")
    if method not in LOCATION_DTYPES:
        raise Unsupported(
            f"localize_peaks_kwargs.method {method!r}: the engine localizes with {sorted(LOCATION_DTYPES)}"
        )
    if "n_peaks" in localize:
        raise Unsupported(
            "localize_peaks_kwargs.n_peaks: the fused pass does not derive a prototype from peaks"
        )
    fs = recording.get_sampling_frequency()
    nbefore, nafter = (round(localize.pop(k, v) * fs / 1000.0) for k, v in LOCALIZE_WAVEFORM_MS.items())
    localizer = plan_localization(
        recording.get_channel_locations(), fs, localize, nbefore, nafter, device, workers=n_jobs
    )
    return method, localizer, nbefore, nafter


class _Clock:
    """Adds the wall seconds of each phase to `timings` (when given); waits for CUDA work to finish."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device) -> None:
        self.timings, self.device = timings, device

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if self.timings is None:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start
