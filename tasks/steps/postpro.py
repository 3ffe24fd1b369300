"""Postprocessing in the DAG: set up `<sorting>/<NAME>/` (options, hypnogram), gate, run the step."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import luigi

from tasks.core import atomic
from tasks.core.errors import UserError, warn
from tasks.core.layout import SortingDir
from tasks.execution.executors import get_executor, step_flags
from tasks.inputs.hypnogram import hypnogram_path, read_hypnogram
from tasks.inputs.projects import load_projects, project_dir
from tasks.options.adopt import adopt_options
from tasks.options.postpro import load_postpro_options, parse_postpro_options
from tasks.options.sorting import dump_options
from tasks.phy.curation import require_curated
from tasks.settings import load_paths
from tasks.steps.pipeline import Sort, SortingTask
from tasks.steps.postpro_stages import OPTS_FILE, PostproSet
from tasks.steps.postpro_state import postpro_status


@dataclass
class PostproSetup:
    pset: PostproSet
    messages: list[str] = field(default_factory=list)


def _backup(pset: PostproSet, path: Path) -> Path:
    return atomic.backup_copies(pset.sorting.root, pset.name, [path])


def read_set_options(pset: PostproSet) -> dict:
    """The set's own copy, validated like any options file (edits with typos are errors)."""
    import yaml

    try:
        data = yaml.safe_load(pset.opts.read_text())
    except yaml.YAMLError:
        raise UserError(f"{pset.opts}: malformed YAML; fix the file") from None
    return parse_postpro_options(data, str(pset.opts))


def resolve_hypnogram(project: str | None, experiment: str, subject: str) -> Path | None:
    if not project:
        return None
    projects = load_projects(load_paths().projects_file)
    return hypnogram_path(project_dir(projects, project), experiment, subject)


def setup_postpro(
    sorting: SortingDir,
    opts_file: Path | None,
    name: str | None = None,
    replace_opts: bool = False,
    hypnogram: Path | None = None,
) -> PostproSetup:
    """Validate everything first, then write the set's copies; a UserError leaves the folder untouched.

    NAME is the options file's stem. The first run copies the options to `<sorting>/<NAME>/postpro_opts.yaml`;
    from then on that copy is the truth (a differing --opts is refused unless replace_opts; the old copy is
    backed up). The hypnogram, when the options ask for one, is copied to `<NAME>/hypnogram.htsv`; a changed
    source is adopted (old copy backed up) and reruns the per-state metrics only.
    """
    if opts_file is None and name is None:
        raise UserError("pass --opts FILE (e.g. opts/postpro_chronic_df.yaml)")
    if opts_file is not None and Path(opts_file).name == OPTS_FILE:
        name = Path(opts_file).parent.name  # a set's own copy, passed back: that set, as it is now
        if Path(opts_file).resolve() == PostproSet(sorting, name).opts.resolve():
            opts_file = None
    pset = PostproSet(sorting, name or Path(opts_file).stem)
    setup = PostproSetup(pset)
    adoption = adopt_options(
        pset.opts,
        lambda: read_set_options(pset),
        load_postpro_options(opts_file) if opts_file is not None else None,
        opts_file,
        replace_opts,
        "the set's postpro_opts.yaml",
        f"{pset.folder}: no postprocessing set {pset.name!r} yet; pass --opts FILE",
    )
    opts = adoption.options
    copy_hyp = False
    if opts.get("by_hypnogram_state"):
        if hypnogram is not None:
            read_hypnogram(hypnogram)  # missing or malformed: one line with the path
            copy_hyp = not pset.hypnogram.exists() or pset.hypnogram.read_bytes() != hypnogram.read_bytes()
        elif not pset.hypnogram.exists():
            raise UserError(
                f"{pset.opts if pset.opts.exists() else opts_file}: by_hypnogram_state needs a hypnogram; "
                "pass --hypnogram-project H (reads <H>/<experiment>/<subject>/hypnogram.htsv)"
            )
    pset.folder.mkdir(parents=True, exist_ok=True)
    if adoption.write:
        if adoption.replaces:
            setup.messages.append(f"postpro options replaced; previous copy in {_backup(pset, pset.opts)}")
        atomic.write_text(pset.opts, dump_options(opts))
    if copy_hyp:
        if pset.hypnogram.exists():
            setup.messages.append(f"hypnogram changed; previous copy in {_backup(pset, pset.hypnogram)}")
        atomic.write_text(pset.hypnogram, hypnogram.read_text())
    return setup


class PostproTarget(luigi.Target):
    def __init__(self, pset: PostproSet) -> None:
        self.pset = pset

    def exists(self) -> bool:
        return postpro_status(self.pset.sorting, self.pset.name) == "done"


class Postpro(SortingTask):
    """Every stage of one postprocessing set, after the sort and the curation gate."""

    postpro_name = luigi.Parameter(description="the set's name: its options file's stem")
    postpro_opts = luigi.OptionalPathParameter(default=None, significant=False)
    hypnogram_project = luigi.OptionalParameter(default=None, significant=False)
    allow_uncurated = luigi.BoolParameter(default=False, significant=False)

    @property
    def resources(self) -> dict[str, int]:
        return get_executor(self.executor).luigi_resources({"cpu": self.n_jobs})

    @property
    def pset(self) -> PostproSet:
        return PostproSet(self.sorting, self.postpro_name)

    def requires(self):
        return Sort(**self.shared())

    def output(self):
        return PostproTarget(self.pset)

    def run(self):
        hyp = resolve_hypnogram(self.hypnogram_project, self.experiment, self.subject)
        setup_postpro(self.sorting, self.postpro_opts, self.postpro_name, hypnogram=hyp)
        state = require_curated(self.sorting.sorter_output, self.allow_uncurated)
        if not state.complete:
            warn(f"postprocessing {self.sorting.root} with incomplete curation (--allow-uncurated)")
        # A failed step leaves stage outputs without manifests: the next run moves them to <NAME>.bak/.
        get_executor(self.executor).run(
            self.pset.step,
            self.sorting,
            self.n_jobs,
            on_progress=self._progress,
            flags=step_flags(allow_uncurated=self.allow_uncurated),
        )
        status = postpro_status(self.sorting, self.postpro_name)
        if status != "done":
            raise RuntimeError(f"postprocessing {self.pset.folder} exited 0 but is {status}")

    def _progress(self, percent: float, message: str) -> None:
        self.set_progress_percentage(round(percent))
        self.set_status_message(message)
