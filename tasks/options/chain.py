"""The one chain model: the options' `preprocessing` list split around its `drift_correction` step.

Planning (signatures) and compute (the SpikeInterface chain, the engine) both split the chain here, so
what a step's signature covers is exactly what it computes. Structure only: the step programs check
each step's parameters against SpikeInterface (containers/recording/chain.py).
"""

from __future__ import annotations

from typing import NamedTuple

from tasks.core.errors import UserError

DRIFT_STEP = "drift_correction"
WHERE = "opts.yaml preprocessing"


class Chain(NamedTuple):
    before: list[dict]  # steps before drift correction: what motion's inputs (peaks, locations) read
    drift: dict | None  # drift_correction's step_params, None when the chain has no drift correction
    after: list[dict]  # steps after it (whiten, scale, ...)

    @property
    def has_motion(self) -> bool:
        return self.drift is not None

    def drift_kwargs(self, key: str) -> dict | None:
        """One stage's kwargs of drift_correction (e.g. 'clean_motion_kwargs'), None when absent."""
        return (self.drift or {}).get(key)


def split_chain(steps: list[dict] | None) -> Chain:
    """Split a `preprocessing` list; each item must be {step_name, step_params?}, drift_correction once."""
    steps = list(steps or [])
    names = []
    for step in steps:
        if not isinstance(step, dict) or "step_name" not in step or set(step) - {"step_name", "step_params"}:
            raise UserError(f"{WHERE}: each item needs step_name and optional step_params only, got {step!r}")
        if not isinstance(step.get("step_params") or {}, dict):
            raise UserError(f"{WHERE}: {step['step_name']}.step_params must be a mapping")
        names.append(step["step_name"])
    if names.count(DRIFT_STEP) > 1:
        raise UserError(f"{WHERE}: {DRIFT_STEP} appears {names.count(DRIFT_STEP)} times; keep one")
    if DRIFT_STEP not in names:
        return Chain(steps, None, [])
    i = names.index(DRIFT_STEP)
    return Chain(steps[:i], dict(steps[i].get("step_params") or {}), steps[i + 1 :])


def options_chain(opts: dict) -> Chain:
    """The chain of an options dict (opts.yaml)."""
    return split_chain(opts.get("preprocessing"))
