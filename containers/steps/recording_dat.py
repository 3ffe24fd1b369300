"""The recording_dat step: the whole preprocessed recording as int16 in sorter_output/recording.dat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import spikeinterface.preprocessing as spre
from spikeinterface.core import BaseRecording, write_binary_recording

from containers.recording.chain import preprocess_full
from containers.runtime.stepping import StepContext
from containers.steps.common import chunk_frames, cleaned_motion, kept_recording, with_engine
from tasks.core.atomic import atomic_path
from tasks.core.diskspace import (
    bytes_needed,
    free_bytes,
    full_disk_as_error,
    human_bytes,
    partial_files,
    preflight,
)
from tasks.core.errors import warn
from tasks.inputs.segments import read_segments
from tasks.steps.registry import STEPS

TARGET = STEPS["recording_dat"].outputs[0]
INT16 = np.iinfo(np.int16)
# Steps after which the traces are no longer in uV (no gain to uV is meaningful).
UNITLESS_STEPS = {"whiten", "zscore", "normalize_by_quantile"}
# Clipping is estimated on this many evenly spaced 1 s windows of the written file (cheap, not exact).
CLIP_WINDOWS = 20
CLIP_WARN_FRACTION = 1e-3


def as_int16(recording: BaseRecording) -> BaseRecording:
    """Round and clip to the int16 range: SpikeInterface's own cast truncates and wraps around."""
    if recording.get_dtype() == np.int16:
        return recording
    clipped = spre.clip(recording, a_min=float(INT16.min), a_max=float(INT16.max))
    return spre.astype(clipped, "int16", round=True)


def gain_to_uv(source: BaseRecording, steps: list[dict]) -> float | None:
    """uV per int16 unit of the output, or None when the chain leaves uV (whitening) or gains are unknown.

    The chain starts in uV (preprocess_for_motion scales to uV when the source has gains); SpikeInterface's
    `scale` does not update channel gains, so the chain is read instead of the recording's properties.
    """
    if not source.has_scaleable_traces():
        return None
    gain = 1.0
    for step in steps:
        name, params = step["step_name"], step.get("step_params") or {}
        if name in UNITLESS_STEPS:
            return None
        if name == "scale":
            factor, offset = params.get("gain", 1.0), params.get("offset", 0.0)
            if not np.isscalar(factor) or not np.isscalar(offset) or offset != 0 or factor == 0:
                return None
            gain /= float(factor)
    return gain


def clipped_fraction(path: Path, n_channels: int, sampling_frequency: float) -> tuple[float, float]:
    """(fraction of int16 values at the range's ends, seconds looked at) on evenly spaced 1 s windows."""
    data = np.memmap(path, dtype=np.int16, mode="r").reshape(-1, n_channels)
    window = max(1, int(sampling_frequency))
    starts = np.arange(0, data.shape[0], window)
    starts = starts[np.unique(np.linspace(0, starts.size - 1, CLIP_WINDOWS).round().astype(np.int64))]
    clipped = total = 0
    for start in starts:
        block = data[start : start + window]
        clipped += int(np.count_nonzero((block == INT16.min) | (block == INT16.max)))
        total += block.size
    return (clipped / total if total else 0.0), total / n_channels / sampling_frequency


def run(ctx: StepContext) -> None:
    source = kept_recording(ctx)
    steps = ctx.opts["preprocessing"]
    clean, interpolate_kwargs = cleaned_motion(ctx)

    def plan():
        from containers.engine import plan_chain

        device, n_jobs = ctx.settings.device, ctx.n_jobs
        return plan_chain(
            source, steps, clean, interpolate_kwargs, device=device, n_jobs=n_jobs, dtype="int16"
        )

    chain = with_engine(ctx, plan)
    rec = None if chain is not None else preprocess_full(source, steps, clean, interpolate_kwargs)
    n_channels = chain.num_channels if chain is not None else rec.get_num_channels()
    n_samples = chain.num_frames if chain is not None else rec.get_num_samples()
    rate = chain.sampling_frequency if chain is not None else rec.get_sampling_frequency()
    target = ctx.sorting.path(TARGET)
    needed = bytes_needed(read_segments(ctx.sorting.segments), n_channels)
    reserve = ctx.settings.disk_reserve_bytes
    preflight(target, needed, reserve)
    partial = partial_files(target)
    if partial and free_bytes(target.parent) - reserve < needed:
        # The preflight counted them as free: there is no room for the new file beside them.
        warn(f"{target.parent}: removing the old {target.name} first: no room for the new one beside it")
        for path in partial:
            path.unlink()
    ctx.progress.label = f"{ctx.progress.label} ({human_bytes(n_samples * n_channels * 2)})"
    # Another process may fill the drive after the preflight: one line, and no partial file left.
    with full_disk_as_error(target.parent, f"writing {target}", needed, reserve), atomic_path(target) as tmp:
        if chain is not None:  # one pass: a reader ahead, the engine, a writer behind
            progress = ctx.progress.update
            write_recording_dat(chain, tmp, n_jobs=ctx.n_jobs, on_progress=lambda f: progress(100.0 * f))
        else:
            write_binary_recording(
                as_int16(rec), tmp, dtype="int16", add_file_extension=False, **ctx.job_kwargs
            )
        fraction, seconds = clipped_fraction(tmp, n_channels, rate)
    if fraction > CLIP_WARN_FRACTION:
        warn(
            f"{target}: {fraction:.2%} of the values checked are clipped to the int16 range; "
            "lower the chain's scale gain"
        )
    ctx.extra.update(
        dtype="int16",
        num_channels=n_channels,
        num_samples=n_samples,
        sampling_frequency=rate,
        gain_to_uV=gain_to_uv(source, steps),
        bytes=n_samples * n_channels * 2,
        clipped_fraction_estimate=fraction,
        clipped_estimate_seconds=round(seconds, 3),
    )


def write_recording_dat(chain, path: Path, n_jobs: int, on_progress) -> None:
    from containers.engine import write_recording_dat as write

    frames = chunk_frames(chain.device, chain.num_channels, chain.sampling_frequency)
    write(chain, path, chunk_frames=frames, n_jobs=n_jobs, on_progress=on_progress)
