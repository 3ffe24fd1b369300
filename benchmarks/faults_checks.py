"""Fault-injection harness, the checks: tree snapshots, the uninterrupted reference, and the invariants
checked after every run (a complete step equals the reference, user files untouched, no temporary file,
`.bak` kept)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.core.layout import SortingDir
from tasks.core.manifest import status
from tasks.finalize.finalize import finalize_state
from tasks.steps.postpro_stages import PostproSet, expected_stages, stage_outputs, stage_status, stages
from tasks.steps.registry import STEPS

# Records of a run, not its outputs: manifests, logs, progress, locks, the finalize journal (times, pids).
VOLATILE_DIR = ".pipeline"
# A view of those records (step times, states), rewritten around every step: not an output either.
REPORT = "report.html"
TMP_MARKS = (".wisc-tmp-", "-luigi-tmp-", ".wisc-move-")
RTOL, ATOL = 1e-3, 1e-6


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            h.update(chunk)
    return h.hexdigest()


def _is_bak(rel: str) -> bool:
    return any(part.endswith(".bak") for part in Path(rel).parts)


def walk_files(root: Path) -> list[str]:
    """Relative paths of every file and link under `root` (none when it does not exist)."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


def digest(path: Path) -> str:
    return f"link:{os.readlink(path)}" if path.is_symlink() else sha256(path)


def snapshot(root: Path) -> dict[str, str]:
    """rel -> sha256 (or link target) of the outputs under `root`; records (.pipeline/, report.html) and
    backups left out."""
    return {
        rel: digest(root / rel)
        for rel in walk_files(root)
        if not rel.startswith(VOLATILE_DIR + "/") and rel != REPORT and not _is_bak(rel)
    }


def bak_files(root: Path) -> dict[str, str]:
    """rel -> sha256 of every file inside a `<folder>.bak/` of `root`."""
    return {rel: digest(root / rel) for rel in walk_files(root) if _is_bak(rel)}


def temp_files(*roots: Path) -> list[str]:
    """Temporary files under `roots` outside backups (a backup keeps whatever partial files it was given)."""
    found = [r / rel for r in roots for rel in walk_files(r) if not _is_bak(rel)]
    return [str(path) for path in found if any(mark in path.name for mark in TMP_MARKS)]


def well_formed(path: Path, ref: Path) -> str:
    """'' when `path` is complete and of the reference's kind (an array of its dtype and rank, a table with
    its columns, JSON with its keys, a PNG, a non-empty file), whatever its values; else what is wrong."""
    try:
        if path.suffix == ".npy":
            a, b = np.load(path, allow_pickle=True), np.load(ref, allow_pickle=True)  # properties: objects
            same = (a.dtype, a.ndim) == (b.dtype, b.ndim)
            return "" if same else f"array kind differs ({a.dtype}, {a.ndim})"
        if path.suffix in (".csv", ".tsv"):
            import pandas as pd

            sep = "\t" if path.suffix == ".tsv" else ","
            same = list(pd.read_csv(path, sep=sep).columns) == list(pd.read_csv(ref, sep=sep).columns)
            return "" if same else "table columns differ"
        if path.suffix == ".json":
            a, b = json.loads(path.read_text()), json.loads(ref.read_text())
            return "" if not isinstance(b, dict) or a.keys() == b.keys() else "json keys differ"
        if path.suffix == ".png":
            _png_size(path)
        return "" if path.stat().st_size > 0 or ref.stat().st_size == 0 else "empty"
    except (OSError, ValueError) as err:
        return f"unreadable: {err}"


def close_enough(path: Path, ref: Path) -> str:
    """'' when `path` equals `ref` within tolerance (arrays and tables: rtol 1e-3; PNGs: same size in
    pixels; JSON: the same keys and values, numbers within tolerance); else what differs."""
    suffix = path.suffix
    try:
        if suffix == ".npy":
            a, b = np.load(path, allow_pickle=False), np.load(ref, allow_pickle=False)
            return "" if _arrays_close(a, b) else f"array differs ({a.shape} vs {b.shape})"
        if suffix in (".csv", ".tsv"):
            import pandas as pd

            sep = "\t" if suffix == ".tsv" else ","
            a, b = pd.read_csv(path, sep=sep), pd.read_csv(ref, sep=sep)
            if list(a.columns) != list(b.columns) or a.shape != b.shape:
                return "table shape differs"
            num = a.select_dtypes("number").columns
            same = a.drop(columns=num).equals(b.drop(columns=num))
            close = np.allclose(a[num].to_numpy(float), b[num].to_numpy(float), RTOL, ATOL, equal_nan=True)
            return "" if same and close else "table values differ"
        if suffix == ".png":
            return "" if _png_size(path) == _png_size(ref) else "image size differs"
        if suffix == ".json":
            return (
                ""
                if _json_close(json.loads(path.read_text()), json.loads(ref.read_text()))
                else "json differs"
            )
    except (OSError, ValueError) as err:
        return f"unreadable: {err}"
    return "bytes differ"


def _arrays_close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal within tolerance, field by field for structured arrays (peaks, spikes)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.names:
        return all(_arrays_close(a[name], b[name]) for name in a.dtype.names)
    if a.dtype.kind in "fc":
        return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))
    if a.dtype.kind in "biu":
        return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL))
    return bool(np.array_equal(a, b))


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _json_close(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return bool(np.isclose(a, b, RTOL, ATOL, equal_nan=True))
    return a == b


@dataclass
class Reference:
    """What uninterrupted runs leave: the sorting before finalize and the finalized tree, as copies kept in
    `folder`. A file must equal its reference byte for byte; where it does not, it must be equal within
    tolerance, and it is named in `tolerated` (`varying`: files two uninterrupted runs left different)."""

    folder: Path
    trees: dict[str, dict[str, str]] = field(default_factory=dict)  # "before" / "final" -> snapshot
    varying: set[str] = field(default_factory=set)
    tolerated: set[str] = field(default_factory=set)
    # Outputs of a sorter that two uninterrupted runs do not reproduce bit for bit, and what is computed
    # from them: where not byte-equal, checked complete and well formed (`loose`), not equal in value.
    loose_prefixes: tuple[str, ...] = ()
    loose: set[str] = field(default_factory=set)

    def compare(self, root: Path, rels: list[str], whole_tree: bool = False) -> list[str]:
        """Each file of `root` named in `rels` must equal its reference before or after finalize.
        whole_tree: `rels` is the reference's tree, where a sort's own files (unit plots) may be absent."""
        problems = []
        for rel in rels:
            path = root / rel
            if not (path.exists() or path.is_symlink()):
                if whole_tree and rel.startswith(self.loose_prefixes):
                    self.loose.add(rel)  # the reference's sort found a unit this round's did not
                    continue
                problems.append(f"{path}: missing")
                continue
            known = [stage for stage, tree in self.trees.items() if rel in tree]
            if not known and rel.startswith(self.loose_prefixes) and path.stat().st_size > 0:
                self.loose.add(rel)  # a re-sort found other units: a per-unit file the reference lacks
                continue
            if not known:
                problems.append(f"{path}: not in the reference run")
                continue
            if any(self.trees[stage][rel] == digest(path) for stage in known):
                continue
            reasons = [close_enough(path, self.folder / stage / rel) for stage in known]
            if "" in reasons:
                self.tolerated.add(rel)
                continue
            if rel.startswith(self.loose_prefixes):
                reasons = [well_formed(path, self.folder / stage / rel) for stage in known]
                if "" in reasons:
                    self.loose.add(rel)
                    continue
            problems.append(f"{path}: differs from the uninterrupted run beyond tolerance ({reasons[0]})")
        return problems


def step_files(sorting: SortingDir, step: str) -> list[str]:
    """The files a registered step owns now, relative to the sorting: its outputs, and its folder's files."""
    spec = STEPS[step]
    rels = {rel for rel in spec.outputs}
    if spec.owns_folder:
        for rel in walk_files(sorting.path(spec.owns_folder)):
            if Path(rel).parts[0] not in spec.not_owned:
                rels.add(f"{spec.owns_folder}/{rel}")
    return sorted(rels)


def stage_files(pset: PostproSet, stage: str) -> list[str]:
    rels = []
    for out in stage_outputs(stage):
        path = pset.folder / out
        inside = [f"{out}/{r}" for r in walk_files(path)] if path.is_dir() else [out]
        rels += [f"{pset.name}/{r}" for r in inside]
    return rels


def complete_outputs(sorting: SortingDir, postpro: str) -> dict[str, list[str]]:
    """step or `postpro:<stage>` -> files, for every step and stage whose manifest says it is complete now."""
    done: dict[str, list[str]] = {}
    if not (sorting.opts.is_file() and sorting.segments.is_file()):
        return done
    for step in STEPS:
        if status(sorting, step) == "done":
            done[step] = step_files(sorting, step)
    pset = PostproSet(sorting, postpro)
    if pset.opts.is_file() and (sorting.sorter_output / "spike_clusters.npy").is_file():
        exp = expected_stages(pset)
        for stage in stages(pset.load_options()):
            if stage_status(pset, stage, exp[stage]) == "done":
                done[f"postpro:{stage}"] = stage_files(pset, stage)
    return done


@dataclass
class Watch:
    """The invariants checked after every run of the harness, with what earlier checks saw."""

    source: SortingDir
    destination: SortingDir
    postpro: str
    reference: Reference
    raw: dict[str, str]  # raw data and inputs: path -> sha256
    curation: dict[str, str] = field(default_factory=dict)  # rel -> sha256, once the harness curated
    baks: dict[str, str] = field(default_factory=dict)  # rel -> sha256 of every backup file seen

    def check(self, completed: bool) -> list[str]:
        problems = [f"{p}: raw data or inputs changed" for p, h in self.raw.items() if sha256(Path(p)) != h]
        roots = [self.source.root, self.destination.root]
        for rel, value in self.curation.items():
            if not any((r / rel).is_file() and sha256(r / rel) == value for r in roots):
                problems.append(f"curation file {rel}: changed or lost")
        for sorting in (self.source, self.destination):
            for _, rels in complete_outputs(sorting, self.postpro).items():
                problems += self.reference.compare(sorting.root, rels)
        if finalize_state(self.destination.root) == "finalized":
            final = snapshot(self.destination.root)
            extra = sorted(set(final) - set(self.reference.trees["final"]))
            extra = [rel for rel in extra if not rel.startswith(self.reference.loose_prefixes)]
            problems += [f"{self.destination.root / rel}: not in the finalized reference" for rel in extra]
            final_rels = sorted(self.reference.trees["final"])
            problems += self.reference.compare(self.destination.root, final_rels, whole_tree=True)
        for rel, value in self.baks.items():
            if not any((r / rel).is_file() and sha256(r / rel) == value for r in roots):
                problems.append(f"backup {rel}: lost or changed")
        for root in roots:
            self.baks.update(bak_files(root))
        if completed:
            problems += [f"{p}: temporary file left by a completed run" for p in temp_files(*roots)]
        return problems
