"""The motion_clean step: the estimate cleaned of fast jumps and smoothed (motion_non_rigid_clean.npz)."""

from __future__ import annotations

from containers.runtime.stepping import StepContext
from containers.steps.common import CLEAN_MOTION, drift_kwargs, prepro_file
from tasks.core.atomic import atomic_path


def run(ctx: StepContext) -> None:
    from containers.motion.stages import clean_motion_stage, load_motion, save_motion

    raw = load_motion(prepro_file(ctx, "motion_non_rigid.npz"))
    cleaned = clean_motion_stage(raw, drift_kwargs(ctx, "clean_motion_kwargs"))
    with atomic_path(prepro_file(ctx, CLEAN_MOTION)) as tmp:
        save_motion(cleaned, tmp)
