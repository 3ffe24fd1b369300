"""The motion step: motion estimated from peaks and their locations (motion_non_rigid.npz)."""

from __future__ import annotations

import numpy as np

from containers.runtime.stepping import StepContext
from containers.steps.common import drift_kwargs, prepro_file, recording_for_motion
from tasks.core.atomic import atomic_path


def run(ctx: StepContext) -> None:
    from containers.motion.stages import estimate_motion_stage, save_motion

    rec = recording_for_motion(ctx)
    found = np.load(prepro_file(ctx, "peaks.npy"))
    locations = np.load(prepro_file(ctx, "peak_locations.npy"))
    estimated = estimate_motion_stage(
        rec, found, locations, drift_kwargs(ctx, "estimate_motion_kwargs"), ctx.job_kwargs
    )
    with atomic_path(prepro_file(ctx, "motion_non_rigid.npz")) as tmp:
        save_motion(estimated, tmp)
