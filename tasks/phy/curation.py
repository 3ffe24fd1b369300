"""The curation gate: is every unit of a sort labelled in phy (cluster_group.tsv / cluster_info.tsv)?"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.core.errors import UserError

GROUP_FILE = "cluster_group.tsv"
INFO_FILE = "cluster_info.tsv"
SHOWN_IDS = 20


@dataclass
class CurationState:
    n_units: int
    uncurated: list[int]
    problem: str | None
    groups: dict[int, str] = field(default_factory=dict, repr=False)  # phy's label per unit id

    @property
    def complete(self) -> bool:
        return self.problem is None and not self.uncurated


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a phy tsv (the csv module: `wisc-sort status` reads hundreds of them)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: not a phy table ({err}); save the curation again in phy") from None
    if not rows:
        raise UserError(f"{path}: empty; save the curation again in phy")
    return rows[0], rows[1:]


def _read_labels(path: Path, with_unlabelled: bool = False) -> dict[int, str]:
    """cluster_id -> group from a phy tsv (`group` column; older files: the one column after cluster_id).
    with_unlabelled: every listed cluster, "" where it has no group."""
    header, rows = _read_table(path)
    id_col = "cluster_id" if "cluster_id" in header else ("id" if "id" in header else None)
    if id_col is None:
        raise UserError(f"{path}: no cluster_id column; save the curation again in phy")
    group_col = "group" if "group" in header else None
    if group_col is None and path.name == GROUP_FILE and len(header) == 2:
        group_col = header[1]  # very old phy wrote `KSLabel`-like headers here
    id_index = header.index(id_col)
    group_index = header.index(group_col) if group_col is not None else None
    labels = {}
    for row, fields in enumerate(rows, start=2):
        if not fields:
            continue
        if len(fields) != len(header):
            raise UserError(f"{path}: line {row}: {len(fields)} fields, the header has {len(header)}")
        try:
            unit = int(fields[id_index])
        except ValueError:
            raise UserError(
                f"{path}: line {row}: cluster_id {fields[id_index]!r} is not an integer"
            ) from None
        group = fields[group_index].strip() if group_index is not None else ""
        if group and group.lower() != "nan":
            labels[unit] = group
        elif with_unlabelled:
            labels[unit] = ""
    return labels


def unit_ids(sorter_output: Path) -> np.ndarray | None:
    """The sort's units: the cluster ids that own spikes (phy rewrites spike_clusters.npy on merges)."""
    path = Path(sorter_output) / "spike_clusters.npy"
    if not path.is_file() or path.stat().st_size == 0:
        return None
    clusters = np.load(path, mmap_mode="r")
    return np.unique(np.asarray(clusters).ravel())


def curation_state(sorter_output: Path, quick: bool = False) -> CurationState:
    """Which units lack a phy group. A missing cluster_info.tsv means phy never saved this sorting.

    quick (`wisc-sort status`): the units are the clusters phy listed in cluster_info.tsv, instead of the
    unique ids of spike_clusters.npy (hundreds of MB for a day of recording). The gate never uses it.
    """
    sorter_output = Path(sorter_output)
    info = sorter_output / INFO_FILE
    if quick and info.is_file() and (sorter_output / "spike_clusters.npy").is_file():
        listed = _read_labels(info, with_unlabelled=True)
        units = np.array(sorted(listed), dtype=np.int64)
    else:
        units = unit_ids(sorter_output)
    if units is None:
        return CurationState(0, [], "no sort output")
    labels: dict[int, str] = {}
    problem = None
    if info.is_file():
        labels.update(_read_labels(info))
    else:
        problem = f"{INFO_FILE} missing"
    if (sorter_output / GROUP_FILE).is_file():
        labels.update(_read_labels(sorter_output / GROUP_FILE))  # phy's own curation file wins
    uncurated = [int(u) for u in units if int(u) not in labels]
    groups = {int(u): labels[int(u)] for u in units if int(u) in labels}
    return CurationState(int(units.size), uncurated, problem, groups)


def curation_hash(sorter_output: Path) -> str:
    """Content hash of phy's curation files (the group column of metrics.csv depends on them)."""
    digest = hashlib.sha256()
    for name in (GROUP_FILE, INFO_FILE):
        path = Path(sorter_output) / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"<absent>"))
    return digest.hexdigest()[:16]


def describe(state: CurationState, sorter_output: Path) -> str:
    """One line: what is missing and where to curate."""
    parts = []
    if state.problem:
        parts.append(
            state.problem + (" (phy never saved this sorting)" if INFO_FILE in state.problem else "")
        )
    if state.uncurated:
        shown = ", ".join(str(u) for u in state.uncurated[:SHOWN_IDS])
        more = f", ... ({len(state.uncurated)} in all)" if len(state.uncurated) > SHOWN_IDS else ""
        parts.append(f"{len(state.uncurated)} of {state.n_units} units lack a group: {shown}{more}")
    return (
        f"{sorter_output}: curation incomplete: {'; '.join(parts)}; curate with "
        f"`phy template-gui {Path(sorter_output) / 'params.py'}` and save, or pass --allow-uncurated"
    )


def require_curated(sorter_output: Path, allow_uncurated: bool = False) -> CurationState:
    """The gate before postprocessing: UserError (one line) unless every unit has a group, or allowed."""
    state = curation_state(sorter_output)
    if state.problem == "no sort output":
        raise UserError(f"{sorter_output}: no sort output (spike_clusters.npy); run `wisc-sort sort` first")
    if not state.complete and not allow_uncurated:
        raise UserError(describe(state, sorter_output))
    return state
