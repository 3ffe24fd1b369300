"""The step registry: what each step reads from the options, what it needs upstream, what it writes.

A step's signature hashes the option keys it reads plus its upstream signatures, all computed from
`opts.yaml` and `segments.htsv` alone (never from upstream manifests), so a stale upstream makes every
downstream step stale even when Luigi never visits the upstream task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from tasks.core.layout import SortingDir

# Bump when a step's computation changes meaning, to invalidate outputs made by older code.
STEP_CODE_VERSION = {
    "peaks": 1,
    "peak_locations": 1,
    "motion": 1,
    "motion_clean": 1,
    "motion_plot": 1,
    "preprocessed_probe": 1,
    "recording_dat": 1,
    "sort": 1,
}

Options = dict


def chain(opts: Options) -> list[dict]:
    return list(opts.get("preprocessing") or [])


def split_chain(opts: Options) -> tuple[list[dict], dict | None, list[dict]]:
    """(steps before drift correction, drift_correction params or None, steps after)."""
    steps = chain(opts)
    for i, step in enumerate(steps):
        if step.get("step_name") == "drift_correction":
            return steps[:i], dict(step.get("step_params") or {}), steps[i + 1 :]
    return steps, None, []


def has_motion(opts: Options) -> bool:
    return split_chain(opts)[1] is not None


def _drift(opts: Options, *keys: str) -> dict:
    params = split_chain(opts)[1] or {}
    return {"preset": params.get("preset"), **{k: params.get(k) for k in keys}}


@dataclass(frozen=True)
class Step:
    name: str
    outputs: tuple[str, ...]
    upstream: Callable[[Options], tuple[str, ...]]
    options: Callable[[Options], dict] = field(default=lambda opts: {})
    description: str = ""
    # A folder the step owns as a whole (superseded together), minus files other steps own.
    owns_folder: str | None = None
    not_owned: tuple[str, ...] = ()


SORT_OUTPUTS = (
    "si_output/sorter_output/params.py",
    "si_output/sorter_output/spike_times.npy",
    "si_output/sorter_output/spike_clusters.npy",
)
# phy writes these by hand-curation: manual work, never moved or overwritten without an explicit flag.
CURATION_FILES = ("cluster_group.tsv", "cluster_info.tsv", "phy.log", ".phy")


def _probe_upstream(opts: Options) -> tuple[str, ...]:
    return ("motion_clean",) if has_motion(opts) else ("segments",)


STEPS: dict[str, Step] = {
    s.name: s
    for s in [
        Step(
            "peaks",
            ("preprocessing/peaks.npy",),
            lambda o: ("segments",),
            lambda o: {"chain_before_motion": split_chain(o)[0], **_drift(o, "detect_kwargs")},
            "detect peaks on the preprocessed recording",
        ),
        Step(
            "peak_locations",
            ("preprocessing/peak_locations.npy",),
            lambda o: ("peaks",),
            lambda o: _drift(o, "localize_peaks_kwargs"),
            "localize peaks",
        ),
        Step(
            "motion",
            ("preprocessing/motion_non_rigid.npz",),
            lambda o: ("peak_locations",),
            lambda o: _drift(o, "estimate_motion_kwargs"),
            "estimate motion",
        ),
        Step(
            "motion_clean",
            ("preprocessing/motion_non_rigid_clean.npz",),
            lambda o: ("motion",),
            lambda o: {"clean_motion_kwargs": (split_chain(o)[1] or {}).get("clean_motion_kwargs")},
            "clean motion",
        ),
        Step(
            "motion_plot",
            ("preprocessing/motion_summary.png",),
            lambda o: ("peak_locations", "motion_clean"),
            lambda o: {},
            "plot motion summary",
        ),
        Step(
            "preprocessed_probe",
            ("preprocessed_si_probe.json",),
            _probe_upstream,
            lambda o: {
                "chain_before_motion": split_chain(o)[0],
                "interpolate_motion_kwargs": (split_chain(o)[1] or {}).get("interpolate_motion_kwargs"),
                "chain_after_motion": split_chain(o)[2],
            },
            "preprocessed probe",
        ),
        Step(
            "recording_dat",
            ("si_output/sorter_output/recording.dat",),
            lambda o: ("preprocessed_probe",),
            lambda o: {},  # the chain is already in preprocessed_probe's signature
            "write recording.dat",
        ),
        Step(
            "sort",
            SORT_OUTPUTS,
            lambda o: ("recording_dat",),
            lambda o: {"sorting": o.get("sorting")},
            "sort",
            owns_folder="si_output/sorter_output",
            not_owned=("recording.dat",) + CURATION_FILES,
        ),
    ]
}

PREPRO_STEPS = ("peaks", "peak_locations", "motion", "motion_clean", "motion_plot", "preprocessed_probe")
MOTION_STEPS = PREPRO_STEPS[:-1]


def prepro_steps(opts: Options) -> tuple[str, ...]:
    return PREPRO_STEPS if has_motion(opts) else ("preprocessed_probe",)


def digest(obj: object) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# libyaml's loader when built in: 10x faster on an options file (`wisc-sort status` reads hundreds).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@lru_cache(maxsize=64)
def _parse_options(text: str) -> Options:
    """Most sortings carry the same options text (a lab default): parse each distinct text once."""
    return yaml.load(text, Loader=_SAFE_LOADER) or {}


@lru_cache(maxsize=256)
def _read_inputs(opts_path: Path, opts_stamp: tuple, segments_path: Path, segments_stamp: tuple):
    opts = _parse_options(opts_path.read_text())
    segments_sig = hashlib.sha256(segments_path.read_bytes()).hexdigest()[:16]
    return opts, segments_sig


def load_inputs(sorting: SortingDir) -> tuple[Options, str]:
    """opts.yaml as a dict and the segment table's signature; cached on (mtime, size) so that
    Luigi's many complete() calls stay cheap."""
    return _read_inputs(sorting.opts, _stamp(sorting.opts), sorting.segments, _stamp(sorting.segments))


@dataclass(frozen=True)
class Expected:
    """What a step's manifest must say for the step to be complete."""

    step: str
    signature: str
    options: dict
    upstream: dict[str, str]
    environment: str = ""


def expected(sorting: SortingDir, step: str, environment: str = "") -> Expected:
    """The signature a step must carry now, from opts.yaml and segments.htsv alone.

    `environment` (the docker executor's image id) joins the step's own signature, so a new image reruns
    every step it runs; upstream signatures leave it out, so outputs made in another environment still
    count as inputs to a step that accepts any environment (the local executor).
    Cached on the two files' (mtime, size), like `load_inputs`: treat the result as read-only.
    """
    inputs = (sorting.opts, _stamp(sorting.opts), sorting.segments, _stamp(sorting.segments))
    return _expected(inputs, step, environment)


@lru_cache(maxsize=4096)
def _expected(inputs: tuple, step: str, environment: str) -> Expected:
    opts, segments_sig = _read_inputs(*inputs)
    if step == "segments":
        return Expected("segments", segments_sig, {}, {})
    spec = STEPS[step]
    upstream = {u: _expected(inputs, u, "").signature for u in spec.upstream(opts)}
    subset = spec.options(opts)
    payload = {
        "step": step,
        "code": STEP_CODE_VERSION[step],
        "options": subset,
        "upstream": upstream,
        "environment": environment,
    }
    return Expected(step, digest(payload), subset, upstream, environment)
