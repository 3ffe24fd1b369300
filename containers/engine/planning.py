"""plan_chain: the options' preprocessing list turned into an EngineChain, with SpikeInterface's semantics.

Planning builds SpikeInterface's own lazy chain beside the engine's (the "shadow") and reads each step's
parameters from it (filter design and margin, shifts, reference neighbourhoods, border channels, motion
bins), so defaults and conventions are SpikeInterface's. The costly planning computations (bad channels,
whitening matrix) read random chunks through the engine itself, and the shadow is handed their result.
A step or parameter the engine does not implement raises EngineUnsupported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import spikeinterface.preprocessing as spre
from spikeinterface.core import BaseRecording
from spikeinterface.core.motion import Motion, ensure_time_bins
from spikeinterface.preprocessing.whiten import compute_whitening_matrix
from spikeinterface.sortingcomponents.motion import interpolate_motion

from containers.engine.chain import EngineChain, EngineUnsupported
from containers.engine.motion import KrigingKernel, MotionMatrices
from containers.engine.si_recording import EngineRecording
from containers.engine.stages import (
    AffineStage,
    FilterPart,
    GainStage,
    GlobalReferenceStage,
    LocalMedianStage,
    SelectStage,
    ShiftPart,
    Stage,
    TemporalStage,
)

DRIFT_STEP = "drift_correction"
BAD_CHANNEL_STEPS = ("detect_bad_channels", "detect_and_remove_bad_channels")


@dataclass
class Affine:
    """y = x @ matrix(bin) + bias, kept open while planning so that later linear steps fold into it."""

    matrix: Callable[[int], np.ndarray]
    bin_starts: np.ndarray
    bias: np.ndarray | None = None

    def then(self, matrix: np.ndarray | None, gain: np.ndarray, offset: np.ndarray) -> Affine:
        """This map followed by x @ matrix * gain + offset (matrix None: identity)."""
        inner, gain = self.matrix, np.asarray(gain, dtype=np.float64)

        def composed(b: int) -> np.ndarray:
            a = inner(b).astype(np.float64)
            return (a if matrix is None else a @ matrix) * gain[None, :]

        bias = None if self.bias is None else (self.bias if matrix is None else self.bias @ matrix) * gain
        bias = offset if bias is None else bias + offset
        return Affine(composed, self.bin_starts, None if not np.any(bias) else bias)

    def stage(self) -> AffineStage:
        return AffineStage(self.matrix, self.bin_starts, self.bias)


Op = Stage | FilterPart | ShiftPart | Affine


@dataclass
class Plan:
    """The chain so far: SpikeInterface's lazy recording at this position and the engine's ops."""

    raw: BaseRecording
    shadow: BaseRecording
    device: str
    n_jobs: int
    ops: list[Op | list] = field(default_factory=list)

    def add(self, op: Op) -> None:
        last = self.ops[-1] if self.ops else None
        if isinstance(op, (FilterPart, ShiftPart)):
            if isinstance(last, list):
                last.append(op)
            else:
                self.ops.append([op])
        elif isinstance(op, Affine) and isinstance(last, Affine) and op.bin_starts.size == 1:
            # Exact up to float rounding: (x A_b) W = x (A_b W); one matrix per bin instead of two.
            bias = np.zeros(1) if op.bias is None else op.bias
            self.ops[-1] = last.then(op.matrix(0), np.ones(1), bias)
        elif isinstance(op, GainStage) and isinstance(last, Affine):
            self.ops[-1] = last.then(None, op.gain.ravel(), op.offset.ravel())
        else:
            self.ops.append(op)

    def stages(self) -> list[Stage]:
        stages: list[Stage] = []
        for op in self.ops:
            if isinstance(op, list):
                stages.append(TemporalStage(op))
            elif isinstance(op, Affine):
                stages.append(op.stage())
            else:
                stages.append(op)
        return stages

    def chain(self, dtype: str = "float32") -> EngineChain:
        raw = self.raw
        return EngineChain(
            stages=self.stages(),
            reader=lambda start, end: raw.get_traces(start_frame=start, end_frame=end),
            num_frames=raw.get_num_samples(),
            sampling_frequency=raw.get_sampling_frequency(),
            channel_ids=np.asarray(self.shadow.channel_ids),
            channel_locations=self.shadow.get_channel_locations(),
            dtype=dtype,
            device=self.device,
            n_jobs=self.n_jobs,
        )

    def recording(self) -> EngineRecording:
        """The engine's output at this position, readable by SpikeInterface (for planning computations)."""
        return EngineRecording(self.chain(), self.shadow)


def plan_chain(
    recording: BaseRecording,
    steps: list[dict],
    motion: Motion | None = None,
    interpolate_kwargs: dict | None = None,
    *,
    until: str = "end",
    device: str = "cpu",
    n_jobs: int = 1,
    dtype: str = "float32",
) -> EngineChain:
    """The engine chain of `steps` on the kept raw int16 `recording` (scaled to uV first when it has gains).

    until="motion": the steps before drift_correction (what peak detection reads), float32 uV, as
    containers.recording.preprocess_for_motion. until="end": the whole chain, motion interpolated with
    `motion` (the CLEANED one; required exactly when the chain has drift_correction) and
    `interpolate_kwargs` (the resolved interpolate_motion_kwargs; default: the step's own), as
    preprocess_full. dtype="int16": clipped and rounded as recording_dat's as_int16.
    """
    return _plan(recording, steps, motion, interpolate_kwargs, until, device, n_jobs).chain(dtype)


def plan_recording(
    recording: BaseRecording,
    steps: list[dict],
    motion: Motion | None = None,
    interpolate_kwargs: dict | None = None,
    *,
    until: str = "end",
    device: str = "cpu",
    n_jobs: int = 1,
) -> EngineRecording:
    """plan_chain's float32 chain as a SpikeInterface recording (SpikeInterface's ids, probe, properties)."""
    return _plan(recording, steps, motion, interpolate_kwargs, until, device, n_jobs).recording()


def _plan(
    recording: BaseRecording,
    steps: list[dict],
    motion: Motion | None,
    interpolate_kwargs: dict | None,
    until: str,
    device: str,
    n_jobs: int,
) -> Plan:
    if until not in ("end", "motion"):
        raise ValueError(f"plan_chain: until must be 'end' or 'motion', not {until!r}")
    names = [step["step_name"] for step in steps]
    if names.count(DRIFT_STEP) > 1:
        raise ValueError(f"plan_chain: {DRIFT_STEP} appears {names.count(DRIFT_STEP)} times")
    cut = names.index(DRIFT_STEP) if DRIFT_STEP in names else len(steps)
    if until == "end" and (DRIFT_STEP in names) != (motion is not None):
        raise ValueError("plan_chain: give a cleaned motion exactly when the chain has drift_correction")
    plan = _start(recording, device, n_jobs)
    for step in steps[:cut] if until == "motion" else steps:
        name, params = step["step_name"], dict(step.get("step_params") or {})
        if name == DRIFT_STEP:
            own = params.get("interpolate_motion_kwargs")
            _drift_correction(
                plan, motion, dict((own if interpolate_kwargs is None else interpolate_kwargs) or {})
            )
        elif name in BUILDERS:
            BUILDERS[name](plan, params)
        else:
            raise EngineUnsupported(f"{name}: not implemented by the engine")
    return plan


def _start(recording: BaseRecording, device: str, n_jobs: int) -> Plan:
    if recording.get_num_segments() != 1:
        raise EngineUnsupported("recording: the engine reads one segment (the kept recording, concatenated)")
    if not recording.has_scaleable_traces():
        # SpikeInterface would then filter int16 and round after every step.
        raise EngineUnsupported(
            "recording.gain_to_uV: no gains; SpikeInterface's int16 chain rounds per step"
        )
    if recording.get_dtype() != np.int16:
        raise EngineUnsupported(f"recording.dtype: {recording.get_dtype()}, the engine reads int16")
    plan = Plan(recording, spre.scale_to_uV(recording), device, n_jobs)
    plan.add(GainStage(recording.get_channel_gains(), recording.get_channel_offsets()))
    return plan


def _check(step: str, params: dict, allowed: dict[str, Callable[[object], bool]]) -> None:
    for key, value in params.items():
        if key not in allowed:
            raise EngineUnsupported(f"{step}.{key}: not implemented by the engine")
        if not allowed[key](value):
            raise EngineUnsupported(f"{step}.{key}: value {value!r} not implemented by the engine")


def _any(_value: object) -> bool:
    return True


def _float_dtype(value: object) -> bool:
    return value is None or np.dtype(value) == np.float32


def _filter(plan: Plan, params: dict, name: str) -> None:
    allowed = {
        k: _any for k in ("freq_min", "freq_max", "margin_ms", "ignore_low_freq_error", "filter_order")
    }
    allowed |= {"ftype": _any, "filter_mode": _any, "coeff": _any, "dtype": _float_dtype}
    allowed |= {"direction": lambda v: v == "forward-backward", "add_reflect_padding": lambda v: not v}
    _check(name, params, allowed)
    plan.shadow = getattr(spre, name)(plan.shadow, **params)
    segment = plan.shadow.segments[0]
    fs = plan.shadow.get_sampling_frequency()
    plan.add(FilterPart(segment.coeff, segment.filter_mode, fs, segment.margin))


def _phase_shift(plan: Plan, params: dict) -> None:
    _check("phase_shift", params, {"margin_ms": _any, "inter_sample_shift": _any, "dtype": _float_dtype})
    plan.shadow = spre.phase_shift(plan.shadow, **params)
    segment = plan.shadow.segments[0]
    plan.add(ShiftPart(np.asarray(segment.sample_shifts, dtype=np.float64), segment.margin))


def _common_reference(plan: Plan, params: dict) -> None:
    allowed = {"operator": _any, "groups": _any, "ref_channel_ids": _any, "local_radius": _any}
    allowed |= {"min_local_neighbors": _any, "dtype": _float_dtype}
    allowed |= {"reference": lambda v: v in ("global", "local")}
    _check("common_reference", params, allowed)
    plan.shadow = spre.common_reference(plan.shadow, **params)
    segment = plan.shadow.segments[0]
    n = plan.shadow.get_num_channels()
    if segment.reference == "local":
        kernel = segment.local_kernel
        if segment.operator == "average":
            # x - L x: linear, so it joins (and folds with) the linear steps.
            matrix = np.eye(n) - kernel.T
            plan.add(Affine(lambda _b: matrix, np.zeros(1, dtype=np.int64)))
        else:
            plan.add(LocalMedianStage(_neighbour_groups(kernel)))
        return
    everyone = np.arange(n)
    if segment.group_indices is None:
        refs = everyone if segment.ref_channel_indices is None else segment.ref_channel_indices
        groups = [(everyone, refs)]
    else:
        refs = segment.group_indices if segment.ref_channel_indices is None else segment.ref_channel_indices
        groups = list(zip(segment.group_indices, refs, strict=True))
    plan.add(GlobalReferenceStage(segment.operator, groups, n))


def _neighbour_groups(kernel: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Channels grouped by neighbour count, with their neighbours (SpikeInterface's nonzero order)."""
    by_count: dict[int, tuple[list[int], list[np.ndarray]]] = {}
    for channel, row in enumerate(kernel):
        neighbours = np.flatnonzero(row)
        if neighbours.size:
            members, lists = by_count.setdefault(neighbours.size, ([], []))
            members.append(channel)
            lists.append(neighbours)
    return [(np.array(members), np.stack(lists)) for members, lists in by_count.values()]


def _bad_channels(plan: Plan, params: dict, name: str) -> None:
    bad_ids = params.pop("bad_channel_ids", None)
    params.pop("channel_labels", None)
    if bad_ids is None:
        # The engine's recording at this position, read in this process (it does not pickle).
        params["job_kwargs"] = {**(params.get("job_kwargs") or {}), "n_jobs": 1, "progress_bar": False}
        bad_ids, _ = spre.detect_bad_channels(plan.recording(), **params)
    before = plan.shadow
    plan.shadow = spre.detect_and_remove_bad_channels(before, bad_channel_ids=list(bad_ids))
    if len(bad_ids):
        plan.add(SelectStage(before.ids_to_indices(plan.shadow.channel_ids)))


def _whiten(plan: Plan, params: dict) -> None:
    fixed = {"dtype", "mode", "radius_um", "apply_mean", "int_scale", "eps", "W", "M", "regularize"}
    allowed = {key: _any for key in fixed | {"regularize_kwargs", "seed", "num_chunks_per_segment"}}
    allowed |= {"chunk_size": _any, "chunk_duration": _any, "margin_frames": _any, "method": _any}
    allowed["dtype"] = _float_dtype
    _check("whiten", params, allowed)
    W, M = params.get("W"), params.get("M")
    if W is None:
        random_kwargs = {k: v for k, v in params.items() if k not in fixed and k != "regularize_kwargs"}
        W, M = compute_whitening_matrix(
            plan.recording(),
            params.get("mode", "global"),
            random_kwargs,
            params.get("apply_mean", False),
            radius_um=params.get("radius_um", 100.0),
            eps=params.get("eps"),
            regularize=params.get("regularize", False),
            regularize_kwargs=params.get("regularize_kwargs"),
        )
    plan.shadow = spre.whiten(plan.shadow, **{**params, "W": W, "M": M})
    W = np.asarray(W, dtype=np.float64)
    scale = float(params.get("int_scale") or 1.0)
    bias = None if M is None else -(np.asarray(M, dtype=np.float64).reshape(1, -1) @ W).ravel() * scale
    plan.add(Affine(lambda _b: W * scale, np.zeros(1, dtype=np.int64), bias))


def _scale(plan: Plan, params: dict) -> None:
    _check("scale", params, {"gain": _any, "offset": _any, "dtype": _float_dtype})
    plan.shadow = spre.scale(plan.shadow, **params)
    segment = plan.shadow.segments[0]
    plan.add(GainStage(segment.gain.ravel(), segment.offset.ravel()))


def _drift_correction(plan: Plan, motion: Motion | None, kwargs: dict) -> None:
    allowed = {
        k: _any for k in ("border_mode", "spatial_interpolation_method", "sigma_um", "p", "num_closest")
    }
    allowed |= {k: _any for k in ("interpolation_time_bin_centers_s", "interpolation_time_bin_edges_s")}
    allowed |= {
        "interpolation_time_bin_size_s": _any,
        "dtype": _float_dtype,
        "sparse_thresh": lambda v: v is None,
    }
    _check("drift_correction.interpolate_motion_kwargs", kwargs, allowed)
    parent = plan.shadow
    plan.shadow = interpolate_motion(parent, motion, **kwargs)
    segment = plan.shadow.segments[0]
    # As the segment's get_traces: only the edges are passed on, the centres re-derived from them (the
    # first and last centres then differ from the motion's own bins).
    centers, edges = ensure_time_bins(None, segment.interpolation_time_bin_edges_s)
    locations = segment.channel_locations
    depths = locations[:, motion.dim]
    displacements = np.stack(
        [
            motion.get_displacement_at_time_and_depth(np.full(depths.size, t), depths, segment_index=0)
            for t in centers
        ]
    )
    matrices = MotionMatrices(locations, displacements, motion.dim, segment.channel_inds, _kernel(segment))
    starts = _bin_starts(parent, edges)
    plan.add(Affine(matrices, starts))


def _kernel(segment) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    kwargs = dict(segment.spatial_interpolation_kwargs)
    method = segment.spatial_interpolation_method
    if method == "kriging":
        return KrigingKernel(
            segment.channel_locations, kwargs["sigma_um"], kwargs["p"], kwargs.get("force_extrapolate", False)
        )
    from spikeinterface.preprocessing import get_spatial_interpolation_kernel

    return partial(get_spatial_interpolation_kernel, method=method, dtype="float32", **kwargs)


def _bin_starts(parent: BaseRecording, edges: np.ndarray) -> np.ndarray:
    """First frame of each interpolation bin: frames f with edges[b] <= time(f) go to bin b or later."""
    parent_segment, num_frames, fs = (
        parent.segments[0],
        parent.get_num_samples(),
        parent.get_sampling_frequency(),
    )
    starts = np.zeros(len(edges) - 1, dtype=np.int64)
    t0 = float(parent_segment.sample_index_to_time(np.array([0]))[0])
    for b in range(1, len(starts)):
        frame = int(np.clip(np.ceil((edges[b] - t0) * fs), 0, num_frames))
        # The estimate may be one frame off in float arithmetic: settle it with the segment's own times.
        while frame > 0 and parent_segment.sample_index_to_time(np.array([frame - 1]))[0] >= edges[b]:
            frame -= 1
        while frame < num_frames and parent_segment.sample_index_to_time(np.array([frame]))[0] < edges[b]:
            frame += 1
        starts[b] = frame
    return starts


BUILDERS: dict[str, Callable[[Plan, dict], None]] = {
    "bandpass_filter": partial(_filter, name="bandpass_filter"),
    "highpass_filter": partial(_filter, name="highpass_filter"),
    "phase_shift": _phase_shift,
    "common_reference": _common_reference,
    "whiten": _whiten,
    "scale": _scale,
    **{name: partial(_bad_channels, name=name) for name in BAD_CHANNEL_STEPS},
}
