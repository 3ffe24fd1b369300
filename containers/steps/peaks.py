"""The peaks step: peak detection on the chain before drift correction (preprocessing/peaks.npy).

With the engine, detection and localization share one read of the data (the fused pass): the locations
are kept beside the peaks under the peak_locations step's signature, which that step adopts instead of
reading the data again (a change of localization options only reruns localization).
"""

from __future__ import annotations

from containers.runtime.stepping import StepContext
from containers.steps.common import (
    drift_kwargs,
    fused_locations_file,
    pass_kwargs,
    prepro_file,
    recording_for_motion,
    save_npy,
)
from tasks.core.errors import warn
from tasks.options.chain import options_chain


def run(ctx: StepContext) -> None:
    from containers.motion.stages import check_motion_dependencies, detect_peaks_stage, resolve_drift_params

    # Fail now, not after hours of peaks, if the motion method needs a missing library (torch).
    check_motion_dependencies(resolve_drift_params(options_chain(ctx.opts).drift or {}))
    rec = recording_for_motion(ctx)
    detect = drift_kwargs(ctx, "detect_kwargs")
    fused = fused_pass(ctx, rec, detect) if ctx.engine == "torch" else None
    found = fused[0] if fused is not None else detect_peaks_stage(rec, detect, ctx.job_kwargs)
    ctx.extra["n_peaks"] = int(found.size)
    save_npy(prepro_file(ctx, "peaks.npy"), found)
    if fused is not None:
        kept = fused_locations_file(ctx)
        for stale in kept.parent.glob("peak_locations.fused-*.npy"):
            stale.unlink()  # of earlier options: never adopted now
        save_npy(kept, fused[1])


def fused_pass(ctx: StepContext, rec, detect: dict):
    """(peaks, locations) of the engine's one pass, or None (said once) when it cannot run these options."""
    from containers.engine.motion_inputs import Unsupported, detect_and_localize

    localize = drift_kwargs(ctx, "localize_peaks_kwargs")
    detect = {**detect, "random_slices_kwargs": detect.get("random_slices_kwargs", {"seed": 0})}
    try:
        found = detect_and_localize(rec, detect, localize, **pass_kwargs(ctx, rec))
    except Unsupported as err:
        warn(f"{ctx.sorting.root}: the engine's detection does not support {err}; SpikeInterface detects")
        ctx.extra["detection"] = {"used": "spikeinterface", "reason": str(err)}
        return None
    ctx.extra["detection"] = {"used": "torch", "fused_with_localization": True}
    return found
