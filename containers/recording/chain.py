"""SpikeInterface recordings of a sorting: SpikeGLX files, the kept segments, and the preprocessing chain."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import probeinterface
import spikeinterface.preprocessing as spre
from neo.rawio.spikeglxrawio import extract_stream_info, read_meta_file
from spikeinterface.core import BaseRecording, concatenate_recordings, read_binary
from spikeinterface.core.channelslice import ChannelSliceRecording
from spikeinterface.core.motion import Motion
from spikeinterface.core.time_series_tools import get_random_sample_slices
from spikeinterface.extractors.neuropixels_utils import get_neuropixels_sample_shifts_from_probe
from spikeinterface.preprocessing.filter import FilterRecording
from spikeinterface.preprocessing.pipeline import pp_names_to_functions
from spikeinterface.sortingcomponents.motion import interpolate_motion

from tasks.core.errors import UserError
from tasks.options.chain import DRIFT_STEP, WHERE, Chain
from tasks.options.chain import split_chain as options_split_chain

# The option files' step names that differ from SpikeInterface's preprocessing function names.
STEP_ALIASES = {"detect_bad_channels": "detect_and_remove_bad_channels"}
# Where a step forwards its **kwargs, so that typos there are caught too.
FORWARDED_KWARGS = {
    "detect_bad_channels": [spre.detect_bad_channels],
    "whiten": [get_random_sample_slices],
    "bandpass_filter": [FilterRecording.__init__],
}
# Files of one recording may carry slightly different calibrated rates; beyond this they are not one probe.
MAX_RATE_DIFF_HZ = 1.0


class SpikeGLXFileRecording(ChannelSliceRecording):
    """One SpikeGLX AP .bin as an int16 recording of its AP channels, with gains to uV and its probe.

    neo's SpikeGLX reader groups a folder's files into segments; here one file is read on its own,
    reusing neo's meta parsing (gains) and probeinterface's probe (saved-channel subsets included).
    A class, not a function, because SpikeInterface rebuilds recordings in worker processes from their
    constructor kwargs: probe and phase-shift properties set afterwards would be lost there.
    """

    def __init__(self, bin_path: str | Path) -> None:
        bin_path = Path(bin_path)
        info, probe = _read_file_info(bin_path)
        names = info["channel_names"]
        full = read_binary(
            bin_path,
            sampling_frequency=info["sampling_rate"],
            dtype="int16",
            num_channels=info["num_chan"],
            channel_ids=[f"{info['stream_name']}#{name}" for name in names],
            gain_to_uV=info["channel_gains"],
            offset_to_uV=info["channel_offsets"],
        )
        ap_ids = [cid for cid, name in zip(full.channel_ids, names, strict=True) if not name.startswith("SY")]
        if probe.get_contact_count() != len(ap_ids):
            raise UserError(
                f"{bin_path.with_suffix('.meta')}: {len(ap_ids)} AP channels saved but the probe has "
                f"{probe.get_contact_count()} contacts; the .meta is inconsistent"
            )
        super().__init__(full, channel_ids=ap_ids)
        # As SpikeInterface's read_spikeglx: shank groups, ADC phase for phase_shift.
        self.set_probe(probe, group_mode="by_shank" if probe.shank_ids is not None else "auto")
        sample_shifts = get_neuropixels_sample_shifts_from_probe(probe)
        if sample_shifts is not None:
            self.set_property("inter_sample_shift", sample_shifts)
        self._kwargs = {"bin_path": str(bin_path)}


def _read_file_info(bin_path: Path) -> tuple[dict, probeinterface.Probe]:
    meta_path = bin_path.with_suffix(".meta")
    if not bin_path.is_file():
        raise UserError(f"{bin_path}: file not found; check the segment table and the raw data drive")
    if not meta_path.is_file() or meta_path.stat().st_size == 0:
        raise UserError(f"{meta_path}: missing or empty .meta beside the .bin; restore it from acquisition")
    meta = read_meta_file(meta_path)
    # neo names the stream from the meta's fileName field: make it the file actually read.
    meta["fileName"] = str(bin_path)
    try:
        info = extract_stream_info(meta_path, meta)
        probe = probeinterface.read_spikeglx(meta_path)
    except (KeyError, ValueError, IndexError, AssertionError) as err:
        raise UserError(
            f"{meta_path}: cannot read gains or probe ({type(err).__name__}: {err}); "
            "is it an imec AP .meta of a probe type that neo/probeinterface support?"
        ) from err
    if info["stream_kind"] != "ap":
        raise UserError(f"{bin_path}: not an AP stream (stream {info['stream_name']!r}); give the .ap.bin")
    return info, probe


def read_spikeglx_file(bin_path: Path) -> BaseRecording:
    """One SpikeGLX AP .bin as a recording (see SpikeGLXFileRecording)."""
    return SpikeGLXFileRecording(bin_path)


def load_kept_recording(segments: pd.DataFrame) -> BaseRecording:
    """The `keep` rows of the segment table, in order, as ONE segment (each file opened once)."""
    keep = segments[segments["type"] == "keep"]
    if keep.empty:
        raise UserError("segments.htsv: no 'keep' segment; check the exclusions and the alias' files")
    files: dict[str, BaseRecording] = {}
    pieces = []
    for index, row in keep.iterrows():
        path = str(row["path"])
        if path not in files:
            files[path] = read_spikeglx_file(Path(path))
        recording = files[path]
        start, end = int(row["withinFileStartFrame"]), int(row["withinFileEndFrame"])
        if not 0 <= start < end <= recording.get_num_samples():
            raise UserError(
                f"segments.htsv row {index} ({row['fname']}): frames [{start}, {end}) outside the file's "
                f"{recording.get_num_samples()} samples; rebuild the segment table"
            )
        pieces.append(recording.frame_slice(start, end))
    _check_same_probe(files)
    if len(pieces) == 1:
        return pieces[0]
    return concatenate_recordings(pieces, sampling_frequency_max_diff=MAX_RATE_DIFF_HZ)


def _check_same_probe(files: dict[str, BaseRecording]) -> None:
    (first_path, first), *others = files.items()
    for path, recording in others:
        if not np.array_equal(recording.channel_ids, first.channel_ids) or not np.array_equal(
            recording.get_channel_locations(), first.get_channel_locations()
        ):
            raise UserError(
                f"{path}: channels or probe layout differ from {first_path}; "
                "files of one sorting must share the probe's saved channels (split the alias)"
            )
        if abs(recording.sampling_frequency - first.sampling_frequency) > MAX_RATE_DIFF_HZ:
            raise UserError(
                f"{path}: sampling rate {recording.sampling_frequency} Hz differs from {first_path} "
                f"({first.sampling_frequency} Hz); files of one sorting must share the rate"
            )


def _step_function(name: str):
    if name == DRIFT_STEP:
        raise UserError(f"{WHERE}: {DRIFT_STEP} cannot be applied as a plain step (split the chain first)")
    function = pp_names_to_functions.get(STEP_ALIASES.get(name, name))
    if function is None:
        known = sorted({*pp_names_to_functions, *STEP_ALIASES, DRIFT_STEP})
        raise UserError(f"{WHERE}: unknown step_name {name!r}; use one of {known}")
    return function


def _check_step(step: dict) -> tuple[str, dict]:
    """A step's name and params, checked against the SpikeInterface function it runs (structure is checked
    by the chain model first)."""
    params = step.get("step_params") or {}
    name = step["step_name"]
    if name == DRIFT_STEP:
        return name, params
    accepted: set[str] = set()
    takes_any = False
    for function in [_step_function(name), *FORWARDED_KWARGS.get(name, [])]:
        parameters = inspect.signature(function).parameters
        accepted |= {k for k, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        takes_any |= name not in FORWARDED_KWARGS and any(
            p.kind is p.VAR_KEYWORD for p in parameters.values()
        )
    accepted -= {"self", "recording", "time_series"}
    unknown = sorted(set(params) - accepted)
    if unknown and not takes_any:
        raise UserError(f"{WHERE}: {name} has unknown step_params {unknown}; accepted: {sorted(accepted)}")
    return name, params


def split_chain(steps: list[dict]) -> Chain:
    """The one chain model (tasks/options/chain.py), every step's parameters checked against
    SpikeInterface."""
    chain = options_split_chain(steps)
    for step in [*chain.before, *chain.after]:
        _check_step(step)
    return chain


def apply_chain(recording: BaseRecording, steps: list[dict]) -> BaseRecording:
    """Apply {step_name, step_params} items in order with spikeinterface.preprocessing functions."""
    for step in steps:
        name, params = _check_step(step)
        recording = _step_function(name)(recording, **params)
    return recording


def preprocess_for_motion(recording: BaseRecording, steps: list[dict]) -> BaseRecording:
    """The chain before drift_correction, in float32 (uV when the recording has gains)."""
    before, _, _ = split_chain(steps)
    # Filtering int16 in place would round every step; uV also makes peak amplitudes readable.
    if recording.has_scaleable_traces():
        recording = spre.scale_to_uV(recording)
    recording = apply_chain(recording, before)
    return recording if recording.get_dtype() == np.float32 else spre.astype(recording, "float32")


def preprocess_full(
    recording: BaseRecording,
    steps: list[dict],
    motion_clean: Motion | None,
    interpolate_kwargs: dict | None = None,
) -> BaseRecording:
    """The whole chain: before-chain, motion interpolation with the CLEANED motion, after-chain."""
    _, drift_params, after = split_chain(steps)
    if (drift_params is None) != (motion_clean is None):
        raise ValueError("preprocess_full: give a cleaned motion exactly when the chain has drift_correction")
    recording = preprocess_for_motion(recording, steps)
    if motion_clean is not None:
        recording = interpolate_motion(recording, motion_clean, **(interpolate_kwargs or {}))
    return apply_chain(recording, after)
