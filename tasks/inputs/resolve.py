"""Resolve project, experiment, alias, subject and probe to files, exclusions and the segment table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.inputs.cache import read_cached
from tasks.inputs.exclusions import exclusions_path, read_exclusions
from tasks.inputs.projects import load_projects, project_dir
from tasks.inputs.segments import build_segment_table, check_consistent
from tasks.inputs.spikeglx import SessionFolders, scan_subject
from tasks.inputs.subjects import load_subject, select_alias
from tasks.settings import Paths


@dataclass(frozen=True)
class Target:
    """One sorting the user asked for: `--input SUBJECT,PROBE` within project/experiment/alias."""

    project: str
    experiment: str
    alias: str
    subject: str
    probe: str


def parse_input(text: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise UserError(f"--input {text!r}: expected SUBJECT,PROBE (e.g. --input CNPIX10-Charles,imec0)")
    return parts[0], parts[1]


def sorting_dir(paths: Paths, target: Target) -> SortingDir:
    projects = load_projects(paths.projects_file)
    root = project_dir(projects, target.project)
    return SortingDir.locate(root, target.experiment, target.alias, target.subject, target.probe)


@dataclass
class Resolved:
    target: Target
    sorting: SortingDir
    experiment_files: pd.DataFrame  # every file of the experiment's sessions (all probes, streams)
    files: pd.DataFrame  # the alias's AP files of this probe, in order
    exclusions_file: Path
    exclusions: pd.DataFrame
    segments: pd.DataFrame


def experiment_file_table(paths: Paths, subject_name: str, experiment: str) -> tuple[object, pd.DataFrame]:
    subject = load_subject(paths.subjects_dir, subject_name)
    exp = subject.experiment(experiment)
    sessions = [subject.sessions[sid] for sid in exp.recording_session_ids]
    cached = read_cached(paths.cache_file, subject_name, [s.id for s in sessions])
    if cached is not None:
        return exp, cached
    folders = [SessionFolders(s.id, Path(s.ap), Path(s.lf)) for s in sessions]
    return exp, scan_subject(subject_name, folders)


@dataclass
class AliasFiles:
    """The files of one target and where its exclusions live (read or not)."""

    sorting: SortingDir
    experiment_files: pd.DataFrame
    files: pd.DataFrame
    exclusions_file: Path


def alias_files(paths: Paths, target: Target) -> AliasFiles:
    """The alias's AP files of the probe, in order, and its exclusions file's path (which may not exist)."""
    projects = load_projects(paths.projects_file)
    sorting = SortingDir.locate(
        project_dir(projects, target.project), target.experiment, target.alias, target.subject, target.probe
    )
    exp, table = experiment_file_table(paths, target.subject, target.experiment)
    exp.alias(target.alias)  # unknown alias: error before scanning further
    ap = table[(table["probe"] == target.probe) & (table["stream"] == "ap")]
    if ap.empty:
        found = sorted(set(table.loc[table["stream"] == "ap", "probe"]))
        raise UserError(
            f"no AP files of probe {target.probe!r} in sessions {', '.join(exp.recording_session_ids)} "
            f"of {target.subject}; probes found: {', '.join(found) or 'none'}; check --input and the subject"
        )
    files = select_alias(ap, exp, target.alias)
    check_consistent(files)
    exclusions_file = exclusions_path(
        project_dir(projects, paths.exclusions_project), target.experiment, target.subject, target.probe
    )
    return AliasFiles(sorting, table, files, exclusions_file)


def resolve(paths: Paths, target: Target) -> Resolved:
    """Everything a sorting is planned from. Raises UserError, writing nothing, on any bad input."""
    found = alias_files(paths, target)
    exclusions = read_exclusions(found.exclusions_file, found.experiment_files)
    segments = build_segment_table(found.files, exclusions)
    return Resolved(
        target,
        found.sorting,
        found.experiment_files,
        found.files,
        found.exclusions_file,
        exclusions,
        segments,
    )
