"""The preprocessed_probe step: the probe after the whole chain (preprocessed_si_probe.json)."""

from __future__ import annotations

from containers.runtime.stepping import StepContext
from containers.steps.common import preprocessed_recording
from tasks.core.atomic import atomic_path


def run(ctx: StepContext) -> None:
    import probeinterface

    rec = preprocessed_recording(ctx)
    ctx.extra["num_channels"] = rec.get_num_channels()
    with atomic_path(ctx.sorting.root / "preprocessed_si_probe.json") as tmp:
        probeinterface.write_probeinterface(tmp, rec.get_probegroup())
