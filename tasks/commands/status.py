"""`wisc-sort status`: every sorting found on disk, one line each: steps done/stale/missing, sizes, curation,
postprocessing, finalized. Reads only small files (manifests, opts.yaml, segments.htsv) and stats the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from tasks.core.diskspace import human_bytes
from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.finalize.finalize import finalize_state
from tasks.inputs.segments import kept_hours
from tasks.phy.curation import curation_state
from tasks.steps.postpro_state import postpro_sets, postpro_status

UNKNOWN = "?"  # not computed yet
PER_WORKER = 32  # sortings per process at least, before `status` forks helpers


@dataclass
class SortingStatus:
    project: str
    experiment: str
    alias: str
    subject: str
    probe: str
    path: str
    hours: float | None = None
    steps: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    recording_dat: bool = False
    curation: str = UNKNOWN
    postpro: dict[str, str] = field(default_factory=dict)
    finalized: str = UNKNOWN
    problem: str = ""
    report: str = ""  # report.html, when a step has written it


def _top_level_bytes(folder: Path, skip: tuple[str, ...] = ()) -> int:
    """Bytes of the plain files directly in `folder` (no recursion: status must stay fast)."""
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name not in skip and entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0
    return total


def _step_states(sorting: SortingDir) -> dict[str, str]:
    """manifest.status for each step that the sorting's options call for (recording.dat that a
    finalize removed reads "deleted", not "partial")."""
    from tasks.core.manifest import status
    from tasks.steps.registry import load_inputs, pipeline_steps

    opts, _ = load_inputs(sorting)
    states = {}
    for step in pipeline_steps(opts):  # every registered step these options call for
        state = status(sorting, step)  # checked against the environment (image) the step ran in
        if state == "partial" and step == "recording_dat" and sorting.manifest(step).exists():
            if not (sorting.sorter_output / "recording.dat").exists():
                state = "deleted"  # by finalize, the only thing allowed to delete it
        states[step] = state
    return states


def _curation(sorting: SortingDir) -> str:
    if not sorting.sorter_output.is_dir():
        return "no sort"
    state = curation_state(sorting.sorter_output, quick=True)
    if state.complete:
        return "complete"
    if state.problem:
        return state.problem
    return f"{len(state.uncurated)} of {state.n_units} units uncurated"


def _postpro(sorting: SortingDir) -> dict[str, str]:
    return {name: postpro_status(sorting, name) for name in postpro_sets(sorting)}


def _finalized(sorting: SortingDir) -> str:
    return finalize_state(sorting.root) or "no"


def sorting_status(entry: SortingStatus) -> SortingStatus:
    """Fill in what is on disk for one sorting. Problems (a broken opts.yaml) go into `problem`."""
    sorting = SortingDir(Path(entry.path))
    entry.hours = kept_hours(sorting.segments)
    dat = sorting.sorter_output / "recording.dat"
    entry.recording_dat = dat.exists()
    entry.report = str(sorting.report) if sorting.report.exists() else ""
    entry.sizes = {
        "preprocessing": _top_level_bytes(sorting.preprocessing),
        "recording.dat": dat.stat().st_size if entry.recording_dat else 0,
        "sort": _top_level_bytes(sorting.sorter_output, skip=("recording.dat",)),
    }
    if not (sorting.opts.exists() and sorting.segments.exists()):
        entry.problem = "not set up (no opts.yaml/segments.htsv)"
    else:
        try:
            entry.steps = _step_states(sorting)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            entry.problem = f"opts.yaml: malformed YAML{line}: {getattr(err, 'problem', None) or err}; fix it"
        except UserError as err:  # already one line naming the file and what to do
            entry.problem = " ".join(str(err).split())[:300]
        except Exception as err:  # a broken opts.yaml must not hide the other sortings
            entry.problem = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    for name, function in (("curation", _curation), ("postpro", _postpro), ("finalized", _finalized)):
        try:
            setattr(entry, name, function(sorting))
        except Exception as err:
            entry.problem = entry.problem or f"{name}: {type(err).__name__}: {err}"
    return entry


def _subdirs(folder: Path, only: str | None = None) -> Iterator[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            found = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return
    for entry in sorted(found, key=lambda e: e.name):
        if only is None or entry.name == only:
            yield entry


def find_sortings(
    projects: dict[str, Path], experiment: str | None = None, subject: str | None = None
) -> Iterator[SortingStatus]:
    """`<project>/<experiment>/<alias>/<subject>/sorting.<probe>/` folders, in name order; a project
    directory listed under two names is walked once (under its first name)."""
    seen: set[Path] = set()
    for project, directory in projects.items():
        real = Path(directory).resolve()
        if real in seen:
            continue
        seen.add(real)
        for exp in _subdirs(real, experiment):
            for alias in _subdirs(Path(exp.path)):
                for subj in _subdirs(Path(alias.path), subject):
                    for probe in _subdirs(Path(subj.path)):
                        if probe.name.startswith("sorting.") and not probe.name.endswith(".bak"):
                            yield SortingStatus(
                                project, exp.name, alias.name, subj.name, probe.name[8:], probe.path
                            )


def summarize_steps(steps: dict[str, str]) -> str:
    """'8/8 done' or '5/8 done; stale: motion, motion_clean; missing: sort'."""
    done = sum(state == "done" for state in steps.values())
    parts = [f"{done}/{len(steps)} done"]
    for state in ("stale", "partial", "missing", "deleted"):
        names = [step for step, s in steps.items() if s == state]
        if names:
            parts.append(f"{state}: {', '.join(names)}")
    return "; ".join(parts)


def format_line(entry: SortingStatus) -> str:
    where = f"{entry.project}/{entry.experiment}/{entry.alias}/{entry.subject}"
    hours = f"{entry.hours:.1f} h" if entry.hours is not None else "? h"
    steps = entry.problem or summarize_steps(entry.steps)
    sizes = ", ".join(f"{k} {human_bytes(v)}" for k, v in entry.sizes.items() if v)
    dat = "recording.dat" if entry.recording_dat else "no recording.dat"
    postpro = ", ".join(f"{name} {state}" for name, state in entry.postpro.items()) or "none"
    return (
        f"{where}  {entry.probe}  {hours}  steps: {steps}  {dat}  sizes: {sizes or '-'}  "
        f"curation: {entry.curation}  postpro: {postpro}  finalized: {entry.finalized}"
        + (f"  report: {entry.report}" if entry.report else "")
    )


def statuses(entries: list[SortingStatus], workers: int | None = None) -> Iterator[SortingStatus]:
    """`sorting_status` of each entry, in order; many sortings are read by one forked process per core
    (the work is small reads and parsing, bound by one core per process)."""
    workers = min(workers or os.cpu_count() or 1, max(1, len(entries) // PER_WORKER))
    if workers <= 1:
        yield from map(sorting_status, entries)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(sorting_status, entries, chunksize=PER_WORKER // 2)


def collect(
    projects: dict[str, Path], experiment: str | None = None, subject: str | None = None
) -> list[SortingStatus]:
    return list(statuses(list(find_sortings(projects, experiment, subject))))


def select_projects(projects_file: Path | None, names: list[str] | None) -> dict[str, Path]:
    from tasks.inputs.projects import load_projects, project_dir
    from tasks.settings import load_paths

    projects = load_projects(load_paths(projects_file=projects_file).projects_file)
    if not names:
        return dict(projects)
    return {name: project_dir(projects, name) for name in names}  # an unknown name is a UserError


def print_status(args: argparse.Namespace) -> int:
    projects = select_projects(args.projects_file, args.project)
    found = 0
    for entry in statuses(list(find_sortings(projects, args.experiment, args.subject))):
        found += 1
        print(json.dumps(asdict(entry)) if args.json else format_line(entry))
    if not found:
        where = ", ".join(f"{name} ({path})" for name, path in projects.items())
        print(f"wisc-sort: no sortings found under {where}", file=sys.stderr)
    return 0
