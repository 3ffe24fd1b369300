"""The peak_locations step: each peak's position on the probe (preprocessing/peak_locations.npy).

With the engine, the peaks step's fused pass already localized every peak under this step's signature:
those locations are adopted (renamed into place). Otherwise (new localization options, or SpikeInterface)
the peaks are localized in a pass of their own.
"""

from __future__ import annotations

import os

import numpy as np

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


def run(ctx: StepContext) -> None:
    from containers.motion.stages import localize_peaks_stage

    found = np.load(prepro_file(ctx, "peaks.npy"))
    target = prepro_file(ctx, "peak_locations.npy")
    fused = fused_locations_file(ctx)
    if (
        ctx.opts.get("engine") == "torch"
        and fused.exists()
        and np.load(fused, mmap_mode="r").size == found.size
    ):
        os.replace(fused, target)  # computed in the peaks step's pass, under this step's signature
        ctx.extra.update(engine={"used": "torch"}, localization="from the peaks step's fused pass")
        return
    rec = recording_for_motion(ctx)
    localize = drift_kwargs(ctx, "localize_peaks_kwargs")
    locations = engine_locations(ctx, rec, found, localize) if ctx.engine == "torch" else None
    if locations is None:
        locations = localize_peaks_stage(rec, found, localize, ctx.job_kwargs)
    save_npy(target, locations)


def engine_locations(ctx: StepContext, rec, found: np.ndarray, localize: dict) -> np.ndarray | None:
    from containers.engine.motion_inputs import Unsupported, localize_given

    try:
        return localize_given(rec, found, localize, **pass_kwargs(ctx, rec))
    except Unsupported as err:
        warn(f"{ctx.sorting.root}: the engine does not localize with {err}; SpikeInterface localizes")
        ctx.extra["localization"] = {"used": "spikeinterface", "reason": str(err)}
        return None
