"""`ExportNwb`: the Luigi task that runs the nwb step after the postprocessing set it exports."""

from __future__ import annotations

import luigi

from tasks.steps.nwb_inputs import nwb_set
from tasks.steps.pipeline import task_class
from tasks.steps.postpro import Postpro

Nwb = task_class("nwb")


class ExportNwb(Nwb):
    """The nwb step after its postprocessing set (which reruns first if stale)."""

    hypnogram_project = luigi.OptionalParameter(default=None, significant=False)
    allow_uncurated = luigi.BoolParameter(default=False, significant=False)

    def requires(self):
        postpro = Postpro(
            **self.shared(),
            postpro_name=nwb_set(self.options()),
            hypnogram_project=self.hypnogram_project,
            allow_uncurated=self.allow_uncurated,
        )
        return [*super().requires(), postpro]
