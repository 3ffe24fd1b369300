"""Subject files (`subjects/<SUBJECT>.yml`): sessions, experiments, aliases, and alias -> file selection."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tasks.core.errors import UserError, warn
from tasks.core.layout import plain_name
from tasks.inputs.projects import read_user_text
from tasks.options.sorting import (
    _StrictLoader,  # refuses duplicate keys: a repeated alias must not win silently
)

SUFFIXES = (".yml", ".yaml")
SYNC_TYPES = ("barcode", "square_pulse", "random", "no_sync")
SESSION_KEYS = ("id", "ap", "lf", "imSyncType")
SUBALIAS_KEYS = ("start_file", "end_file", "start_time", "end_time")


@dataclass(frozen=True)
class Session:
    id: str
    ap: Path  # folder holding the gate folders of the AP files
    lf: Path
    imSyncType: str


@dataclass(frozen=True)
class SubAlias:
    """Either a file range (trigger stems, inclusive) or a time window (files overlapping it)."""

    start_file: str | None = None
    end_file: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass
class Experiment:
    name: str
    recording_session_ids: list[str]
    aliases: dict[str, list[SubAlias]]
    subject_file: Path | None = None  # for error messages

    def alias(self, name: str) -> list[SubAlias]:
        if name not in self.aliases:
            raise UserError(
                f"{self.subject_file}: experiment `{self.name}` has no alias `{name}` "
                f"(known: {', '.join(self.aliases) or 'none'}); add it under `aliases`."
                + _did_you_mean(name, self.aliases)
            )
        return self.aliases[name]


@dataclass
class Subject:
    name: str
    path: Path
    sessions: dict[str, Session]
    experiments: dict[str, Experiment] = field(default_factory=dict)

    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise UserError(
                f"{self.path}: subject `{self.name}` has no experiment `{name}` "
                f"(known: {', '.join(self.experiments) or 'none'}); add it under `experiments`."
                + _did_you_mean(name, self.experiments)
            )
        return self.experiments[name]


def _did_you_mean(name: str, choices: Sequence[str] | dict) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


def list_subjects(subjects_dir: Path) -> list[str]:
    subjects_dir = Path(subjects_dir)
    if not subjects_dir.is_dir():
        return []
    return sorted({p.stem for p in subjects_dir.iterdir() if p.suffix in SUFFIXES and p.is_file()})


def subject_path(subjects_dir: Path, name: str) -> Path:
    subjects_dir = Path(subjects_dir)
    plain_name(name, "subject")  # `--input ../x,imec0` must not read a file outside the subjects folder
    found = [subjects_dir / f"{name}{s}" for s in SUFFIXES if (subjects_dir / f"{name}{s}").is_file()]
    if len(found) > 1:
        raise UserError(f"subject `{name}` has two files, {found[0]} and {found[1]}; keep one.")
    if not found:
        known = list_subjects(subjects_dir)
        raise UserError(
            f"no subject file {subjects_dir / (name + '.yml')} (subjects in {subjects_dir}: "
            f"{', '.join(known) or 'none'}); create it." + _did_you_mean(name, known)
        )
    return found[0]


def _require(where: str, mapping: object, key: str, what: str) -> object:
    if not isinstance(mapping, dict) or mapping.get(key) in (None, ""):
        raise UserError(f"{where}: missing key `{key}` ({what}); add it.")
    return mapping[key]


def _warn_unknown(where: str, mapping: dict, known: Sequence[str]) -> None:
    unknown = [str(k) for k in mapping if k not in known]
    if unknown:
        warn(f"{where}: ignoring unknown key(s) {', '.join(unknown)} (known: {', '.join(known)}).")


def _as_time(where: str, value: object) -> datetime:
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        ts = pd.NaT
    if ts is pd.NaT or pd.isna(ts):
        raise UserError(f"{where}: `{value}` is not a date-time; write it like 2021-07-10 09:30:00.")
    if ts.tzinfo is not None:
        raise UserError(
            f"{where}: `{value}` has a time zone; write local time without one (like fileCreateTime)."
        )
    return ts.to_pydatetime()


def _parse_subalias(where: str, raw: object) -> SubAlias:
    if not isinstance(raw, dict):
        raise UserError(
            f"{where}: a sub-alias must be a mapping with start_file/end_file or start_time/end_time."
        )
    unknown = [str(k) for k in raw if k not in SUBALIAS_KEYS]
    if unknown:  # a typo here would silently change which files are sorted
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; use {', '.join(SUBALIAS_KEYS)}.")
    has_files = [raw.get(k) is not None for k in ("start_file", "end_file")]
    has_times = [raw.get(k) is not None for k in ("start_time", "end_time")]
    if not (all(has_files) and not any(has_times)) and not (all(has_times) and not any(has_files)):
        raise UserError(
            f"{where}: give exactly one pair, start_file + end_file or start_time + end_time "
            f"(got {', '.join(k for k in SUBALIAS_KEYS if raw.get(k) is not None) or 'none'})."
        )
    if all(has_files):
        return SubAlias(start_file=str(raw["start_file"]), end_file=str(raw["end_file"]))
    start = _as_time(f"{where} key start_time", raw["start_time"])
    end = _as_time(f"{where} key end_time", raw["end_time"])
    if end <= start:
        raise UserError(f"{where}: end_time {end} is not after start_time {start}; swap or fix them.")
    return SubAlias(start_time=start, end_time=end)


def _parse_session(where: str, raw: object) -> Session:
    if not isinstance(raw, dict):
        raise UserError(
            f"{where}: a recording session must be a mapping with keys {', '.join(SESSION_KEYS)}."
        )
    _warn_unknown(where, raw, SESSION_KEYS)
    sid = str(_require(where, raw, "id", "the session id"))
    ap = Path(str(_require(where, raw, "ap", "folder holding the gate folders"))).expanduser()
    lf = Path(str(_require(where, raw, "lf", "folder holding the gate folders"))).expanduser()
    sync = str(_require(where, raw, "imSyncType", " | ".join(SYNC_TYPES)))
    if sync not in SYNC_TYPES:
        raise UserError(f"{where} key imSyncType: `{sync}` is not one of {', '.join(SYNC_TYPES)}.")
    return Session(sid, ap, lf, sync)


def _parse_experiment(path: Path, name: str, raw: object, sessions: dict[str, Session]) -> Experiment:
    where = f"{path}: experiments.{name}"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: must be a mapping with `recording_session_ids` and `aliases`.")
    _warn_unknown(where, raw, ("recording_session_ids", "aliases"))
    ids = _require(where, raw, "recording_session_ids", "list of session ids")
    if not isinstance(ids, list):
        raise UserError(f"{where}.recording_session_ids: must be a list of session ids.")
    ids = [str(i) for i in ids]
    for sid in ids:
        if sid not in sessions:
            raise UserError(
                f"{where}.recording_session_ids: unknown session id `{sid}` "
                f"(recording_sessions: {', '.join(sessions) or 'none'}); add the session or fix the id."
            )
    if len(set(ids)) != len(ids):
        raise UserError(f"{where}.recording_session_ids: a session id is listed twice; list each once.")
    raw_aliases = _require(where, raw, "aliases", "mapping of alias name -> list of sub-aliases")
    if not isinstance(raw_aliases, dict):
        raise UserError(f"{where}.aliases: must be a mapping of alias name -> list of sub-aliases.")
    aliases: dict[str, list[SubAlias]] = {}
    for alias, subs in raw_aliases.items():
        alias_where = f"{where}.aliases.{alias}"
        if not isinstance(subs, list) or not subs:
            raise UserError(
                f"{alias_where}: must be a non-empty list of sub-aliases "
                "(`- start_file: ...` then `end_file: ...`, note the dash)."
            )
        aliases[str(alias)] = [_parse_subalias(f"{alias_where}[{i}]", s) for i, s in enumerate(subs)]
    return Experiment(str(name), ids, aliases, path)


def load_subject(subjects_dir: Path, name: str) -> Subject:
    """Read and validate `<subjects_dir>/<name>.yml` (or `.yaml`)."""
    path = subject_path(subjects_dir, name)
    try:
        raw = yaml.load(read_user_text(path), Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(
            f"{path}: malformed YAML{line}: {getattr(e, 'problem', None) or e}; fix it."
        ) from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping with `recording_sessions` and `experiments`.")
    _warn_unknown(str(path), raw, ("recording_sessions", "experiments"))
    raw_sessions = _require(str(path), raw, "recording_sessions", "list of sessions")
    if not isinstance(raw_sessions, list):
        raise UserError(f"{path}: recording_sessions must be a list (`- id: ...`).")
    sessions: dict[str, Session] = {}
    for i, s in enumerate(raw_sessions):
        session = _parse_session(f"{path}: recording_sessions[{i}]", s)
        if session.id in sessions:
            raise UserError(f"{path}: recording_sessions: session id `{session.id}` appears twice; keep one.")
        sessions[session.id] = session
    raw_experiments = raw.get("experiments") or {}
    if not isinstance(raw_experiments, dict):
        raise UserError(f"{path}: experiments must be a mapping of experiment name -> definition.")
    experiments = {str(k): _parse_experiment(path, str(k), v, sessions) for k, v in raw_experiments.items()}
    return Subject(path.stem, path, sessions, experiments)


def _probe_number(probe: pd.Series) -> pd.Series:
    # imec12 after imec2: sort on the number, not the string.
    return pd.to_numeric(probe.astype(str).str.extract(r"(\d+)$")[0], errors="coerce")


def order_files(files: pd.DataFrame, session_ids: Sequence[str]) -> pd.DataFrame:
    """Sessions in the experiment's order; runs by first fileCreateTime (ties by name); gate, trigger."""
    session_ids = [str(s) for s in session_ids]
    unknown = sorted(set(files["session"].astype(str)) - set(session_ids))
    if unknown:
        raise ValueError(f"files of sessions {unknown} not in the given session ids {session_ids}")
    keys = pd.DataFrame(
        {
            "session": files["session"].astype(str).map({s: i for i, s in enumerate(session_ids)}),
            "first": files.groupby(["session", "run"])["fileCreateTime"].transform("min"),
            "run": files["run"].astype(str),
            "gate": files["gate"].astype(int),
            "trigger": files["trigger"].astype(int),
            "probe": _probe_number(files["probe"]),
            "probe_name": files["probe"].astype(str),
            "stream": files["stream"].astype(str),
        },
        index=files.index,
    )
    order = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
    return files.loc[order].reset_index(drop=True)


def file_stems(files: pd.DataFrame) -> pd.Series:
    """`<run>_g<G>_t<T>`, the name the subject files use for a trigger file."""
    return files["run"].astype(str) + "_g" + files["gate"].astype(str) + "_t" + files["trigger"].astype(str)


def _stem_position(where: str, stems: pd.Series, stem: str, key: str) -> int:
    stem = re.sub(r"\.imec\d+.*$", "", stem)  # accept a full file name too
    hits = np.flatnonzero(stems.to_numpy() == stem)
    if len(hits) == 1:
        return int(hits[0])
    if len(hits) > 1:
        raise UserError(
            f"{where} key {key}: `{stem}` names {len(hits)} files (same run name in several sessions); "
            "use start_time/end_time instead."
        )
    raise UserError(
        f"{where} key {key}: no file `{stem}` among the {len(stems)} files of the experiment for this "
        "probe; use a `<run>_g<G>_t<T>` stem." + _did_you_mean(stem, list(stems))
    )


def select_alias(files: pd.DataFrame, experiment: Experiment, alias_name: str) -> pd.DataFrame:
    """The ordered union of the alias's sub-alias selections in `files` (one probe, one stream)."""
    subs = experiment.alias(alias_name)
    for col in ("probe", "stream"):
        if files[col].nunique() > 1:
            raise ValueError(
                f"select_alias takes the files of one probe and stream; got {col}s "
                f"{sorted(files[col].unique())}"
            )
    files = files[files["session"].astype(str).isin(experiment.recording_session_ids)]
    ordered = order_files(files, experiment.recording_session_ids)
    stems = file_stems(ordered)
    starts = ordered["fileCreateTime"]
    ends = starts + pd.to_timedelta(ordered["fileDuration"], unit="s")
    selected = np.zeros(len(ordered), dtype=bool)
    for i, sub in enumerate(subs):
        where = f"{experiment.subject_file}: experiments.{experiment.name}.aliases.{alias_name}[{i}]"
        if sub.start_file is not None:
            first = _stem_position(where, stems, sub.start_file, "start_file")
            last = _stem_position(where, stems, str(sub.end_file), "end_file")
            if first > last:
                raise UserError(
                    f"{where}: start_file `{sub.start_file}` comes after end_file `{sub.end_file}` "
                    "in file order; swap them."
                )
            mask = (np.arange(len(ordered)) >= first) & (np.arange(len(ordered)) <= last)
        else:
            # Overlap with a positive length: a file that ends exactly at start_time is not included.
            mask = ((starts < pd.Timestamp(sub.end_time)) & (ends > pd.Timestamp(sub.start_time))).to_numpy()
        if not mask.any():
            raise UserError(
                f"{where}: matches no file of this probe ({len(ordered)} files, "
                f"{_span(starts, ends)}); fix the sub-alias."
            )
        selected |= mask
    return ordered[selected].reset_index(drop=True)


def _span(starts: pd.Series, ends: pd.Series) -> str:
    if starts.notna().any():
        return f"spanning {starts.min()} to {ends.max()}"
    return "no creation times"
