"""The peak_locations step: each peak's position on the probe (preprocessing/peak_locations.npy)."""

from __future__ import annotations

import numpy as np

from containers.runtime.stepping import StepContext
from containers.steps.common import drift_kwargs, prepro_file, recording_for_motion, save_npy


def run(ctx: StepContext) -> None:
    from containers.motion.stages import localize_peaks_stage

    rec = recording_for_motion(ctx)
    found = np.load(prepro_file(ctx, "peaks.npy"))
    locations = localize_peaks_stage(rec, found, drift_kwargs(ctx, "localize_peaks_kwargs"), ctx.job_kwargs)
    save_npy(prepro_file(ctx, "peak_locations.npy"), locations)
