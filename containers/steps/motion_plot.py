"""The motion_plot step: raw and corrected peak maps and the motion (preprocessing/motion_summary.png)."""

from __future__ import annotations

import numpy as np

from containers.runtime.stepping import StepContext
from containers.steps.common import CLEAN_MOTION, kept_recording, prepro_file
from tasks.core.atomic import atomic_path


def run(ctx: StepContext) -> None:
    from containers.motion.plot import plot_motion_summary
    from containers.motion.stages import load_motion

    rec = kept_recording(ctx)
    depths = rec.get_channel_locations()[:, 1]
    sorting = ctx.sorting.root
    with atomic_path(prepro_file(ctx, "motion_summary.png")) as tmp:
        plot_motion_summary(
            np.load(prepro_file(ctx, "peaks.npy")),
            np.load(prepro_file(ctx, "peak_locations.npy")),
            rec.get_sampling_frequency(),
            load_motion(prepro_file(ctx, "motion_non_rigid.npz")),
            load_motion(prepro_file(ctx, CLEAN_MOTION)),
            (float(depths.min()), float(depths.max())),
            tmp,
            f"{sorting.parent.parent.parent.name} / {sorting.parent.name} / {sorting.name}",
        )
