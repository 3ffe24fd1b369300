"""The sort step: run the chosen sorter on recording.dat as it lies; phy/Kilosort files in sorter_output."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from containers.runtime.stepping import StepContext
from tasks.core.atomic import TMP_MARK, atomic_path, fsync_dir
from tasks.core.errors import UserError, warn
from tasks.core.layout import SortingDir
from tasks.inputs.segments import read_segments
from tasks.phy.validation import validate_sorter_output
from tasks.steps.registry import CURATION_FILES

SI_SORTERS = ("tridesclous2", "spykingcircus2", "lupin")
KILOSORTS = ("kilosort4", "kilosort2_5")
SORTERS = SI_SORTERS + KILOSORTS
DAT_NAME = "recording.dat"
DAT_DTYPE = "int16"
RUN_PREFIX = f"run{TMP_MARK}"  # the sorter's working folder, inside sorter_output
# Never moved from a sorter's folder into sorter_output: phy's curation files are manual work, and the
# data files are copies we did not ask for (the one recording.dat is the recording_dat step's).
NOT_MOVED = frozenset((*CURATION_FILES, DAT_NAME, "temp_wh.dat"))
PHY_SPIKES_PER_UNIT = 100  # for templates: phy shows them; the sorter already chose its units
PHY_PC_COMPONENTS = 3  # Kilosort 2.5's nPCs: the cheapest feature view that phy's curation still uses


@dataclass(frozen=True)
class DatInfo:
    path: Path
    num_channels: int
    sampling_frequency: float
    num_samples: int
    gain_to_uV: float | None  # None when the int16 values are not microvolts (whitened and scaled)


def _first(mapping: dict, *keys: str):
    return next((mapping[k] for k in keys if mapping.get(k) is not None), None)


def dat_info(sorting: SortingDir) -> DatInfo:
    """Shape of recording.dat: from the recording_dat manifest, else the probe file and the segment table."""
    path = sorting.sorter_output / DAT_NAME
    if not path.is_file():
        raise UserError(f"{path}: missing; run the recording_dat step first")
    try:
        manifest = json.loads(sorting.manifest("recording_dat").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        manifest = {}
    num_channels = _first(manifest, "num_channels", "n_channels", "n_channels_dat")
    if num_channels is None:
        from probeinterface import read_probeinterface

        num_channels = read_probeinterface(sorting.root / "preprocessed_si_probe.json").get_contact_count()
    rate = _first(manifest, "sampling_frequency", "sample_rate", "sampling_rate")
    if rate is None:
        rate = float(read_segments(sorting.segments)["imSampRate"].iloc[0])
    num_channels, size = int(num_channels), path.stat().st_size
    frame_bytes = num_channels * np.dtype(DAT_DTYPE).itemsize
    if size == 0 or size % frame_bytes:
        raise UserError(
            f"{path}: {size} bytes is not a whole number of {num_channels}-channel int16 frames; "
            "rerun the recording_dat step"
        )
    recorded = manifest.get("num_samples")
    if recorded is not None and int(recorded) != size // frame_bytes:
        raise UserError(
            f"{path}: {size // frame_bytes} samples but its manifest says {recorded}; "
            "rerun the recording_dat step"
        )
    gain = _first(manifest, "gain_to_uV", "gain_to_uv")
    return DatInfo(
        path, num_channels, float(rate), size // frame_bytes, None if gain is None else float(gain)
    )


def open_recording_dat(sorting: SortingDir, info: DatInfo | None = None):
    """recording.dat as a BinaryRecordingExtractor with the preprocessed probe: no copy, no rewrite."""
    from probeinterface import read_probeinterface
    from spikeinterface.core import BinaryRecordingExtractor

    info = info or dat_info(sorting)
    recording = BinaryRecordingExtractor(
        file_paths=[info.path],
        sampling_frequency=info.sampling_frequency,
        dtype=DAT_DTYPE,
        num_channels=info.num_channels,
        gain_to_uV=info.gain_to_uV,
        offset_to_uV=None if info.gain_to_uV is None else 0.0,
        is_filtered=True,  # the chain band-passed it; tells phy (hp_filtered) and the sorters
    )
    probe_path = sorting.root / "preprocessed_si_probe.json"
    probegroup = read_probeinterface(probe_path)
    if probegroup.get_contact_count() != info.num_channels:
        raise UserError(
            f"{probe_path}: {probegroup.get_contact_count()} contacts but {info.path} has "
            f"{info.num_channels} channels; rerun the preprocessed_probe and recording_dat steps"
        )
    recording.set_probegroup(probegroup)
    return recording


def _check_available(name: str) -> None:
    """UserError, before anything is written, when the sorter cannot run in this environment."""
    if name not in SORTERS:
        raise UserError(
            f"opts.yaml sorting.sorter_name {name!r}: not supported; use one of {', '.join(SORTERS)}"
        )
    if name == "kilosort4":
        if importlib.util.find_spec("torch") is None:
            raise UserError(
                "kilosort4 needs torch: use the si image (wisc-sort images build si) or pip install torch"
            )
        if importlib.util.find_spec("kilosort") is None:
            raise UserError("kilosort4 needs the kilosort package: use the si image or pip install kilosort")
    if name == "kilosort2_5":
        from spikeinterface.sorters import Kilosort2_5Sorter

        if not Kilosort2_5Sorter.is_installed():
            raise UserError("kilosort2_5 needs the ks25 image (wisc-sort --executor docker)")


def _cuda_device() -> str | None:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return visible.split(",")[0] if visible and visible not in ("-1", "none", "NoDevFiles") else None


def _sorter_params(name: str, ctx: StepContext) -> tuple[dict, str]:
    """The options' sorter_params with our job settings and device; and the device, for the manifest."""
    params = dict(ctx.opts["sorting"].get("sorter_params") or {})
    if name in SI_SORTERS:
        # n_jobs is the scheduler's: it reserved that many cores for this step.
        params["job_kwargs"] = {**ctx.job_kwargs, **(params.get("job_kwargs") or {}), "n_jobs": ctx.n_jobs}
        return params, "cpu"
    params["n_jobs"] = ctx.n_jobs  # only used should SpikeInterface copy the recording; it does not here
    cuda = _cuda_device()
    if name == "kilosort4":
        from containers.sorters import kilosort4

        return kilosort4.sorter_params(params, cuda)
    return params, f"cuda:{cuda}" if cuda is not None else "cuda"


def whole_batches_trange(num_samples: int, nt: int, fs: float, what: str) -> list[float]:
    """Kilosort's `ops.trange` (seconds) covering the whole batches of NT samples, warning about the rest."""
    whole = num_samples // nt * nt
    if whole == 0:
        raise UserError(f"{what}: {num_samples} samples, shorter than one Kilosort batch (NT {nt})")
    if whole == num_samples:
        return [0.0, float("inf")]
    warn(
        f"kilosort2_5: the last {(num_samples - whole) / fs:.2f} s of {what} (under one batch) are not sorted"
    )
    # Kilosort takes tend = ceil(trange[1] * fs): half a sample short lands exactly on the batch edge.
    return [0.0, (whole - 0.5) / fs]


def _kilosort2_5_in_place():
    """Kilosort 2.5 reading recording.dat itself.

    SpikeInterface 0.105 (kilosortbase._setup_recording) reuses a binary-compatible int16 file only when
    Kilosort does its own preprocessing. With `skip_kilosort_preprocessing` (the lab's setting: our chain
    whitened and scaled) it always writes a zero-padded copy into its folder, because Kilosort then reads the
    input as its whitened batches and a short last batch would run past the file's end: a second 1.8 TiB
    file for a day of recording. Here the ops point at recording.dat and `trange` stops at the last whole
    batch instead; the tail (under NT samples, ~2.2 s) is left unsorted, with a warning.
    """
    from spikeinterface.sorters import Kilosort2_5Sorter

    class Kilosort2_5InPlace(Kilosort2_5Sorter):
        @classmethod
        def _setup_recording(cls, recording, sorter_output_folder, params, verbose):
            cls._generate_channel_map_file(recording, sorter_output_folder)
            dat = Path(recording.get_binary_description()["file_paths"][0])
            cls._generate_ops_file(recording, params, sorter_output_folder, dat)

        @classmethod
        def _get_specific_options(cls, ops, params):
            ops = super()._get_specific_options(ops, params)
            if params["skip_kilosort_preprocessing"]:
                n = Path(ops["fbinary"]).stat().st_size // (2 * int(ops["NchanTOT"]))
                ops["trange"] = whole_batches_trange(n, int(params["NT"]), ops["fs"], ops["fbinary"])
            return ops

    return Kilosort2_5InPlace


def sorter_class(name: str):
    """SpikeInterface's sorter class for `name`; ours for kilosort2_5 (recording.dat read in place)."""
    from spikeinterface.sorters import sorter_dict

    return _kilosort2_5_in_place() if name == "kilosort2_5" else sorter_dict[name]


def _run_sorter(sorter, recording, folder: Path, params: dict, verbose: bool = True) -> None:
    """spikeinterface.sorters.run_sorter_local's sequence, so that a subclass (Kilosort 2.5) can run too.

    `folder` is our own working folder: the Kilosort wrappers delete `<folder>/sorter_output/recording.dat`
    after a run (delete_recording_dat), which must never be the recording_dat step's file.
    """
    folder = sorter.initialize_folder(recording, folder, True, True)
    sorter.set_params_to_folder(recording, folder, params, True)
    sorter.setup_recording(recording, folder, verbose=verbose)
    sorter.run_from_folder(folder, True, verbose)


def _export_phy(sorter, run_dir: Path, recording, phy_dir: Path, job_kwargs: dict) -> None:
    """A SpikeInterface sorter's result in phy's template-gui format, the recording itself not copied."""
    from spikeinterface.core import create_sorting_analyzer
    from spikeinterface.exporters import export_to_phy

    result = sorter.get_result_from_folder(run_dir, register_recording=False, sorting_info=False)
    result = result.remove_empty_units()  # export_to_phy drops them, misaligning spike_clusters and templates
    if result.get_num_units() == 0:
        raise ValueError(f"{run_dir}: the sorter found no units")
    analyzer = create_sorting_analyzer(
        result, recording, format="memory", sparse=True, return_in_uV=recording.has_scaleable_traces()
    )
    analyzer.compute("random_spikes", max_spikes_per_unit=PHY_SPIKES_PER_UNIT, seed=0)
    # waveforms of the few random spikes: the PCA basis needs them (cheap: sparse, 100 per unit)
    analyzer.compute(["waveforms", "templates"], **job_kwargs)
    analyzer.compute(
        "principal_components", n_components=PHY_PC_COMPONENTS, mode="by_channel_local", **job_kwargs
    )
    export_to_phy(
        analyzer,
        phy_dir,
        compute_pc_features=True,
        compute_amplitudes=True,
        copy_binary=False,
        add_quality_metrics=False,
        add_template_metrics=False,
        verbose=False,
        **job_kwargs,
    )
    # SpikeInterface writes every unit as "unsorted" in cluster_group.tsv, phy's curation file: keep it out of
    # sorter_output and give phy the sorter's (absent) judgement as Kilosort does, in cluster_KSLabel.tsv.
    (phy_dir / "cluster_group.tsv").unlink(missing_ok=True)
    ids = np.arange(result.get_num_units())
    (phy_dir / "cluster_KSLabel.tsv").write_text(
        "cluster_id\tKSLabel\n" + "".join(f"{i}\tunsorted\n" for i in ids)
    )


def params_text(info: DatInfo) -> str:
    """phy's params.py for recording.dat beside it (relative: the sorting can move without a rewrite)."""
    return (
        f"dat_path = {DAT_NAME!r}\n"
        f"n_channels_dat = {info.num_channels}\n"
        f"dtype = {DAT_DTYPE!r}\n"
        "offset = 0\n"
        f"sample_rate = {info.sampling_frequency!r}\n"
        "hp_filtered = True\n"
    )


def _install(phy_dir: Path, dest: Path) -> list[str]:
    """Move the sorter's files into sorter_output (same filesystem: renames), params.py last: it is the lab's
    "sort finished" marker, so a sort killed while moving never looks done."""
    moved = []
    for entry in sorted(phy_dir.iterdir()):
        if entry.name in NOT_MOVED or entry.name == "params.py":
            continue
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
        moved.append(entry.name)
    fsync_dir(dest)
    with atomic_path(dest / "params.py") as tmp:
        shutil.copyfile(phy_dir / "params.py", tmp)
    return moved + ["params.py"]


def _remove_old_runs(dest: Path) -> None:
    """Working folders of killed sorts (the step owns sorter_output: nothing else lives under that name)."""
    for entry in dest.glob(f"{RUN_PREFIX}*"):
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run(ctx: StepContext) -> None:
    sorting_opts = ctx.opts.get("sorting") or {}
    name = sorting_opts.get("sorter_name")
    _check_available(str(name))
    info = dat_info(ctx.sorting)
    recording = open_recording_dat(ctx.sorting, info)
    params, device = _sorter_params(name, ctx)
    sorter = sorter_class(name)
    dest = ctx.sorting.sorter_output
    _remove_old_runs(dest)
    run_dir = dest / f"{RUN_PREFIX}{os.getpid()}"
    ctx.progress.label = (
        f"{ctx.progress.label} ({name}, {info.num_samples / info.sampling_frequency / 3600:.2f} h)"
    )

    started = time.monotonic()
    if name == "kilosort4":  # Kilosort's log drives the progress; its verbose mode costs time
        from containers.sorters import kilosort4

        if device == "cpu":
            warn(kilosort4.cpu_note(info.num_samples / info.sampling_frequency, info.num_channels, params))
        with kilosort4.progress_from_log(ctx.progress, params):
            _run_sorter(sorter, recording, run_dir, params, verbose=False)
    else:
        _run_sorter(sorter, recording, run_dir, params)
    sorter_s = time.monotonic() - started
    if name in SI_SORTERS:
        phy_dir = run_dir / "phy"
        ctx.progress.update(90.0, "(export to phy)", force=True)
        _export_phy(sorter, run_dir, recording, phy_dir, params["job_kwargs"])
    else:
        phy_dir = run_dir / "sorter_output"  # Kilosort writes phy's format itself
    # Checked (the sorter's own params.py too: Kilosort leaves it empty when it crashes) before anything
    # moves: a failed sort leaves sorter_output as it was, plus its run folder, which the Luigi task moves
    # aside with the partial output.
    summary = validate_sorter_output(phy_dir, info.num_samples)
    (phy_dir / "params.py").write_text(params_text(info))
    moved = _install(phy_dir, dest)
    shutil.rmtree(run_dir)
    ctx.extra.update(
        sorter_name=name,
        sorter_version=str(sorter.get_sorter_version()),
        device=device,
        n_units=summary.n_units,
        n_spikes=summary.n_spikes,
        sorter_run_s=round(sorter_s, 1),
        total_run_s=round(time.monotonic() - started, 1),
        recording_dat={"num_channels": info.num_channels, "num_samples": info.num_samples},
        files=moved,
    )
