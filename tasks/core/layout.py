"""Paths of a sorting directory, named as the lab's tools name them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import UserError

PIPELINE_DIR = ".pipeline"


def plain_name(value: object, what: str) -> str:
    """A name that becomes one folder or file of a path (project layout, postprocessing set). Spaces, quotes,
    `$(...)`, `;` and non-ASCII are plain data (no path ever goes through a shell); empty, `.`, `..` and
    anything holding `/` would put files outside the project roots: a one-line UserError."""
    text = str(value)
    if text.strip() in ("", ".", "..") or "/" in text or "\0" in text:
        raise UserError(
            f"{what} {text!r} is not a plain folder name (empty, '.', '..' or holding '/'): it would put "
            "files outside the project roots; rename it"
        )
    return text


@dataclass(frozen=True)
class SortingDir:
    """`<project_dir>/<experiment>/<alias>/<subject>/sorting.<probe>/` and the files in it."""

    root: Path

    @classmethod
    def locate(cls, project_dir: Path, experiment: str, alias: str, subject: str, probe: str) -> SortingDir:
        names = [
            plain_name(v, w) for v, w in ((experiment, "experiment"), (alias, "alias"), (subject, "subject"))
        ]
        return cls(Path(project_dir).joinpath(*names, f"sorting.{plain_name(probe, 'probe')}"))

    @property
    def opts(self) -> Path:
        return self.root / "opts.yaml"

    @property
    def exclusions(self) -> Path:
        return self.root / "exclusions.htsv"

    @property
    def segments(self) -> Path:
        return self.root / "segments.htsv"

    @property
    def preprocessing(self) -> Path:
        return self.root / "preprocessing"

    @property
    def sorter_output(self) -> Path:
        return self.root / "si_output" / "sorter_output"

    @property
    def pipeline(self) -> Path:
        return self.root / PIPELINE_DIR

    def manifest(self, step: str) -> Path:
        return self.pipeline / f"{step}.json"

    def progress(self, step: str) -> Path:
        return self.pipeline / f"{step}.progress.json"

    def failure(self, step: str) -> Path:
        """The trace and error of a step's last failed attempt (removed when it next succeeds)."""
        return self.pipeline / f"{step}.failed.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def log(self, step: str) -> Path:
        return self.pipeline / f"{step}.log"

    def path(self, relative: str) -> Path:
        return self.root / relative
