"""Postprocessing stages and signatures: analyzer -> one stage per extension -> metrics -> table -> plots.

A postprocessing set is `<sorting>/<NAME>/` (NAME: the options file's stem) with its own copy of the options
(`postpro_opts.yaml`) and of the hypnogram it used (`hypnogram.htsv`). Each stage has a manifest
`.pipeline/postpro.<NAME>.<stage>.json`. A stage's signature hashes the option keys it reads and its
upstream signatures, computed from files in the sorting directory alone (like tasks/steps.py): the sort's
signature feeds the analyzer; phy's curation files feed only the table (metrics.csv's group column); the
hypnogram feeds only the per-state metrics.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.core import atomic
from tasks.core.layout import SortingDir, plain_name
from tasks.core.manifest import finished_record, read_manifest
from tasks.options.postpro import EXTENSIONS, QUALITY_METRICS, state_metric_names
from tasks.phy.curation import curation_hash
from tasks.steps.registry import Expected, digest, expected, load_inputs

OPTS_FILE = "postpro_opts.yaml"
HYPNOGRAM_FILE = "hypnogram.htsv"
ANALYZER_DIR = "analyzer"
METRICS_CSV = "metrics.csv"
QM_CSV = "quality_metrics.csv"
STATES_CSV = "metrics_by_state.csv"
PLOTS_DIR = "summary_plots"
# Bump when a stage's computation changes meaning.
STAGE_CODE_VERSION = {"analyzer": 1, "extension": 1, "metrics": 1, "states": 1, "table": 1, "plots": 1}


@dataclass(frozen=True)
class PostproSet:
    sorting: SortingDir
    name: str

    def __post_init__(self) -> None:
        plain_name(self.name, "postprocessing set")  # `--postpro ../x` must not leave the sorting

    @property
    def folder(self) -> Path:
        return self.sorting.root / self.name

    @property
    def opts(self) -> Path:
        return self.folder / OPTS_FILE

    @property
    def hypnogram(self) -> Path:
        return self.folder / HYPNOGRAM_FILE

    @property
    def analyzer(self) -> Path:
        return self.folder / ANALYZER_DIR

    def manifest(self, stage: str) -> Path:
        return self.sorting.manifest(f"{self.step}.{stage}")

    @property
    def step(self) -> str:
        """The step program's name for this set: `python -m containers postpro.<NAME> <sorting_dir>`."""
        return f"postpro.{self.name}"

    def load_options(self) -> dict:
        return yaml.safe_load(self.opts.read_text()) or {}


def stage_outputs(stage: str) -> tuple[str, ...]:
    """Paths (relative to the set's folder) a stage leaves; folders count as present when they exist."""
    if stage == "analyzer":
        return (f"{ANALYZER_DIR}/extensions/templates", f"{ANALYZER_DIR}/extensions/noise_levels")
    if stage in EXTENSIONS:
        return (f"{ANALYZER_DIR}/extensions/{stage}",)
    return {
        "metrics": (f"{ANALYZER_DIR}/extensions/quality_metrics", QM_CSV),
        "states": (STATES_CSV,),
        "table": (METRICS_CSV,),
        "plots": (PLOTS_DIR,),
    }[stage]


def stages(opts: dict) -> list[str]:
    """The stages of a set, in run order."""
    names = ["analyzer", *(opts.get("extensions") or {}), "metrics"]
    if opts.get("by_hypnogram_state"):
        names.append("states")
    names.append("table")
    if (opts.get("plots") or {}).get("enabled", True):
        names.append("plots")
    return names


def _metric_extensions(metric_names: list[str]) -> list[str]:
    return sorted({ext for name in metric_names for ext in QUALITY_METRICS[name][2]})


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "<absent>"


def expected_stages(pset: PostproSet, environment: str = "") -> dict[str, Expected]:
    """Every stage's expected signature now, from the sorting's files alone."""
    opts = pset.load_options()
    sort_sig = expected(pset.sorting, "sort", environment).signature
    _, segments_sig = load_inputs(pset.sorting)
    out: dict[str, Expected] = {}

    def add(stage: str, kind: str, options: dict, upstream: dict[str, str]) -> None:
        payload = {"stage": stage, "code": STAGE_CODE_VERSION[kind], "options": options, "upstream": upstream}
        out[stage] = Expected(stage, digest({**payload, "environment": environment}), options, upstream)

    add("analyzer", "analyzer", opts["analyzer"], {"sort": sort_sig})
    for name, params in (opts.get("extensions") or {}).items():
        upstream = {"analyzer": out["analyzer"].signature}
        upstream.update({dep: out[dep].signature for dep in EXTENSIONS[name][1] if dep in out})
        add(name, "extension", params or {}, upstream)
    metrics = opts["quality_metrics"]
    metric_up = {"analyzer": out["analyzer"].signature}
    metric_up.update({ext: out[ext].signature for ext in _metric_extensions(metrics["metric_names"])})
    add("metrics", "metrics", metrics, metric_up)
    table_up = {"metrics": out["metrics"].signature}
    if opts.get("by_hypnogram_state"):
        names = state_metric_names(opts)
        state_up = {"analyzer": out["analyzer"].signature, "segments": segments_sig}
        state_up.update({ext: out[ext].signature for ext in _metric_extensions(names)})
        state_up["hypnogram"] = _file_hash(pset.hypnogram)
        state_opts = {**opts["by_hypnogram_state"], "metric_params": metrics.get("metric_params") or {}}
        state_opts["amplitude_cutoff_from_sorter"] = metrics.get("amplitude_cutoff_from_sorter", True)
        add("states", "states", state_opts, state_up)
        table_up["states"] = out["states"].signature
    table_up["curation"] = curation_hash(pset.sorting.sorter_output)
    add("table", "table", opts.get("curation") or {}, table_up)
    if "plots" in stages(opts):
        plot_up = {"table": out["table"].signature}
        plot_up.update(
            {ext: out[ext].signature for ext in ("spike_amplitudes", "unit_locations") if ext in out}
        )
        add("plots", "plots", opts.get("plots") or {}, plot_up)
    return out


def read_stage_manifest(pset: PostproSet, stage: str) -> dict | None:
    return read_manifest(pset.sorting, f"{pset.step}.{stage}")


def write_stage_manifest(pset: PostproSet, exp: Expected, started: str, extra: dict | None = None) -> None:
    """Record a finished stage: call after its outputs are in place (manifest last)."""
    record = finished_record(exp, list(stage_outputs(exp.step)), started, extra)
    files = stage_files(pset, exp.step)
    atomic.write_json(
        pset.manifest(exp.step), {"step": pset.step, "stage": exp.step, **record, "files": files}
    )


def stage_files(pset: PostproSet, stage: str) -> dict[str, int]:
    """Every file a stage's outputs hold (in its folders too), with its size: a truncated one shows."""
    files: dict[str, int] = {}
    for rel in stage_outputs(stage):
        path = pset.folder / rel
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for item in found:
            files[item.relative_to(pset.folder).as_posix()] = item.stat().st_size
    return files


def _files_intact(pset: PostproSet, recorded: object) -> bool:
    """The sizes a stage's manifest recorded still hold (manifests made before they were recorded: yes)."""
    if not isinstance(recorded, dict):
        return True
    for rel, size in recorded.items():
        path = pset.folder / rel
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def stage_status(pset: PostproSet, stage: str, exp: Expected) -> str:
    """'done', 'stale', 'partial' or 'missing' for one stage."""
    manifest = read_stage_manifest(pset, stage)
    present = [(pset.folder / rel).exists() for rel in stage_outputs(stage)]
    if manifest is None:
        return "partial" if any(present) else "missing"
    if not all(present) or not _files_intact(pset, manifest.get("files")):
        return "partial"
    return "done" if manifest.get("signature") == exp.signature else "stale"
