"""What several steps read: the kept recording, the chain up to motion, drift parameters, preprocessing/
files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from containers.runtime.stepping import StepContext
from tasks.core.atomic import atomic_path
from tasks.inputs.segments import read_segments
from tasks.options.chain import options_chain

CLEAN_MOTION = "motion_non_rigid_clean.npz"


def kept_recording(ctx: StepContext):
    from containers.recording.chain import load_kept_recording

    return load_kept_recording(read_segments(ctx.sorting.segments))


def recording_for_motion(ctx: StepContext):
    from containers.recording.chain import preprocess_for_motion

    rec = kept_recording(ctx)
    hours = rec.get_total_duration() / 3600
    ctx.progress.label = f"{ctx.progress.label} of {hours:.2f} h"
    return preprocess_for_motion(rec, options_chain(ctx.opts).before)


def drift_kwargs(ctx: StepContext, key: str) -> dict:
    from containers.motion.stages import resolve_drift_params

    resolved = resolve_drift_params(options_chain(ctx.opts).drift or {})
    ctx.extra.setdefault("resolved", {})[key] = resolved[key]
    if resolved.get("notes"):
        ctx.extra["resolution_notes"] = resolved["notes"]
    return resolved[key]


def prepro_file(ctx: StepContext, name: str) -> Path:
    return ctx.sorting.preprocessing / name


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def preprocessed_recording(ctx: StepContext, source=None):
    """The kept recording (or `source`) through the whole chain, motion interpolated with the CLEANED one."""
    from containers.motion.stages import load_motion
    from containers.recording.chain import preprocess_full

    drift = options_chain(ctx.opts).drift
    clean = None
    interpolate_kwargs: dict = {}
    if drift is not None:
        # Always the CLEANED motion: sorting with the raw one went unnoticed for 16 months once.
        clean = load_motion(prepro_file(ctx, CLEAN_MOTION))
        interpolate_kwargs = drift_kwargs(ctx, "interpolate_motion_kwargs")
        ctx.extra["motion_used"] = f"preprocessing/{CLEAN_MOTION}"
    source = kept_recording(ctx) if source is None else source
    return preprocess_full(source, ctx.opts["preprocessing"], clean, interpolate_kwargs)
