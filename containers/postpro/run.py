"""The postprocessing step `postpro.<NAME>`: SortingAnalyzer, extensions, quality metrics (per state), table.

Runs every stale stage of one postprocessing set in one process (one SpikeInterface import, one analyzer
load), each stage recorded by its own manifest, in order: a stage whose signature is current is skipped.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from containers.runtime.progress import ProgressFile
from containers.runtime.trace import Trace
from tasks.core import atomic
from tasks.core.errors import UserError
from tasks.core.manifest import now
from tasks.inputs.hypnogram import read_hypnogram, state_frames
from tasks.inputs.segments import read_segments
from tasks.options.postpro import EXTENSIONS, metric_columns, state_metric_names
from tasks.phy.curation import curation_state
from tasks.steps.postpro_stages import (
    METRICS_CSV,
    QM_CSV,
    STATES_CSV,
    PostproSet,
    expected_stages,
    stage_outputs,
    stage_status,
    stages,
    write_stage_manifest,
)

BASE_EXTENSIONS = ("random_spikes", "waveforms", "templates", "noise_levels")


def _supersede(pset: PostproSet, stage: str, backup: Path) -> bool:
    """Move a stage's manifest (first) and outputs to `<NAME>.bak/<ts>/`; True when something moved."""
    moved = False
    if pset.manifest(stage).exists():
        backup.mkdir(parents=True, exist_ok=True)
        shutil.move(pset.manifest(stage), backup / f"{stage}.manifest.json")
        moved = True
    for rel in stage_outputs(stage):
        path = pset.folder / rel
        if path.exists():
            dest = backup / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, dest)
            moved = True
    return moved


def load_sorting(sorter_output: Path):
    """The sort with phy's edits (merges, splits), empty clusters dropped (they break the analyzer)."""
    from spikeinterface.extractors import read_phy

    sorting = read_phy(sorter_output, load_all_cluster_properties=False)
    # With cluster_si_unit_ids.tsv (SpikeInterface's phy export) read_phy names units by the sorter's
    # ids; metrics.csv and curation speak phy's cluster_id.
    sorting = sorting.rename_units(np.asarray(sorting.get_property("original_cluster_id")).astype("int64"))
    return sorting.remove_empty_units()


def create_analyzer(pset: PostproSet, sorting, recording, opts: dict, job_kwargs: dict):
    from spikeinterface.core import create_sorting_analyzer

    block = opts["analyzer"]
    sparsity = dict(block.get("sparsity") or {"method": "radius", "radius_um": 100})
    analyzer = create_sorting_analyzer(
        sorting,
        recording,
        format="binary_folder",
        folder=pset.analyzer,
        sparse=True,
        return_in_uV=recording.has_scaleable_traces(),
        overwrite=True,
        **sparsity,
        **job_kwargs,
    )
    waveforms = block["waveforms"]
    analyzer.compute("random_spikes", **(block.get("random_spikes") or {}))
    analyzer.compute("waveforms", **waveforms, **job_kwargs)
    analyzer.compute("templates", ms_before=waveforms["ms_before"], ms_after=waveforms["ms_after"])
    noise = dict(block.get("noise_levels") or {})
    slices = {k: noise.pop(k) for k in ("num_chunks_per_segment", "chunk_size", "seed") if k in noise}
    if slices:
        noise["random_slices_kwargs"] = slices
    analyzer.compute("noise_levels", **noise, **job_kwargs)
    return analyzer


def sorter_amplitudes(sorter_output: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(spike times, clusters, amplitudes) from Kilosort's own amplitudes.npy, when it matches the spikes."""
    path = sorter_output / "amplitudes.npy"
    if not path.is_file():
        return None
    times = np.load(sorter_output / "spike_times.npy").ravel()
    clusters = np.load(sorter_output / "spike_clusters.npy").ravel()
    amplitudes = np.load(path).ravel()
    if amplitudes.size != times.size:
        return None
    return times, clusters, amplitudes


def sorter_amplitude_cutoff(
    sorter_amps: tuple, unit_ids, params: dict, intervals: np.ndarray | None = None
) -> pd.Series:
    """amplitude_cutoff per unit from the sorter's amplitudes (the lab's fork), within intervals if given."""
    from spikeinterface.metrics.quality.misc_metrics import amplitude_cutoff

    times, clusters, amplitudes = sorter_amps
    if intervals is not None:
        inside = np.searchsorted(intervals[:, 0], times, side="right") - 1
        ok = inside >= 0
        ok[ok] = times[ok] < intervals[inside[ok], 1]
        clusters, amplitudes = clusters[ok], amplitudes[ok]
    # One sort, then a slice per unit: a day of recording has 1e8 spikes and hundreds of units.
    order = np.argsort(clusters, kind="stable")
    by_unit = clusters[order]
    values = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for unit in unit_ids:
            first, last = np.searchsorted(by_unit, unit, "left"), np.searchsorted(by_unit, unit, "right")
            amps = amplitudes[order[first:last]]
            if amps.size and np.median(amps) < 0:
                amps = -amps
            values[unit] = amplitude_cutoff(amps, **params) if amps.size else np.nan
    return pd.Series(values, name="amplitude_cutoff", dtype=float)


def _quality_metrics(analyzer, names: list[str], params: dict, job_kwargs: dict, periods=None, save=True):
    from spikeinterface.core.sortinganalyzer import get_extension_class

    if not names:
        return pd.DataFrame(index=analyzer.unit_ids)
    params = {name: value for name, value in params.items() if name in names}
    kwargs = dict(metric_names=list(names), metric_params=params, delete_existing_metrics=True, seed=0)
    if save:
        return analyzer.compute("quality_metrics", **kwargs, **job_kwargs).get_data()
    extension = get_extension_class("quality_metrics")(analyzer)  # not saved: per-state results
    extension.set_params(save=False, periods=periods, **kwargs)
    extension.run(save=False, **job_kwargs)
    return extension.get_data()


def _metric_sources(pset: PostproSet, block: dict, names: list[str]) -> tuple:
    """(sorter amplitudes or None, whether amplitude_cutoff comes from them, the metrics SpikeInterface
    computes): Kilosort's own amplitudes.npy where present and asked for (the lab's fork)."""
    use_sorter = block.get("amplitude_cutoff_from_sorter", True)
    amps = sorter_amplitudes(pset.sorting.sorter_output) if use_sorter else None
    from_sorter = amps is not None and "amplitude_cutoff" in names
    return amps, from_sorter, [n for n in names if not (from_sorter and n == "amplitude_cutoff")]


def compute_metrics(pset: PostproSet, analyzer, opts: dict, job_kwargs: dict) -> dict:
    block = opts["quality_metrics"]
    names, params = list(block["metric_names"]), dict(block.get("metric_params") or {})
    amps, from_sorter, si_names = _metric_sources(pset, block, names)
    table = _quality_metrics(analyzer, si_names, params, job_kwargs)
    if from_sorter:
        table["amplitude_cutoff"] = sorter_amplitude_cutoff(
            amps, analyzer.unit_ids, params.get("amplitude_cutoff", {})
        )
    table = table[[c for c in metric_columns(names) if c in table]]
    _write_csv(table, pset.folder / QM_CSV)
    return {
        "amplitude_cutoff_source": "sorter amplitudes.npy" if from_sorter else "spike_amplitudes extension"
    }


def unit_periods(intervals: np.ndarray, n_units: int) -> np.ndarray:
    """SpikeInterface 0.105's unit_period_dtype: every interval for every unit (one segment)."""
    from spikeinterface.core.base import unit_period_dtype

    periods = np.zeros(len(intervals) * n_units, dtype=unit_period_dtype)
    periods["start_sample_index"] = np.tile(intervals[:, 0], n_units)
    periods["end_sample_index"] = np.tile(intervals[:, 1], n_units)
    periods["unit_index"] = np.repeat(np.arange(n_units), len(intervals))
    return periods


def compute_states(pset: PostproSet, analyzer, opts: dict, job_kwargs: dict) -> dict:
    block, metrics = opts["by_hypnogram_state"], opts["quality_metrics"]
    names, params = state_metric_names(opts), dict(metrics.get("metric_params") or {})
    frames = state_frames(
        read_hypnogram(pset.hypnogram), read_segments(pset.sorting.segments), block.get("state_map")
    )
    amps, from_sorter, si_names = _metric_sources(pset, metrics, names)
    columns, seconds = [], {}
    for state in block["states"]:
        intervals = frames.get(state, np.zeros((0, 2), dtype=np.int64))
        seconds[state] = float((intervals[:, 1] - intervals[:, 0]).sum() / analyzer.sampling_frequency)
        if len(intervals) == 0:
            table = pd.DataFrame(np.nan, index=analyzer.unit_ids, columns=metric_columns(names))
        else:
            periods = unit_periods(intervals, analyzer.get_num_units())
            table = _quality_metrics(analyzer, si_names, params, job_kwargs, periods=periods, save=False)
            if from_sorter:
                cutoff = params.get("amplitude_cutoff", {})
                table["amplitude_cutoff"] = sorter_amplitude_cutoff(
                    amps, analyzer.unit_ids, cutoff, intervals
                )
        table = table[[c for c in metric_columns(names) if c in table]]
        columns.append(table.add_suffix(f"_{state}"))
    _write_csv(pd.concat(columns, axis=1), pset.folder / STATES_CSV)
    not_per_state = [n for n in metrics["metric_names"] if n not in names]
    return {"state_seconds": seconds, "not_per_state": not_per_state}


def auto_labels(table: pd.DataFrame, rule: dict | None) -> pd.Series:
    """The options' threshold rule: `label` where every condition holds (NaN fails), else `otherwise`."""
    if not rule:
        return pd.Series("", index=table.index, dtype=object)
    ok = pd.Series(True, index=table.index)
    for column, bounds in rule["rules"].items():
        values = pd.to_numeric(table[column], errors="coerce")
        if "min" in bounds:
            ok &= values >= bounds["min"]
        if "max" in bounds:
            ok &= values <= bounds["max"]
    return pd.Series(np.where(ok, rule["label"], rule["otherwise"]), index=table.index, dtype=object)


def build_table(pset: PostproSet, opts: dict) -> dict:
    """metrics.csv: quality metrics (+ per state), phy's group where curated, else the auto pre-label."""
    table = pd.read_csv(pset.folder / QM_CSV, index_col="cluster_id")
    if (pset.folder / STATES_CSV).is_file() and opts.get("by_hypnogram_state"):
        table = table.join(pd.read_csv(pset.folder / STATES_CSV, index_col="cluster_id"))
    state = curation_state(pset.sorting.sorter_output)
    phy = pd.Series({u: state.groups.get(int(u), "") for u in table.index}, dtype=object)
    auto = auto_labels(table, (opts.get("curation") or {}).get("auto_label"))
    table["auto_label"] = auto
    table["group"] = phy.where(phy != "", auto)
    table["group_source"] = np.where(phy != "", "phy", np.where(auto != "", "auto", ""))
    _write_csv(table, pset.folder / METRICS_CSV)
    counts = table["group_source"].value_counts().to_dict()
    return {
        "units": len(table),
        "labelled_by": {k or "none": int(v) for k, v in counts.items()},
        "curation_complete": state.complete,  # False: run with --allow-uncurated
        "uncurated_units": len(state.uncurated),
        "curation_problem": state.problem,
    }


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    table.index.name = "cluster_id"
    with atomic.atomic_path(path) as tmp:
        table.to_csv(tmp)


def run_postpro(
    pset: PostproSet, n_jobs: int, progress: ProgressFile, job_kwargs: dict, environment: str = ""
) -> dict:
    """Run every stage whose manifest is not current; returns {stage: what it recorded} for the stages run."""
    from containers.steps.sort import open_recording_dat

    if not pset.opts.is_file():
        raise UserError(f"{pset.opts}: missing; run `wisc-sort postpro` to set up the postprocessing")
    opts = pset.load_options()
    order = stages(opts)
    exp = expected_stages(pset, environment)
    todo = [s for s in order if stage_status(pset, s, exp[s]) != "done"]
    if not todo:
        return {}
    if "states" in todo and not pset.hypnogram.is_file():
        raise UserError(f"{pset.hypnogram}: hypnogram missing; pass --hypnogram-project")
    backup = pset.sorting.root / f"{pset.name}.bak" / atomic.backup_stamp()
    recording = open_recording_dat(pset.sorting)
    if not recording.has_scaleable_traces():
        # Whitened, scaled data has no microvolts; template metrics need scaled traces: counts (gain 1).
        recording.set_channel_gains(1.0)
        recording.set_channel_offsets(0.0)
    analyzer, done = None, {}
    for index, stage in enumerate(order):
        if stage not in todo:
            continue
        progress.update(100.0 * index / len(order), stage, force=True)
        started, clock = now(), Trace.start()
        _supersede(pset, stage, backup)
        if analyzer is None and stage != "analyzer":
            analyzer = _load_analyzer(pset, recording)
        extra: dict = {}
        if stage == "analyzer":
            sorting = load_sorting(pset.sorting.sorter_output)
            analyzer = create_analyzer(pset, sorting, recording, opts, job_kwargs)
            extra = {"units": int(analyzer.get_num_units()), "channels": int(analyzer.get_num_channels())}
        elif stage in EXTENSIONS:
            analyzer.compute(stage, **((opts.get("extensions") or {}).get(stage) or {}), **job_kwargs)
        elif stage == "metrics":
            extra = compute_metrics(pset, analyzer, opts, job_kwargs)
        elif stage == "states":
            extra = compute_states(pset, analyzer, opts, job_kwargs)
        elif stage == "table":
            extra = build_table(pset, opts)
        elif stage == "plots":
            from containers.postpro.summary_plots import make_plots

            extra = make_plots(pset, analyzer, opts)
        trace = {"trace": clock.record(0, "cpu")}  # SpikeInterface's postprocessing runs on the CPU
        write_stage_manifest(pset, exp[stage], started, {"n_jobs": n_jobs, **extra, **trace})
        done[stage] = extra
    lost = [s for s in order if stage_status(pset, s, exp[s]) != "done"]
    if lost:  # SpikeInterface deletes an extension's children when it recomputes it
        raise RuntimeError(f"{pset.folder}: stages {', '.join(lost)} not current after the run")
    return done


def _load_analyzer(pset: PostproSet, recording):
    from spikeinterface.core import load_sorting_analyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "recording not found" when the sorting moved: we set it below
        analyzer = load_sorting_analyzer(pset.analyzer, load_extensions=True)
    if not analyzer.has_recording():
        analyzer.set_temporary_recording(recording)
    return analyzer
