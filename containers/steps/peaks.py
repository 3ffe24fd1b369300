"""The peaks step: peak detection on the chain before drift correction (preprocessing/peaks.npy)."""

from __future__ import annotations

from containers.runtime.stepping import StepContext
from containers.steps.common import drift_kwargs, prepro_file, recording_for_motion, save_npy
from tasks.options.chain import options_chain


def run(ctx: StepContext) -> None:
    from containers.motion.stages import check_motion_dependencies, detect_peaks_stage, resolve_drift_params

    # Fail now, not after hours of peaks, if the motion method needs a missing library (torch).
    check_motion_dependencies(resolve_drift_params(options_chain(ctx.opts).drift or {}))
    rec = recording_for_motion(ctx)
    found = detect_peaks_stage(rec, drift_kwargs(ctx, "detect_kwargs"), ctx.job_kwargs)
    ctx.extra["n_peaks"] = int(found.size)
    save_npy(prepro_file(ctx, "peaks.npy"), found)
