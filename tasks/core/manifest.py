"""Step manifests (`.pipeline/<step>.json`): the only proof that a step's outputs are complete and current."""

from __future__ import annotations

import json
import os
import platform
import shutil
from datetime import datetime
from importlib import metadata
from pathlib import Path

import yaml

from tasks.core import atomic
from tasks.core.layout import SortingDir
from tasks.steps.registry import STEPS, Expected, expected

VERSIONED_PACKAGES = ("wisc-sorting", "spikeinterface", "probeinterface", "neo", "numpy", "numba", "torch")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def read_manifest(sorting: SortingDir, step: str) -> dict | None:
    path = sorting.manifest(step)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):  # not JSON, not UTF-8: a damaged manifest proves nothing
        return None
    return data if isinstance(data, dict) else None


def finished_record(exp: Expected, outputs: object, started: str, extra: dict | None = None) -> dict:
    """What every manifest says about a finished run: signature, options, upstream, environment, outputs,
    versions, host, times (postprocessing stages use it too)."""
    return {
        "signature": exp.signature,
        "options": exp.options,
        "upstream": exp.upstream,
        "environment": exp.environment,
        "outputs": outputs,
        "versions": package_versions(),
        "host": platform.node(),
        "pid": os.getpid(),
        "started": started,
        "finished": now(),
        **(extra or {}),
    }


def write_manifest(
    sorting: SortingDir,
    exp: Expected,
    started: str,
    extra: dict | None = None,
) -> dict:
    """Record a finished step. Call only after every output was renamed into place: manifest last."""
    outputs = {rel: {"size": sorting.path(rel).stat().st_size} for rel in STEPS[exp.step].outputs}
    manifest = {"step": exp.step, **finished_record(exp, outputs, started, extra)}
    atomic.write_json(sorting.manifest(exp.step), manifest)
    return manifest


def status(sorting: SortingDir, step: str, environment: str | None = None) -> str:
    """'done', 'stale' (made from other options or upstream), 'partial' or 'missing'.

    environment: what the executor pins (an image id); None accepts the one the manifest recorded."""
    manifest = read_manifest(sorting, step)
    outputs = [sorting.path(rel) for rel in STEPS[step].outputs]
    if manifest is None:
        return "partial" if any(p.exists() for p in outputs) else "missing"
    for path in outputs:
        recorded = manifest.get("outputs", {}).get(str(path.relative_to(sorting.root)), {})
        if not path.exists() or path.stat().st_size != recorded.get("size"):
            return "partial"
    if environment is None:
        environment = str(manifest.get("environment", ""))
    if manifest.get("signature") != expected(sorting, step, environment).signature:
        return "stale"
    return "done"


def describe_partial(sorting: SortingDir, step: str) -> str:
    """What an interrupted run or a damaged output left: which outputs are missing, empty or not the size
    the manifest recorded (for a one-line warning)."""
    recorded = (read_manifest(sorting, step) or {}).get("outputs", {})
    problems = []
    for rel in STEPS[step].outputs:
        path = sorting.path(rel)
        size = recorded.get(rel, {}).get("size") if isinstance(recorded, dict) else None
        if not path.exists():
            problems.append(f"{path.name} missing")
        elif path.stat().st_size == 0:
            problems.append(f"{path.name} empty")
        elif size is not None and path.stat().st_size != size:
            problems.append(f"{path.name} is {path.stat().st_size:,} bytes, its manifest says {size:,}")
    if not problems and sorting.manifest(step).exists() and not recorded:
        return "its manifest is damaged: not a JSON object"
    return ", ".join(problems) or "no manifest (the run did not finish)"


def is_complete(sorting: SortingDir, step: str, environment: str | None = None) -> bool:
    return (
        sorting.opts.exists() and sorting.segments.exists() and status(sorting, step, environment) == "done"
    )


def _backup_root(sorting: SortingDir, rel: str) -> Path:
    top = Path(rel).parts[0]
    return sorting.root / (f"{top}.bak" if len(Path(rel).parts) > 1 else "superseded.bak")


def _owned_paths(sorting: SortingDir, step: str) -> list[Path]:
    """Existing paths the step owns: its declared outputs, plus the other files of a folder it owns."""
    spec = STEPS[step]
    paths = [sorting.path(rel) for rel in spec.outputs if sorting.path(rel).exists()]
    if spec.owns_folder and sorting.path(spec.owns_folder).is_dir():
        paths += [
            entry
            for entry in sorting.path(spec.owns_folder).iterdir()
            if entry.name not in spec.not_owned and entry not in paths
        ]
    return paths


def supersede(sorting: SortingDir, step: str, stamp: str | None = None) -> Path | None:
    """Move a step's existing outputs and manifest to `<folder>.bak/<timestamp>/`, with the options that
    made them, so that nothing is lost when the step reruns. Returns the backup folder, if any."""
    stamp = stamp or atomic.backup_stamp()
    present = _owned_paths(sorting, step)
    manifest_path = sorting.manifest(step)
    if not present and not manifest_path.exists():
        return None
    backup = _backup_root(sorting, STEPS[step].outputs[0]) / stamp
    backup.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(sorting, step)
    if manifest_path.exists():  # first: the step stops counting as complete before its outputs move
        shutil.move(manifest_path, backup / f"{step}.manifest.json")
    for path in present:
        shutil.move(path, backup / path.name)
    made_from = manifest.get("options") if manifest else "unknown: no manifest (interrupted run)"
    (backup / f"{step}.options.yaml").write_text(
        yaml.safe_dump({"step": step, "options": made_from}, sort_keys=False)
    )
    return backup
