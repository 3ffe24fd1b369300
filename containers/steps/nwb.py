"""The nwb step: the sorting as one NWB file (nwb/sorting.nwb) for DANDI and collaborators.

Electrodes from the preprocessed probe; units with spike times in seconds of the concatenated (kept)
recording and, through the segment table, per file; phy's cluster id and curation group, every column of the
postprocessing set's metrics.csv (per-state metrics included) and mean waveforms; the segment table and the
motion estimates as processing data (processing/ecephys); options, versions and step manifests (provenance).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from containers.runtime.stepping import StepContext
from tasks.core.atomic import atomic_path
from tasks.core.errors import UserError
from tasks.core.manifest import package_versions, read_manifest
from tasks.inputs.segments import KEEP, frame_to_file, read_segments
from tasks.steps.nwb_inputs import nwb_set
from tasks.steps.postpro_stages import METRICS_CSV, PostproSet
from tasks.steps.postpro_state import postpro_status
from tasks.steps.registry import NWB_FILE, STEPS

MOTION_FILES = {"motion_clean": "motion_non_rigid_clean.npz", "motion": "motion_non_rigid.npz"}


def _session_start(segments: pd.DataFrame) -> datetime:
    """The first file's fileCreateTime (the rig's local clock: read as this host's time zone)."""
    created = segments["fileCreateTime"].iloc[0] if "fileCreateTime" in segments else None
    start = pd.Timestamp(created).to_pydatetime() if created is not None and pd.notna(created) else None
    return (start or datetime(1970, 1, 1)).astimezone()


def _nwbfile(ctx: StepContext, segments: pd.DataFrame, subject_info: dict):
    from pynwb import NWBFile
    from pynwb.file import Subject

    first, root = segments.iloc[0], ctx.sorting.root
    subject = Subject(
        subject_id=str(first.get("subject", root.parent.name)),
        species=subject_info.get("species"),
        sex=subject_info.get("sex", "U"),
        age=subject_info.get("age"),
        description=f"subject of {root}",
    )
    return NWBFile(
        session_description=f"spike sorting {root} ({segments['fname'].nunique()} files)",
        identifier=f"wisc-sorting:{root}:{ctx.extra['signature']}",
        session_start_time=_session_start(segments),
        session_id=str(first.get("session", "")) or None,
        experiment_description=f"experiment {root.parents[2].name}, alias {root.parents[1].name}",
        keywords=["spike sorting", "Neuropixels", "SpikeGLX"],
        subject=subject,
        source_script="wisc-sorting (python -m containers nwb)",
        source_script_file_name="containers/steps/nwb.py",
    )


def _electrodes(nwbfile, probe_file: Path) -> int:
    """One row per channel of the preprocessed recording, in channel order (the templates' channel order)."""
    import probeinterface

    group_of_probes = probeinterface.read_probeinterface(probe_file)
    device = nwbfile.create_device(name="Neuropixels", description="IMEC Neuropixels probe, SpikeGLX")
    nwbfile.add_electrode_column(name="channel_name", description="contact id after preprocessing")
    rows = []
    for index, probe in enumerate(group_of_probes.probes):
        group = nwbfile.create_electrode_group(
            name=f"probe{index}", description=str(probe.annotations.get("model_name", "probe")),
            location="unknown", device=device,
        )  # fmt: skip
        n = probe.get_contact_count()
        ids = probe.contact_ids if len(probe.contact_ids) else [str(i) for i in range(n)]
        channels = probe.device_channel_indices
        channels = np.arange(len(rows), len(rows) + n) if channels is None else channels
        rows += [
            (int(c), group, xy, str(i))
            for c, xy, i in zip(channels, probe.contact_positions, ids, strict=True)
        ]
    for _, group, (x, y, *_), name in sorted(rows, key=lambda row: row[0]):
        nwbfile.add_electrode(
            group=group, location="unknown", rel_x=float(x), rel_y=float(y), channel_name=name
        )
    return len(rows)


def _load_units(ctx: StepContext, pset: PostproSet):
    """(sorting with phy's curation, analyzer unit -> row, mean waveforms units x samples x channels in volts
    or the recording's units, their unit name, ms before the peak)."""
    import warnings

    from spikeinterface.core import load_sorting_analyzer

    from containers.postpro.run import load_sorting

    sorting = load_sorting(ctx.sorting.sorter_output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "recording not found": templates need no recording
        analyzer = load_sorting_analyzer(pset.analyzer, load_extensions=True)
    templates = analyzer.get_extension("templates")
    waveforms = templates.get_data(operator="average")
    in_uv = bool(getattr(analyzer, "return_in_uV", False))
    waveforms, unit = (waveforms * 1e-6, "volts") if in_uv else (waveforms, "counts of recording.dat")
    index = {unit_id: i for i, unit_id in enumerate(np.asarray(analyzer.unit_ids).astype(np.int64))}
    return sorting, index, waveforms, unit, float(templates.params["ms_before"])


def _per_file(segments: pd.DataFrame, frames: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames of the kept recording -> (segment-table row, seconds within that row's file)."""
    if frames.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    _, within = frame_to_file(segments, frames)
    keep = segments.index[segments["type"] == KEEP].to_numpy()
    rows = keep[np.searchsorted(segments.loc[keep, "keepStartFrame"].to_numpy(), frames, side="right") - 1]
    return rows.astype(np.int64), np.asarray(within) / rate


def _metrics(path: Path) -> pd.DataFrame:
    """metrics.csv with text columns as text ("" where empty) and numbers as numbers (NaN where missing)."""
    table = pd.read_csv(path, index_col="cluster_id")
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]) or pd.api.types.is_bool_dtype(table[column]):
            table[column] = table[column].fillna("").astype(str)
    table.index = table.index.astype(np.int64)
    return table


def _ragged(name: str, description: str, arrays: list[np.ndarray], dtype) -> list:
    """A ragged column in one piece (a data array and its index): a day of spikes, not a list per unit."""
    from hdmf.common import VectorData, VectorIndex

    joined = np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)
    data = VectorData(name=name, description=description, data=joined)
    ends = np.cumsum([len(a) for a in arrays], dtype=np.int64).astype(np.uint64)
    return [data, VectorIndex(name=f"{name}_index", data=ends, target=data)]


def _units(nwbfile, ctx, pset, segments: pd.DataFrame, n_electrodes: int) -> dict:
    from hdmf.common import DynamicTableRegion, VectorData, VectorIndex
    from pynwb.misc import Units

    sorting, index, waveforms, unit_name, ms_before = _load_units(ctx, pset)
    rate = sorting.get_sampling_frequency()
    metrics = _metrics(pset.folder / METRICS_CSV)
    if waveforms.shape[2] != n_electrodes:
        raise RuntimeError(
            f"{pset.analyzer}: templates on {waveforms.shape[2]} channels, probe {n_electrodes}"
        )
    ids = [int(unit) for unit in sorting.unit_ids]
    missing = sorted(set(ids) - set(metrics.index) - set(index))
    if missing:
        raise UserError(f"{pset.folder}: units {missing[:20]} lack metrics; rerun `wisc-sort postpro`")
    frames = [np.asarray(sorting.get_unit_spike_train(unit), dtype=np.int64) for unit in sorting.unit_ids]
    per_file = [_per_file(segments, unit_frames, rate) for unit_frames in frames]
    region = DynamicTableRegion(
        name="electrodes", description="the electrodes of each unit's mean waveform",
        data=np.tile(np.arange(n_electrodes), len(ids)), table=nwbfile.electrodes,
    )  # fmt: skip
    columns = [
        VectorData(name="cluster_id", description="phy's cluster id", data=np.asarray(ids, dtype=np.int64)),
        *_ragged("spike_times", "seconds of the kept recording", [f / rate for f in frames], np.float64),
        *_ragged("spike_segment", "row of processing/ecephys/segments", [r for r, _ in per_file], np.int64),
        *_ragged("spike_times_in_file", "seconds within that file", [t for _, t in per_file], np.float64),
        region,
        VectorIndex(name="electrodes_index", data=np.arange(1, len(ids) + 1) * n_electrodes, target=region),
        VectorData(name="waveform_mean", description="mean waveform (time x electrodes) of each unit",
                   data=waveforms[[index[i] for i in ids]]),
    ]  # fmt: skip
    for column in metrics.columns:
        values = metrics.loc[ids, column]
        data = values.tolist() if values.dtype == object else values.to_numpy()
        columns.append(
            VectorData(name=column, description=f"{METRICS_CSV} {column} ({pset.name})", data=data)
        )
    nwbfile.units = Units(
        name="units", id=ids, columns=columns, description="units after phy curation",
        waveform_rate=float(rate), waveform_unit=unit_name, waveform_time_before_peak_in_ms=ms_before,
        resolution=1.0 / rate,
    )  # fmt: skip
    return {"units": len(ids), "spikes": int(sum(len(f) for f in frames))}


def _table(frame: pd.DataFrame, name: str, description: str, what: str):
    """A DynamicTable from a frame: text columns as text, each column described."""
    from hdmf.common import DynamicTable

    frame = frame.reset_index(drop=True).copy()
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype(str)
    columns = [{"name": str(c), "description": f"{what} column {c}"} for c in frame.columns]
    return DynamicTable.from_dataframe(frame, name=name, table_description=description, columns=columns)


def _motion_tables(path: Path, step: str) -> list:
    """The displacement (one row per time bin, one value per depth bin) and its depth bins: tables, not a
    TimeSeries, since a short recording has fewer time bins than depth bins."""
    from hdmf.common import DynamicTable, VectorData

    with np.load(path, allow_pickle=False) as data:
        displacement, times = data["displacement_seg0"], data["temporal_bins_s_seg0"]
        depths = data["spatial_bins_um"]
    columns = [
        VectorData(name="time_s", description="centre of the time bin, s of the kept recording", data=times),
        VectorData(name="displacement_um", description="displacement per depth bin (um)", data=displacement),
    ]
    depth = [VectorData(name="depth_um", description="depth of the bin's centre (um)", data=depths)]
    return [
        DynamicTable(name=step, description=f"{path.name}: motion of the kept recording", columns=columns),
        DynamicTable(name=f"{step}_depth_bins", description=f"{path.name}: depth bins", columns=depth),
    ]


def _processing(nwbfile, ctx: StepContext, segments: pd.DataFrame, pset: PostproSet) -> None:
    import yaml

    module = nwbfile.create_processing_module(
        name="ecephys", description="wisc-sorting: how the units were made"
    )
    what = "the AP segment table: kept segments concatenated make the sorted recording"
    module.add(_table(segments, "segments", what, "segments.htsv"))
    for step, name in MOTION_FILES.items():
        if (ctx.sorting.preprocessing / name).is_file():
            for table in _motion_tables(ctx.sorting.preprocessing / name, step):
                module.add(table)
    records = [("opts.yaml", ctx.sorting.opts.read_text()), ("postpro_opts.yaml", pset.opts.read_text())]
    records.append(("versions", yaml.safe_dump(package_versions(), sort_keys=False)))
    for step in STEPS:
        manifest = read_manifest(ctx.sorting, step)
        if manifest is not None:
            records.append((f"manifest {step}", yaml.safe_dump(manifest, sort_keys=False)))
    provenance = pd.DataFrame(records, columns=["item", "text"])
    module.add(_table(provenance, "provenance", "options, versions and step manifests (YAML)", "provenance"))


def run(ctx: StepContext) -> None:
    try:
        from pynwb import NWBHDF5IO
    except ImportError:
        raise UserError(
            "pynwb is not installed where the nwb step runs: pip install -e '.[si]' (or rebuild the si image)"
        ) from None

    name = nwb_set(ctx.opts)
    pset = PostproSet(ctx.sorting, name)
    state = postpro_status(ctx.sorting, name)
    if state != "done":
        raise UserError(
            f"{pset.folder}: postprocessing is {state}; run `wisc-sort postpro --postpro {name}` first"
        )
    segments = read_segments(ctx.sorting.segments)
    from tasks.steps.registry import expected

    ctx.extra["signature"] = expected(ctx.sorting, "nwb").signature
    nwbfile = _nwbfile(ctx, segments, ctx.opts.get("nwb") or {})
    n_electrodes = _electrodes(nwbfile, ctx.sorting.root / "preprocessed_si_probe.json")
    ctx.extra.update(_units(nwbfile, ctx, pset, segments, n_electrodes))
    _processing(nwbfile, ctx, segments, pset)
    ctx.extra["postpro"] = name
    with atomic_path(ctx.sorting.path(NWB_FILE)) as tmp, NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwbfile)
