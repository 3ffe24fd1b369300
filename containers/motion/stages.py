"""Motion estimation stages (peaks, locations, motion, cleaning) and their parameter resolution."""

from __future__ import annotations

import copy
import importlib.util
import inspect
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d
from spikeinterface.core import BaseRecording
from spikeinterface.core.motion import Motion
from spikeinterface.preprocessing.motion import get_motion_presets, motion_options_preset
from spikeinterface.sortingcomponents.motion import InterpolateMotionRecording, dredge, estimate_motion
from spikeinterface.sortingcomponents.motion.motion_estimation import estimate_motion_methods
from spikeinterface.sortingcomponents.peak_detection import detect_peaks
from spikeinterface.sortingcomponents.peak_detection.method_list import detect_peak_methods
from spikeinterface.sortingcomponents.peak_localization import localize_peaks
from spikeinterface.sortingcomponents.peak_localization.method_list import peak_localization_methods

from tasks.core.errors import UserError, warn

WHERE = "opts.yaml preprocessing drift_correction step_params"
STEP_KEYS = ("detect_kwargs", "localize_peaks_kwargs", "estimate_motion_kwargs", "interpolate_motion_kwargs")
CLEAN_KEY = "clean_motion_kwargs"
# SI's own fallbacks when a step names no method (detect_peaks, localize_peaks, estimate_motion).
SI_DEFAULT_METHODS = {
    "detect_kwargs": "locally_exclusive",
    "localize_peaks_kwargs": "center_of_mass",
    "estimate_motion_kwargs": "dredge_ap",
}
# SI's clean_motion_vector defaults: the lab's options always give both.
CLEAN_DEFAULTS: dict[str, Any] = {"speed_threshold": 30.0, "sigma_smooth_s": None}
# SI's compute_motion extracts 0.1 ms before / 0.3 ms after each peak for localization (the lab's
# old extract_waveforms_params too); localize_peaks alone would use 0.5/0.5.
LOCALIZE_WAVEFORM_MS = {"ms_before": 0.1, "ms_after": 0.3}
TORCH_METHODS = ("dredge_ap", "dredge_lfp", "medicine")


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _accepted_keys(step: str, method: str | None) -> set[str]:
    """Keyword names SpikeInterface accepts for a step's method (typos are errors, DESIGN rule 4)."""
    if step == "detect_kwargs":
        funcs, extra = [detect_peak_methods[method].__init__], {"random_slices_kwargs"}
    elif step == "localize_peaks_kwargs":
        funcs, extra = [peak_localization_methods[method].__init__], {*LOCALIZE_WAVEFORM_MS, "n_peaks"}
    elif step == "estimate_motion_kwargs":
        funcs, extra = [estimate_motion, estimate_motion_methods[method].run], set()
        # The dredge methods' run() forwards **kwargs to these functions.
        funcs += [
            {"dredge_ap": dredge.dredge_ap, "dredge_lfp": dredge.dredge_online_lfp}.get(
                method, estimate_motion
            )
        ]
    else:
        funcs, extra = [InterpolateMotionRecording.__init__], set()
    keys = set(extra) | {"method"}
    for func in funcs:
        params = inspect.signature(func).parameters
        keys |= {name for name, p in params.items() if p.default is not inspect.Parameter.empty}
    # Set by us or by SI itself, never by the user.
    return (
        keys
        - {"return_output", "return_tensor", "parents", "progress_bar", "verbose", "extra_outputs"}
        - {
            "peaks",
            "peak_locations",
        }
    )


def _plain(value: Any) -> Any:
    """Arrays and tuples as lists, so the resolved options serialize to YAML/JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _resolve_step(step: str, preset_kwargs: dict, explicit: dict) -> dict:
    base = copy.deepcopy(preset_kwargs)
    if "method" in explicit and base.get("method", explicit["method"]) != explicit["method"]:
        base = {}  # the preset's keys belong to its own method
    merged = {**base, **explicit}
    if step in SI_DEFAULT_METHODS:
        merged.setdefault("method", SI_DEFAULT_METHODS[step])
        registry = {
            "detect_kwargs": detect_peak_methods,
            "localize_peaks_kwargs": peak_localization_methods,
            "estimate_motion_kwargs": estimate_motion_methods,
        }[step]
        if merged["method"] not in registry:
            raise UserError(
                f"{WHERE}: {step}.method {merged['method']!r} unknown; use one of {sorted(registry)}"
            )
    if step == "estimate_motion_kwargs" and "margin_um" in merged:
        raise UserError(
            f"{WHERE}: {step}.margin_um was removed in SpikeInterface 0.105; "
            "use hist_margin_um (histogram margin) or win_margin_um (window margin)"
        )
    accepted = _accepted_keys(step, merged.get("method"))
    unknown = sorted(set(merged) - accepted)
    if unknown:
        raise UserError(f"{WHERE}: {step} has unknown key(s) {unknown}; accepted: {sorted(accepted)}")
    return _plain(merged)


def resolve_drift_params(drift_params: dict | None) -> dict[str, dict]:
    """The drift_correction step_params as the exact kwargs of each SpikeInterface call.

    Per step: the preset's kwargs (SpikeInterface's ``motion_options_preset``), overridden key by key by
    the explicit ``*_kwargs``; an explicit ``method`` other than the preset's drops the preset's keys
    for that step. Without a preset the explicit kwargs are used as given, with SpikeInterface's default
    method filled in; every other key keeps SpikeInterface's default. Adjustments made here are listed
    under ``notes`` (key -> reason) so the manifest shows them.
    """
    drift_params = dict(drift_params or {})
    unknown = sorted(set(drift_params) - {"preset", CLEAN_KEY, *STEP_KEYS})
    if unknown:
        raise UserError(f"{WHERE}: unknown key(s) {unknown}; use preset, {', '.join(STEP_KEYS)}, {CLEAN_KEY}")
    preset = drift_params.get("preset") or ""
    if preset not in motion_options_preset:
        raise UserError(f"{WHERE}: preset {preset!r} unknown; use null or one of {get_motion_presets()}")
    for key in (*STEP_KEYS, CLEAN_KEY):
        if not isinstance(drift_params.get(key) or {}, dict):
            raise UserError(f"{WHERE}: {key} must be a mapping of keyword arguments")

    resolved: dict[str, dict] = {}
    for step in STEP_KEYS:
        explicit = dict(drift_params.get(step) or {})
        resolved[step] = _resolve_step(step, motion_options_preset[preset].get(step, {}), explicit)

    clean = {**CLEAN_DEFAULTS, **(drift_params.get(CLEAN_KEY) or {})}
    if set(clean) != set(CLEAN_DEFAULTS):
        raise UserError(f"{WHERE}: {CLEAN_KEY} accepts only {sorted(CLEAN_DEFAULTS)}, got {sorted(clean)}")
    resolved[CLEAN_KEY] = clean

    notes: dict[str, str] = {}
    estimate = resolved["estimate_motion_kwargs"]
    explicit_estimate = drift_params.get("estimate_motion_kwargs") or {}
    if estimate["method"] == "dredge_ap" and estimate.get("batching_mode") == "offline":
        if explicit_estimate.get("batching_mode") == "offline":
            raise UserError(
                f"{WHERE}: estimate_motion_kwargs.batching_mode 'offline' is invalid; use full or online"
            )
        # SpikeInterface 0.105's dredge preset passes a mode that dredge_ap rejects (SPEC.md).
        estimate["batching_mode"] = "full"
        notes["estimate_motion_kwargs.batching_mode"] = (
            "preset's 'offline' is rejected by dredge_ap: 'full' used"
        )
    if estimate.get("conv_engine") == "torch" and not torch_available():
        warn(
            "drift_correction: conv_engine 'torch' requested but torch is not importable here; "
            "motion is estimated with conv_engine 'numpy' (same result, slower)"
        )
        estimate["conv_engine"] = "numpy"
        notes["estimate_motion_kwargs.conv_engine"] = "torch not importable: numpy used"
    resolved["notes"] = notes
    return resolved


def check_motion_dependencies(resolved: dict[str, dict]) -> None:
    """Raise before any work when the resolved motion method cannot run in this environment."""
    method = resolved["estimate_motion_kwargs"]["method"]
    if method in TORCH_METHODS and not torch_available():
        raise UserError(
            f"{WHERE}: estimate_motion method {method!r} needs torch, which is not installed here; "
            "run this step in the SpikeInterface image or choose method decentralized"
        )


def _job(job_kwargs: dict | None) -> dict:
    return {"progress_bar": True, **(job_kwargs or {})}


def detect_peaks_stage(rec: BaseRecording, detect_kwargs: dict, job_kwargs: dict | None = None) -> np.ndarray:
    """Detected peaks (structured array: sample_index, channel_index, amplitude, segment_index)."""
    kwargs = dict(detect_kwargs)
    method = kwargs.pop("method")
    if detect_peak_methods[method].need_noise_levels:
        kwargs.setdefault("random_slices_kwargs", {"seed": 0})  # reproducible noise levels
    return detect_peaks(rec, method=method, method_kwargs=kwargs, job_kwargs=_job(job_kwargs))


def localize_peaks_stage(
    rec: BaseRecording, peaks: np.ndarray, localize_kwargs: dict, job_kwargs: dict | None = None
) -> np.ndarray:
    """Peak locations (structured array with x, y, ...), one per peak."""
    kwargs = dict(localize_kwargs)
    method = kwargs.pop("method")
    ms = {k: kwargs.pop(k, v) for k, v in LOCALIZE_WAVEFORM_MS.items()}
    return localize_peaks(
        rec, peaks, method=method, method_kwargs=kwargs, job_kwargs=_job(job_kwargs), seed=0, **ms
    )


def estimate_motion_stage(
    rec: BaseRecording,
    peaks: np.ndarray,
    peak_locations: np.ndarray,
    estimate_kwargs: dict,
    job_kwargs: dict | None = None,
) -> Motion:
    """Raw motion estimate (estimate_motion itself takes no n_jobs: the caller caps threads)."""
    progress_bar = _job(job_kwargs)["progress_bar"]
    return estimate_motion(rec, peaks, peak_locations, progress_bar=progress_bar, **estimate_kwargs)


def clean_displacement(
    displacement: np.ndarray, bin_s: float, speed_threshold: float, sigma_smooth_s: float | None
) -> np.ndarray:
    """SpikeInterface's clean_motion_vector, per spatial window, with two fixes.

    1. Pairs of jumps faster than ``speed_threshold`` (um/s) delimit a spurious excursion, replaced by
       linear interpolation; with an odd number of jumps the pairing masking less time is kept (SI means
       to do this but always keeps the first pairing).
    2. Gaussian smoothing (``sigma_smooth_s``) replicates the edge values instead of SI's zero padding,
       which pulled the first and last bins toward zero displacement.
    """
    out = np.array(displacement, dtype="float64", copy=True)
    n = out.shape[0]
    bins = np.arange(n)
    for col in out.T:  # views: edits land in `out`
        jumps = np.flatnonzero(np.abs(np.diff(col)) / bin_s > speed_threshold) + 1
        if jumps.size % 2:
            first, last = jumps[:-1], jumps[1:]
            masked = [np.sum(j[1::2] - j[::2]) for j in (first, last)]
            jumps = first if masked[0] <= masked[1] else last
        mask = np.ones(n, dtype=bool)
        for start, stop in zip(jumps[::2], jumps[1::2], strict=True):
            mask[start:stop] = False
        if mask.any() and not mask.all():
            col[~mask] = np.interp(bins[~mask], bins[mask], col[mask])
    if sigma_smooth_s and n > 1:
        out = gaussian_filter1d(out, sigma=sigma_smooth_s / bin_s, axis=0, mode="nearest")
    return out


def clean_motion_stage(motion: Motion, clean_kwargs: dict) -> Motion:
    """The motion with spurious fast excursions removed and temporal smoothing (the lab's cleaning)."""
    kwargs = {**CLEAN_DEFAULTS, **clean_kwargs}
    displacement = []
    for disp, times in zip(motion.displacement, motion.temporal_bins_s, strict=True):
        bin_s = float(np.median(np.diff(times))) if times.size > 1 else 1.0
        displacement.append(clean_displacement(disp, bin_s, **kwargs).astype(disp.dtype))
    return Motion(
        displacement,
        [t.copy() for t in motion.temporal_bins_s],
        motion.spatial_bins_um.copy(),
        direction=motion.direction,
        interpolation_method=motion.interpolation_method,
    )


def save_motion(motion: Motion, path: Path) -> None:
    """Write a Motion as one .npz (no pickle) at exactly `path` (np.savez would add .npz to a temp name)."""
    arrays = {"spatial_bins_um": motion.spatial_bins_um, "direction": np.array(motion.direction)}
    arrays["interpolation_method"] = np.array(motion.interpolation_method)
    for i, (disp, times) in enumerate(zip(motion.displacement, motion.temporal_bins_s, strict=True)):
        arrays[f"displacement_seg{i}"] = disp
        arrays[f"temporal_bins_s_seg{i}"] = times
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_motion(path: Path) -> Motion:
    with np.load(path, allow_pickle=False) as data:
        n_segments = sum(1 for k in data.files if k.startswith("displacement_seg"))
        return Motion(
            [data[f"displacement_seg{i}"] for i in range(n_segments)],
            [data[f"temporal_bins_s_seg{i}"] for i in range(n_segments)],
            data["spatial_bins_um"],
            direction=str(data["direction"]),
            interpolation_method=str(data["interpolation_method"]),
        )


def motion_error_um(
    estimated: Motion, true_displacement: np.ndarray, true_times_s: np.ndarray, true_depths_um: np.ndarray
) -> float:
    """RMS error (um) of the first segment's estimate on its own bins, after removing a constant offset.

    `true_displacement` is (n_times,) for rigid truth or (n_times, n_depths); the truth is linearly
    interpolated (and held constant beyond its range) onto the estimate's time and depth bins.
    """
    truth = np.asarray(true_displacement, dtype="float64")
    truth = truth[:, None] if truth.ndim == 1 else truth
    times, depths = estimated.temporal_bins_s[0], estimated.spatial_bins_um
    on_times = np.stack([np.interp(times, true_times_s, truth[:, j]) for j in range(truth.shape[1])], axis=1)
    if truth.shape[1] == 1:
        on_bins = np.repeat(on_times, depths.size, axis=1)
    else:
        on_bins = np.stack([np.interp(depths, np.asarray(true_depths_um), row) for row in on_times])
    error = estimated.displacement[0] - on_bins
    error -= np.median(error)
    return float(np.sqrt(np.mean(error**2)))
