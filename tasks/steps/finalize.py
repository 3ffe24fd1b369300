"""The Luigi task `Finalize` at the end of the DAG (tasks/finalize/ does the work; `wisc-sort finalize`
too)."""

from __future__ import annotations

import luigi

from tasks.core.locks import hold_sortings
from tasks.finalize.finalize import (
    Request,
    finalize_one,
    finalize_state,
    read_journal,
)
from tasks.inputs.resolve import Target, sorting_dir
from tasks.report.write import refresh_report
from tasks.settings import Paths, load_paths
from tasks.steps.pipeline import Pipeline, SortingTask
from tasks.steps.postpro import Postpro

DEFAULT_TO = "shared"


def make_request(paths: Paths, target: Target, postpro: str, to: str, keep_recording_dat: bool) -> Request:
    """Source in the target's project, destination at the same relative place in project `to`."""
    home = Target(to, target.experiment, target.alias, target.subject, target.probe)
    return Request(sorting_dir(paths, target), sorting_dir(paths, home), postpro, to, keep_recording_dat)


class FinalizedTarget(luigi.Target):
    """Exists once the destination's journal says this sorting was finalized."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.path = str(request.destination.root)

    def exists(self) -> bool:
        journal = read_journal(self.request.destination.root)
        return (
            journal is not None
            and journal.get("phase") == "done"
            and journal.get("source") == str(self.request.source.root)
        )


class Finalize(SortingTask):
    """Delete recording.dat, link postpro, fix params.py, move the sorting to project `to` (the DAG's end)."""

    postpro = luigi.Parameter(description="postprocessing set to keep as `postpro` (e.g. postpro_chronic_df)")
    to = luigi.Parameter(default=DEFAULT_TO, description="project to move the sorting to")
    keep_recording_dat = luigi.BoolParameter(default=False, description="move recording.dat instead")

    def request(self) -> Request:
        return make_request(load_paths(), self.target, self.postpro, self.to, self.keep_recording_dat)

    def requires(self):
        # An interrupted finalize already deleted recording.dat: its upstream must not be visited (it would
        # write recording.dat again); the journal is the record that curation and postprocessing were done.
        if not self.sorting.root.exists() or finalize_state(self.sorting.root):
            return []
        return [Pipeline(**self.shared()), Postpro(**self.shared(), postpro_name=self.postpro)]

    def output(self):
        return FinalizedTarget(self.request())

    def run(self):
        request = self.request()
        # Like `wisc-sort finalize`: nothing else works on the sorting, or where it goes, during the move.
        with hold_sortings([request.source.root, request.destination.root]):
            lines = finalize_one(request)
        refresh_report(request.destination)  # the finalize record, in the sorting's new home
        self.set_status_message("; ".join(lines))

    def on_failure(self, exception):
        return f"finalize failed for {self.sorting.root}: {exception}"
