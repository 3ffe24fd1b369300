"""Preprocessing and motion steps: read inputs from the sorting directory, compute, write atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from containers.runtime.stepping import StepContext
from tasks.core.atomic import atomic_path
from tasks.inputs.segments import read_segments
from tasks.steps.registry import split_chain

CLEAN_MOTION = "motion_non_rigid_clean.npz"


def kept_recording(ctx: StepContext):
    from containers.recording.chain import load_kept_recording

    return load_kept_recording(read_segments(ctx.sorting.segments))


def _recording_for_motion(ctx: StepContext):
    from containers.recording.chain import preprocess_for_motion

    rec = kept_recording(ctx)
    hours = rec.get_total_duration() / 3600
    ctx.progress.label = f"{ctx.progress.label} of {hours:.2f} h"
    return preprocess_for_motion(rec, split_chain(ctx.opts)[0])


def _drift(ctx: StepContext, key: str) -> dict:
    from containers.motion.stages import resolve_drift_params

    resolved = resolve_drift_params(split_chain(ctx.opts)[1] or {})
    ctx.extra.setdefault("resolved", {})[key] = resolved[key]
    if resolved.get("notes"):
        ctx.extra["resolution_notes"] = resolved["notes"]
    return resolved[key]


def _prepro(ctx: StepContext, name: str) -> Path:
    return ctx.sorting.preprocessing / name


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def peaks(ctx: StepContext) -> None:
    from containers.motion.stages import check_motion_dependencies, detect_peaks_stage, resolve_drift_params

    # Fail now, not after hours of peaks, if the motion method needs a missing library (torch).
    check_motion_dependencies(resolve_drift_params(split_chain(ctx.opts)[1] or {}))
    rec = _recording_for_motion(ctx)
    found = detect_peaks_stage(rec, _drift(ctx, "detect_kwargs"), ctx.job_kwargs)
    ctx.extra["n_peaks"] = int(found.size)
    _save_npy(_prepro(ctx, "peaks.npy"), found)


def peak_locations(ctx: StepContext) -> None:
    from containers.motion.stages import localize_peaks_stage

    rec = _recording_for_motion(ctx)
    found = np.load(_prepro(ctx, "peaks.npy"))
    locations = localize_peaks_stage(rec, found, _drift(ctx, "localize_peaks_kwargs"), ctx.job_kwargs)
    _save_npy(_prepro(ctx, "peak_locations.npy"), locations)


def motion(ctx: StepContext) -> None:
    from containers.motion.stages import estimate_motion_stage, save_motion

    rec = _recording_for_motion(ctx)
    found = np.load(_prepro(ctx, "peaks.npy"))
    locations = np.load(_prepro(ctx, "peak_locations.npy"))
    estimated = estimate_motion_stage(
        rec, found, locations, _drift(ctx, "estimate_motion_kwargs"), ctx.job_kwargs
    )
    with atomic_path(_prepro(ctx, "motion_non_rigid.npz")) as tmp:
        save_motion(estimated, tmp)


def motion_clean(ctx: StepContext) -> None:
    from containers.motion.stages import clean_motion_stage, load_motion, save_motion

    raw = load_motion(_prepro(ctx, "motion_non_rigid.npz"))
    cleaned = clean_motion_stage(raw, _drift(ctx, "clean_motion_kwargs"))
    with atomic_path(_prepro(ctx, CLEAN_MOTION)) as tmp:
        save_motion(cleaned, tmp)


def motion_plot(ctx: StepContext) -> None:
    from containers.motion.plot import plot_motion_summary
    from containers.motion.stages import load_motion

    rec = kept_recording(ctx)
    depths = rec.get_channel_locations()[:, 1]
    sorting = ctx.sorting.root
    with atomic_path(_prepro(ctx, "motion_summary.png")) as tmp:
        plot_motion_summary(
            np.load(_prepro(ctx, "peaks.npy")),
            np.load(_prepro(ctx, "peak_locations.npy")),
            rec.get_sampling_frequency(),
            load_motion(_prepro(ctx, "motion_non_rigid.npz")),
            load_motion(_prepro(ctx, CLEAN_MOTION)),
            (float(depths.min()), float(depths.max())),
            tmp,
            f"{sorting.parent.parent.parent.name} / {sorting.parent.name} / {sorting.name}",
        )


def preprocessed_recording(ctx: StepContext, source=None):
    """The kept recording (or `source`) through the whole chain, motion interpolated with the CLEANED one."""
    from containers.motion.stages import load_motion
    from containers.recording.chain import preprocess_full

    drift = split_chain(ctx.opts)[1]
    clean = None
    interpolate_kwargs: dict = {}
    if drift is not None:
        # Always the CLEANED motion: sorting with the raw one went unnoticed for 16 months once.
        clean = load_motion(_prepro(ctx, CLEAN_MOTION))
        interpolate_kwargs = _drift(ctx, "interpolate_motion_kwargs")
        ctx.extra["motion_used"] = f"preprocessing/{CLEAN_MOTION}"
    source = kept_recording(ctx) if source is None else source
    return preprocess_full(source, ctx.opts["preprocessing"], clean, interpolate_kwargs)


def preprocessed_probe(ctx: StepContext) -> None:
    import probeinterface

    rec = preprocessed_recording(ctx)
    ctx.extra["num_channels"] = rec.get_num_channels()
    with atomic_path(ctx.sorting.root / "preprocessed_si_probe.json") as tmp:
        probeinterface.write_probeinterface(tmp, rec.get_probegroup())


STEP_FUNCTIONS = {
    "peaks": peaks,
    "peak_locations": peak_locations,
    "motion": motion,
    "motion_clean": motion_clean,
    "motion_plot": motion_plot,
    "preprocessed_probe": preprocessed_probe,
}
