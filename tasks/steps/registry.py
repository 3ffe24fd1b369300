"""The step registry: each step declared once (outputs, upstream, option keys, code version, image, module).

Everything else derives from a declaration: the Luigi task class (tasks/steps/pipeline.py), the status
columns, the step program's dispatch (`python -m containers <step>` imports `module` and calls `run(ctx)`),
the docker image. A step's signature hashes the option keys it reads plus its upstream signatures, all
computed from `opts.yaml` and `segments.htsv` alone (never from upstream manifests), so a stale upstream
makes every downstream step stale even when Luigi never visits the upstream task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module
from pathlib import Path

import yaml

from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.options.chain import options_chain

Options = dict
Phase = str  # "prepro" (before recording.dat; motion steps only with drift correction), "write", "sort"


@dataclass(frozen=True)
class Step:
    name: str
    outputs: tuple[str, ...]
    upstream: Callable[[Options], tuple[str, ...]]  # step names, or "segments" (the sorting's setup)
    options: Callable[[Options], dict] = field(default=lambda opts: {})  # the keys its signature covers
    description: str = ""
    code_version: int = 1  # bump when the computation changes meaning: older outputs become stale
    module: str = ""  # the step program's module, exposing run(ctx): containers.steps.<name> by default
    task: str = ""  # the Luigi task class name: CamelCase of the name by default
    kind: str = "cpu"  # Luigi base: "cpu" (n_jobs cpu units), "disk_write" (+1 disk_write), "gpu" (the sort)
    phase: Phase = "prepro"
    needs_motion: bool = False  # only when the chain has drift_correction
    engine: bool = False  # reads the chain through the engine: its device (and GPU units) from the host
    image: Callable[[Options], str] = field(default=lambda opts: "si")  # docker image kind
    # A folder the step owns as a whole (superseded together), minus files other steps own.
    owns_folder: str | None = None
    not_owned: tuple[str, ...] = ()
    when: Callable[[Options], bool] = field(default=lambda opts: True)  # which sortings call for it
    # Inputs its signature covers besides opts.yaml, segments.htsv and upstream steps (e.g. a postprocessing
    # set): "module:function" taking (SortingDir, opts), returning {name: signature}, computed from the
    # sorting's files alone. Named, not imported: those modules import this one.
    reads: str = ""

    @property
    def module_name(self) -> str:
        return self.module or f"containers.steps.{self.name}"

    @property
    def task_name(self) -> str:
        return self.task or "".join(part.title() for part in self.name.split("_"))

    def applies(self, opts: Options) -> bool:
        return (not self.needs_motion or options_chain(opts).has_motion) and self.when(opts)


SORT_OUTPUTS = (
    "si_output/sorter_output/params.py",
    "si_output/sorter_output/spike_times.npy",
    "si_output/sorter_output/spike_clusters.npy",
)
NWB_FILE = "nwb/sorting.nwb"
# phy writes these by hand-curation: manual work, never moved or overwritten without an explicit flag.
CURATION_FILES = ("cluster_group.tsv", "cluster_info.tsv", "phy.log", ".phy")


def _drift(*keys: str) -> Callable[[Options], dict]:
    def subset(opts: Options) -> dict:
        chain = options_chain(opts)
        return {"preset": (chain.drift or {}).get("preset"), **{k: chain.drift_kwargs(k) for k in keys}}

    return subset


def _engine(opts: Options) -> dict:
    """Who computes the chain, for the steps that read it. Absent from the options (made before the engine):
    nothing, so those sortings keep their signatures and their SpikeInterface path."""
    return {"engine": opts["engine"]} if "engine" in opts else {}


def _sort_image(opts: Options) -> str:
    """ks25 for a Kilosort 2.5 sort (MATLAB Runtime image), si for every other step."""
    return "ks25" if (opts.get("sorting") or {}).get("sorter_name") == "kilosort2_5" else "si"


STEPS: dict[str, Step] = {}


def register(step: Step) -> Step:
    """Add a step to the registry (the pipeline's own below; a test or a lab may add one)."""
    STEPS[step.name] = step
    return step


for _step in [
    Step(
        "peaks",
        ("preprocessing/peaks.npy",),
        lambda o: ("segments",),
        lambda o: {
            "chain_before_motion": options_chain(o).before,
            **_drift("detect_kwargs")(o),
            **_engine(o),
        },
        "detect peaks on the preprocessed recording",
        needs_motion=True,
        engine=True,
    ),
    Step(
        "peak_locations",
        ("preprocessing/peak_locations.npy",),
        lambda o: ("peaks",),
        lambda o: {**_drift("localize_peaks_kwargs")(o), **_engine(o)},
        "localize peaks",
        needs_motion=True,
        engine=True,
    ),
    Step(
        "motion",
        ("preprocessing/motion_non_rigid.npz",),
        lambda o: ("peak_locations",),
        _drift("estimate_motion_kwargs"),
        "estimate motion",
        needs_motion=True,
    ),
    Step(
        "motion_clean",
        ("preprocessing/motion_non_rigid_clean.npz",),
        lambda o: ("motion",),
        lambda o: {"clean_motion_kwargs": options_chain(o).drift_kwargs("clean_motion_kwargs")},
        "clean motion",
        needs_motion=True,
    ),
    Step(
        "motion_plot",
        ("preprocessing/motion_summary.png",),
        lambda o: ("peak_locations", "motion_clean"),
        description="plot motion summary",
        needs_motion=True,
    ),
    Step(
        "preprocessed_probe",
        ("preprocessed_si_probe.json",),
        lambda o: ("motion_clean",) if options_chain(o).has_motion else ("segments",),
        lambda o: {
            "chain_before_motion": options_chain(o).before,
            "interpolate_motion_kwargs": options_chain(o).drift_kwargs("interpolate_motion_kwargs"),
            "chain_after_motion": options_chain(o).after,
        },
        "preprocessed probe",
    ),
    Step(
        "recording_dat",
        ("si_output/sorter_output/recording.dat",),
        lambda o: ("preprocessed_probe",),
        _engine,  # the chain itself is in preprocessed_probe's signature
        "write recording.dat",
        kind="disk_write",
        phase="write",
        engine=True,
    ),
    Step(
        "sort",
        SORT_OUTPUTS,
        lambda o: ("recording_dat",),
        lambda o: {"sorting": o.get("sorting")},
        "sort",
        kind="gpu",
        phase="sort",
        image=_sort_image,
        owns_folder="si_output/sorter_output",
        not_owned=("recording.dat",) + CURATION_FILES,
    ),
    Step(
        "nwb",
        (NWB_FILE,),
        lambda o: ("sort", "preprocessed_probe", *(("motion_clean",) if options_chain(o).has_motion else ())),
        lambda o: {"nwb": o.get("nwb")},
        "export the sorting to NWB",
        task="Nwb",  # ExportNwb (tasks/steps/export.py) runs it after its postprocessing set
        phase="export",
        when=lambda o: bool((o.get("nwb") or {}).get("postpro")),
        reads="tasks.steps.nwb_inputs:postpro_inputs",
    ),
]:
    register(_step)


def load_plugin_steps() -> None:
    """Steps declared outside this file: entry points of group `wisc_sorting.steps`, each a Step."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP):
        if entry.name not in STEPS:
            register(entry.load())


PLUGIN_GROUP = "wisc_sorting.steps"
load_plugin_steps()

# Step families named `<family>.<NAME>` (one postprocessing set each), dispatched to one module.
FAMILIES = {"postpro": "containers.steps.postpro"}

PREPRO_STEPS = tuple(name for name, s in STEPS.items() if s.phase == "prepro")
MOTION_STEPS = tuple(name for name in PREPRO_STEPS if STEPS[name].needs_motion)


def prepro_steps(opts: Options) -> tuple[str, ...]:
    """The steps before recording.dat that these options call for (motion steps need drift correction)."""
    return tuple(name for name in PREPRO_STEPS if STEPS[name].applies(opts))


def pipeline_steps(opts: Options) -> tuple[str, ...]:
    """Every registered step these options call for, in registry order (status columns)."""
    return tuple(name for name, s in STEPS.items() if s.applies(opts))


def step_module(step: str) -> str:
    """The module a step program runs for `step` (a registered step or a `<family>.<NAME>`)."""
    family = step.split(".", 1)[0]
    if "." in step and family in FAMILIES:
        return FAMILIES[family]
    return STEPS[step].module_name


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


def _options_of(opts_path: Path) -> Options:
    """The sorting's opts.yaml as a mapping; broken by hand: one line naming the file, line and remedy."""
    try:
        opts = _parse_options(opts_path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(
            f"{opts_path}: malformed YAML{where} ({getattr(err, 'problem', None) or 'unparseable'}); fix the "
            "file (earlier copies are in opts.bak/ beside it, if it was ever replaced)"
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"{opts_path}: not UTF-8 text; fix the file or restore it from opts.bak/") from None
    if not isinstance(opts, dict):
        raise UserError(f"{opts_path}: holds a {type(opts).__name__}, not a mapping of options; fix the file")
    return opts


@lru_cache(maxsize=256)
def _read_inputs(opts_path: Path, opts_stamp: tuple, segments_path: Path, segments_stamp: tuple):
    opts = _options_of(opts_path)
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
    exp = _expected(inputs, step, environment)
    reads = STEPS[step].reads if step in STEPS else ""
    if not reads:
        return exp
    module, _, function = reads.partition(":")
    more = getattr(import_module(module), function)(sorting, _read_inputs(*inputs)[0])
    signature = digest({"signature": exp.signature, "reads": more})
    return Expected(step, signature, exp.options, {**exp.upstream, **more}, environment)


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
        "code": spec.code_version,
        "options": subset,
        "upstream": upstream,
        "environment": environment,
    }
    return Expected(step, digest(payload), subset, upstream, environment)
