"""What several steps read: the kept recording, the chain up to motion, drift parameters, preprocessing/
files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from containers.runtime.stepping import StepContext
from tasks.core.atomic import atomic_path
from tasks.core.errors import warn
from tasks.inputs.segments import read_segments
from tasks.options.chain import options_chain

CLEAN_MOTION = "motion_non_rigid_clean.npz"
T = TypeVar("T")


def kept_recording(ctx: StepContext):
    from containers.recording.chain import load_kept_recording

    return load_kept_recording(read_segments(ctx.sorting.segments))


def with_engine(ctx: StepContext, plan: Callable[[], T]) -> T | None:
    """`plan()` when the options ask for the torch engine (`engine: torch`); None, said once on the terminal
    and recorded in the manifest, when the engine cannot run this chain: SpikeInterface computes it then."""
    if ctx.opts.get("engine", "spikeinterface") != "torch":
        ctx.extra["engine"] = {"used": "spikeinterface"}
        return None
    try:
        from containers.engine import EngineUnsupported
    except ImportError as err:  # an image built without torch
        reason = f"this environment (no torch: {err})"
    else:
        try:
            planned = plan()
            reason = ""
        except EngineUnsupported as err:
            reason = str(err)
    if reason:
        warn(f"{ctx.sorting.root}: the torch engine does not support {reason}; SpikeInterface runs the chain")
        ctx.extra["engine"] = {"requested": "torch", "used": "spikeinterface", "reason": reason}
        return None
    ctx.engine = "torch"
    ctx.extra["engine"] = {"used": "torch", "device": ctx.settings.device}
    return planned


# Bytes of device memory one frame of one channel takes through the engine's stages (float32 copies,
# FFT buffers, the fold matrices' products), with room to spare: chunks fill a quarter of what is free.
ENGINE_BYTES_PER_SAMPLE = 64
MAX_CHUNK_S = 60


def chunk_frames(device: str, n_channels: int, sampling_frequency: float) -> int:
    """Frames per engine chunk: 1 s on the CPU; on a GPU as many as a quarter of its free memory holds
    (at most a minute), so a big card is kept busy and a small or shared one is not overrun."""
    second = int(round(sampling_frequency))
    if not device.startswith("cuda"):
        return second
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    fits = free // 4 // (ENGINE_BYTES_PER_SAMPLE * max(1, n_channels))
    return int(max(second, min(MAX_CHUNK_S * second, fits)))


def pass_kwargs(ctx: StepContext, rec) -> dict:
    """How a detection/localization pass reads the engine's recording: its chunks, device and progress.
    Single-threaded: the engine chain under it already runs n_jobs threads (torch's own threads lose here)."""
    return {
        "chunk_size": chunk_frames(ctx.settings.device, rec.get_num_channels(), rec.get_sampling_frequency()),
        "device": ctx.settings.device,
        "n_jobs": 1,
        "on_progress": lambda fraction: ctx.progress.update(100.0 * fraction),
    }


def recording_for_motion(ctx: StepContext):
    """The chain before drift correction, float32 uV: the engine's recording, or SpikeInterface's."""
    from containers.recording.chain import preprocess_for_motion

    rec = kept_recording(ctx)
    hours = rec.get_total_duration() / 3600
    ctx.progress.label = f"{ctx.progress.label} of {hours:.2f} h"
    steps = ctx.opts["preprocessing"]

    def plan():
        from containers.engine import plan_recording

        return plan_recording(rec, steps, until="motion", device=ctx.settings.device, n_jobs=ctx.n_jobs)

    engine_recording = with_engine(ctx, plan)
    return engine_recording if engine_recording is not None else preprocess_for_motion(rec, steps)


def drift_kwargs(ctx: StepContext, key: str) -> dict:
    from containers.motion.stages import resolve_drift_params

    resolved = resolve_drift_params(options_chain(ctx.opts).drift or {})
    ctx.extra.setdefault("resolved", {})[key] = resolved[key]
    if resolved.get("notes"):
        ctx.extra["resolution_notes"] = resolved["notes"]
    return resolved[key]


def prepro_file(ctx: StepContext, name: str) -> Path:
    return ctx.sorting.preprocessing / name


def fused_locations_file(ctx: StepContext) -> Path:
    """Where the peaks step's fused pass leaves its locations: named by the peak_locations step's signature
    (the localization options and the peaks), so that step adopts them only when they are what it would
    compute."""
    from tasks.steps.registry import expected

    return prepro_file(ctx, f"peak_locations.fused-{expected(ctx.sorting, 'peak_locations').signature}.npy")


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def cleaned_motion(ctx: StepContext) -> tuple[object | None, dict]:
    """(the CLEANED motion, resolved interpolate_motion_kwargs), or (None, {}) without drift correction."""
    from containers.motion.stages import load_motion

    if options_chain(ctx.opts).drift is None:
        return None, {}
    # Always the CLEANED motion: sorting with the raw one went unnoticed for 16 months once.
    ctx.extra["motion_used"] = f"preprocessing/{CLEAN_MOTION}"
    return load_motion(prepro_file(ctx, CLEAN_MOTION)), drift_kwargs(ctx, "interpolate_motion_kwargs")


def preprocessed_recording(ctx: StepContext, source=None):
    """The kept recording (or `source`) through the whole chain in SpikeInterface, motion interpolated with
    the CLEANED one."""
    from containers.recording.chain import preprocess_full

    clean, interpolate_kwargs = cleaned_motion(ctx)
    source = kept_recording(ctx) if source is None else source
    return preprocess_full(source, ctx.opts["preprocessing"], clean, interpolate_kwargs)
