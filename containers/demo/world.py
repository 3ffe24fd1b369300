"""The demo world: the lab's situation in miniature (projects, a subject, drifting NP1.0 SpikeGLX data, a flat
bout) with its ground truth, small enough to sort on a 2-core laptop without GPU, Docker or internet."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from probeinterface import Probe
from spikeinterface.core import BaseRecording, BaseRecordingSegment, BaseSorting

from containers.demo.sglx_writer import np1_probe, write_spikeglx_file
from tasks.core.errors import UserError
from tasks.inputs.demo import ALIAS, EXPERIMENT, PROBE, SUBJECT

SESSIONS = ("1-10-2026", "1-11-2026")
SAMPLING_RATE = 30000.123  # calibrated, non-integer, as real imec clocks are
DRIFT_UM = 25.0  # peak-to-peak zigzag
DRIFT_MIN_PERIOD_S = 60.0
NOISE_UV = (6.0, 8.0)  # per-channel RMS range, typical of NP1.0 AP bands
NOISE_DECAY_UM = 25.0  # spatial correlation length of the noise
MARKER = ".wisc-demo-world"  # lets --overwrite tell a demo world from any other folder
EXCLUSIONS_HEADER = "fname\twithinFileStartTime\twithinFileEndTime\ttype"


@dataclass(frozen=True)
class DemoFile:
    """One AP file of the world: where it lies in the one continuous generated recording."""

    session: str
    trigger: int
    bin_path: Path
    start_frame: int  # in the continuous generated timeline
    num_samples: int
    first_sample: int
    create_time: datetime
    extra_meta: dict[str, str]


@dataclass(frozen=True)
class DemoWorld:
    """What `write_demo_world` wrote: names, files in alias order, the flat bout and the kept length."""

    folder: Path
    bin_paths: tuple[Path, ...]  # in alias order
    flat_fname: str  # the file holding the flat bout
    flat_start_s: float  # within that file
    flat_end_s: float
    flat_frames: tuple[int, int]  # [start, end) in that file: int(t * imSampRate), as the segment table
    kept_num_samples: int
    num_units: int
    subject: str = SUBJECT
    experiment: str = EXPERIMENT
    alias: str = ALIAS
    probe: str = PROBE
    sessions: tuple[str, ...] = SESSIONS
    sampling_rate: float = SAMPLING_RATE

    projects_file = property(lambda self: self.folder / "projects.yaml")
    subjects_dir = property(lambda self: self.folder / "subjects")
    subject_file = property(lambda self: self.subjects_dir / f"{self.subject}.yml")
    raw_dir = property(lambda self: self.folder / "raw" / self.subject)
    exclusions_file = property(
        lambda self: (
            self.folder / "shared" / self.experiment / self.subject / f"{self.probe}.ap.artifacts.htsv"
        )
    )
    ground_truth_dir = property(lambda self: self.folder / "ground_truth")
    readme = property(lambda self: self.folder / "README.txt")


class _NoiseSegment(BaseRecordingSegment):
    def __init__(self, rate: float, num_samples: int, mixing: np.ndarray, levels: np.ndarray, seed: int):
        super().__init__(sampling_frequency=rate)
        self.num_samples, self.mixing, self.levels, self.seed = num_samples, mixing, levels, seed
        self.block = int(round(rate))
        self._cache: dict[int, np.ndarray] = {}

    def get_num_samples(self) -> int:
        return self.num_samples

    def _block(self, index: int) -> np.ndarray:
        # Seeded by (seed, block) so any chunking gives the same noise; keep two blocks because file
        # boundaries do not fall on block boundaries.
        if index not in self._cache:
            rng = np.random.default_rng((self.seed, index))
            white = rng.standard_normal((self.block, self.mixing.shape[0]), dtype=np.float32)
            self._cache = {k: v for k, v in self._cache.items() if k == index - 1}
            self._cache[index] = (white @ self.mixing) * self.levels
        return self._cache[index]

    def get_traces(
        self, start_frame: int | None = None, end_frame: int | None = None, channel_indices: object = None
    ) -> np.ndarray:
        start = 0 if start_frame is None else start_frame
        end = self.num_samples if end_frame is None else end_frame
        blocks = range(start // self.block, (end - 1) // self.block + 1) if end > start else range(0)
        out = np.concatenate([self._block(b) for b in blocks] or [np.zeros((0, self.mixing.shape[0]), "f4")])
        offset = start - (start // self.block) * self.block
        traces = out[offset : offset + end - start]
        return traces if channel_indices is None else traces[:, channel_indices]


class CorrelatedNoiseRecording(BaseRecording):
    """Gaussian noise with covariance exp(-distance / decay) between contacts and per-channel RMS `levels`.

    SpikeInterface's correlated generator draws `multivariate_normal` (an SVD and a float64 product) per
    block, about 1 s per second of 384-channel data; a fixed Cholesky factor in float32 is ~6x cheaper.
    """

    def __init__(
        self, probe: Probe, sampling_frequency: float, num_samples: int, levels: np.ndarray, seed: int
    ):
        locations = probe.contact_positions
        cov = np.exp(-np.linalg.norm(locations[:, None] - locations[None], axis=2) / NOISE_DECAY_UM)
        mixing = np.linalg.cholesky(cov).T.astype(np.float32)  # white @ mixing has covariance cov
        channel_ids = [str(i) for i in range(len(locations))]
        super().__init__(sampling_frequency=sampling_frequency, channel_ids=channel_ids, dtype="float32")
        levels = levels.astype(np.float32)
        self.add_recording_segment(_NoiseSegment(sampling_frequency, num_samples, mixing, levels, seed))
        self._kwargs = dict(probe=probe, sampling_frequency=sampling_frequency, num_samples=num_samples)
        self._kwargs.update(levels=levels, seed=seed)


def _generate(
    duration_s: float, num_units: int, seed: int, probe: Probe | None = None
) -> tuple[BaseRecording, BaseSorting, dict, np.ndarray]:
    """One continuous drifting NP1.0 recording (float uV; or on `probe`, e.g. fewer channels for a CPU
    benchmark), its sorting, the generator's extras, noise RMS."""
    from spikeinterface.generation import generate_drifting_recording
    from spikeinterface.generation.drift_tools import InjectDriftingTemplatesRecording

    probe = np1_probe(SAMPLING_RATE) if probe is None else probe
    half = DRIFT_UM / 2
    # At least a minute per zigzag: drift slower than the motion bins (10 s), as on a real probe.
    period_s = max(duration_s / 2, DRIFT_MIN_PERIOD_S)
    zigzag = dict(drift_mode="zigzag", non_rigid_gradient=None, t_start_drift=0.0, period_s=period_s)
    _, drifting, sorting, extra = generate_drifting_recording(
        num_units=num_units,
        duration=duration_s,
        sampling_frequency=SAMPLING_RATE,
        probe=probe,
        generate_displacement_vector_kwargs=dict(
            displacement_sampling_frequency=5.0,
            drift_start_um=[0, half],
            drift_stop_um=[0, -half],
            drift_step_um=1,  # templates precomputed at 1 um steps: a few seconds, not the bottleneck
            motion_list=[zigzag],
        ),
        extra_outputs=True,
        seed=seed,
    )
    # Same spikes and templates over our cheaper noise (the generator's own noise is never computed).
    levels = np.random.default_rng(seed).uniform(*NOISE_UV, size=probe.get_contact_count())
    noise = CorrelatedNoiseRecording(probe, SAMPLING_RATE, drifting.get_num_samples(0), levels, seed)
    recording = InjectDriftingTemplatesRecording(**{**drifting._kwargs, "parent_recording": noise})
    return recording, sorting, extra, levels


def _plan_files(raw_dir: Path, num_samples: int) -> list[DemoFile]:
    """Session 1: triggers t0 and t1 (timed trigger, 1 s apart); session 2 (next day): t0 with the rest."""
    quarter = num_samples // 4
    rest = num_samples - 2 * quarter
    sizes = [(SESSIONS[0], 0, quarter), (SESSIONS[0], 1, quarter), (SESSIONS[1], 0, rest)]
    gap = int(SAMPLING_RATE)  # samples between timed triggers, not recorded
    timed = dict(trigMode="Timed", trgTimIsHInf="false", trgTimIsNInf="false", trgTimNH="2", trgTimTL="1")
    timed.update(trgTimTH=f"{quarter / SAMPLING_RATE:.3f}", trgTimTL0="0")
    files, start, first_sample = [], 0, 1_234_567  # a gate opens some time after the run starts
    for session, trigger, n in sizes:
        if trigger == 0:
            month, day, year = (int(x) for x in session.split("-"))
            create_time, first_sample = datetime(year, month, day, 10, 0, 0), 1_234_567
        run = f"{session}_g0"
        gate_dir = raw_dir / session / "SpikeGLX" / run / f"{run}_{PROBE}"
        bin_path = gate_dir / f"{run}_t{trigger}.{PROBE}.ap.bin"
        extra = timed if session == SESSIONS[0] else {}
        files.append(DemoFile(session, trigger, bin_path, start, n, first_sample, create_time, extra))
        start += n
        first_sample += n + gap
        create_time += timedelta(seconds=(n + gap) / SAMPLING_RATE)
    return files


def _flat_bout(file: DemoFile, flat_s: float) -> tuple[float, float, int, int]:
    """Within-file start/end seconds and frames of the flat bout, 30% into the file."""
    duration = file.num_samples / SAMPLING_RATE
    start_s = round(0.3 * duration, 3)
    end_s = round(start_s + flat_s, 3)
    if end_s > 0.9 * duration:
        raise UserError(
            f"demo: a {flat_s} s flat bout does not fit in the {duration:.1f} s last file; "
            "use a duration of at least 3.4x the flat bout or a shorter flat bout."
        )
    # The same arithmetic as the segment table, so the zeros and the exclusion match frame for frame.
    return start_s, end_s, int(start_s * SAMPLING_RATE), int(end_s * SAMPLING_RATE)


def _check_folder(folder: Path, overwrite: bool) -> bool:
    """Whether an old demo world must be cleared; UserError for a non-empty folder we may not replace."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"demo folder {folder} is a file; choose another --folder.")
    if not folder.exists() or not any(folder.iterdir()):
        return False
    if not overwrite:
        raise UserError(f"demo folder {folder} exists and is not empty; use --overwrite or another --folder.")
    if not (folder / MARKER).is_file():
        raise UserError(
            f"demo folder {folder} is not a demo world (no {MARKER}); --overwrite only replaces a demo "
            "world: choose another --folder."
        )
    return True


def _clear_folder(folder: Path) -> None:
    """Remove what a demo world holds, and nothing else."""
    # shared/ and shared_ssd/ are the demo's own projects: sortings made from the old world go with it.
    for name in ("raw", "shared", "shared_ssd", "ground_truth"):
        shutil.rmtree(folder / name, ignore_errors=True)
    for name in ("projects.yaml", "README.txt", f"subjects/{SUBJECT}.yml", MARKER):
        (folder / name).unlink(missing_ok=True)
    if (folder / "subjects").is_dir() and not any((folder / "subjects").iterdir()):
        (folder / "subjects").rmdir()


def _scalar(text: str) -> str:
    """A YAML scalar: plain when safe, else double-quoted (JSON strings are valid YAML)."""
    return text if re.fullmatch(r"[\w./~+-]+", text) else json.dumps(text)


def _write_config(world: DemoWorld, files: list[DemoFile]) -> None:
    """projects.yaml (each document framed by `---` and `...`), the project folders and the subject file."""
    folder = world.folder
    projects = "".join(
        f"---\nproject: {name}\nproject_directory: {_scalar(str(folder / name))}\n...\n"
        for name in ("shared", "shared_ssd")
    )
    world.projects_file.write_text(projects)
    for name in ("shared", "shared_ssd"):
        (folder / name).mkdir(exist_ok=True)
    sessions = "".join(
        f"  - id: {s}\n"
        f"    ap: {_scalar(str(world.raw_dir / s / 'SpikeGLX') + '/')}\n"
        f"    lf: {_scalar(str(world.raw_dir / s / 'SpikeGLX') + '/')}\n"
        f"    imSyncType: barcode\n"
        for s in SESSIONS
    )
    first, last = (f"{f.session}_g0_t{f.trigger}" for f in (files[0], files[-1]))
    world.subjects_dir.mkdir(exist_ok=True)
    world.subject_file.write_text(
        f"recording_sessions:\n{sessions}"
        f"experiments:\n"
        f"  {EXPERIMENT}:\n"
        f"    recording_session_ids: [{', '.join(SESSIONS)}]\n"
        f"    aliases:\n"
        f"      {ALIAS}:\n"
        f"        - start_file: {first}\n"
        f"          end_file: {last}\n"
    )


def _to_kept(t: np.ndarray, bout: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Continuous-timeline times (or frames) -> (outside the bout?, KEPT-timeline value)."""
    keep = (t < bout[0]) | (t >= bout[1])
    return keep, np.where(t >= bout[1], t - (bout[1] - bout[0]), t)


def _write_ground_truth(
    world: DemoWorld, sorting: BaseSorting, extra: dict, levels: np.ndarray, bout: tuple[int, int]
) -> None:
    """motion.npz, sorting.npz and units.csv, all in the KEPT timeline (files concatenated, bout removed)."""
    out, fs, n = world.ground_truth_dir, SAMPLING_RATE, world.kept_num_samples
    out.mkdir(parents=True, exist_ok=True)

    # Motion: the generator's rigid zigzag at its displacement rate; samples inside the bout are dropped.
    vertical = extra["displacement_vectors"][:, 1, :] @ extra["displacement_unit_factor"][0]
    keep, times = _to_kept(
        np.arange(vertical.size) / extra["displacement_sampling_frequency"], np.divide(bout, fs)
    )
    depths = np.unique(extra["templates"].probe.contact_positions[:, 1])
    np.savez(
        out / "motion.npz",
        times_s=times[keep],
        depths_um=depths,
        displacement_um=np.repeat(vertical[keep, None], depths.size, axis=1),
        description=(
            "displacement_um[t, d]: true vertical displacement (um, SpikeInterface Motion sign convention) "
            "at KEPT-timeline time times_s[t] and depth depths_um[d]; rigid, so every column is equal. "
            "Applied to spikes in [t, t + 1/rate) and snapped to 1 um steps."
        ),
    )

    # Sorting: spikes inside the bout dropped, later ones shifted back by its length.
    spikes = sorting.to_spike_vector()
    keep, frames = _to_kept(spikes["sample_index"], bout)
    keep &= frames < n
    unit_ids = sorting.unit_ids.astype(np.int64)
    labels = unit_ids[spikes["unit_index"][keep]]
    np.savez(
        out / "sorting.npz",
        spike_frames=frames[keep].astype(np.int64),
        spike_unit_ids=labels,
        unit_ids=unit_ids,
        sampling_frequency=fs,
        num_samples=n,
    )

    # Units: location at zero displacement, peak amplitude and SNR against the true noise RMS.
    peak_per_channel = np.abs(extra["templates"].templates_array).max(axis=1)  # (units, channels), uV
    peak_channel = peak_per_channel.argmax(axis=1)
    amplitude = peak_per_channel.max(axis=1)
    counts = np.bincount(spikes["unit_index"][keep], minlength=unit_ids.size)
    units = dict(unit_id=unit_ids, x_um=extra["unit_locations"][:, 0], depth_um=extra["unit_locations"][:, 1])
    units.update(peak_channel=peak_channel, peak_amplitude_uV=amplitude, noise_uV=levels[peak_channel])
    units.update(snr=amplitude / levels[peak_channel], num_spikes=counts, firing_rate_hz=counts / (n / fs))
    pd.DataFrame(units).to_csv(out / "units.csv", index=False, float_format="%.3f")


README = """wisc-sorting demo world (made by `wisc-sort demo`; ground truth for checking the pipeline)

projects.yaml            projects: shared -> shared/ (backed-up share: exclusions, final home of sortings),
                         shared_ssd -> shared_ssd/ (fast drive where sorting happens)
subjects/{w.subject}.yml    sessions {sessions}; experiment {w.experiment}, alias {w.alias}
raw/{w.subject}/<session>/SpikeGLX/<run>_g0/<run>_g0_imec0/   NP1.0 AP files (384 + SY, {w.sampling_rate} Hz):
{files}
shared/{w.experiment}/{w.subject}/imec0.ap.artifacts.htsv   exclusions: {w.flat_fname}
                         {w.flat_start_s}-{w.flat_end_s} s is flat (zeros: a disconnected headstage)
ground_truth/            the truth in the KEPT timeline (files concatenated in alias order, the flat bout
                         removed; {w.kept_num_samples} samples = {kept_s:.3f} s):
  motion.npz             times_s, depths_um, displacement_um (times x depths): rigid zigzag, {drift} um
                         peak to peak
  sorting.npz            spike_frames, spike_unit_ids, unit_ids, sampling_frequency, num_samples
  units.csv              unit_id, x_um, depth_um, peak_channel, peak_amplitude_uV, noise_uV, snr, num_spikes,
                         firing_rate_hz
The data is one continuous generated recording (spikeinterface.generation.generate_drifting_recording,
{w.num_units} units, seed {seed}) cut into the files. `wisc-sort demo --overwrite` replaces raw/, shared/,
shared_ssd/ (sortings included), ground_truth/ and these files; nothing else in this folder.
"""


def write_demo_world(
    folder: Path,
    duration_s: float = 120.0,
    num_units: int = 40,
    seed: int = 0,
    overwrite: bool = False,
    flat_s: float = 5.0,
    verbose: bool = False,
) -> DemoWorld:
    """Write the demo world under `folder` (see README.txt there) and return its paths and names.

    The total duration is split 1/4, 1/4 (session 1, triggers t0 and t1) and 1/2 (session 2, t0);
    a `flat_s` bout of zeros sits 30% into the last file and is excluded as `flat`.
    """
    from spikeinterface.core.base import base_period_dtype
    from spikeinterface.preprocessing import silence_periods

    folder = Path(folder).absolute()
    if not duration_s > 0 or num_units < 1 or not flat_s > 0:
        raise UserError(f"demo: duration ({duration_s}), units ({num_units}) and flat bout must be positive.")
    num_samples = int(duration_s * SAMPLING_RATE)
    files = _plan_files(folder / "raw" / SUBJECT, num_samples)
    last = files[-1]
    start_s, end_s, f0, f1 = _flat_bout(last, flat_s)
    world = DemoWorld(
        folder=folder,
        bin_paths=tuple(f.bin_path for f in files),
        flat_fname=last.bin_path.name,
        flat_start_s=start_s,
        flat_end_s=end_s,
        flat_frames=(f0, f1),
        kept_num_samples=num_samples - (f1 - f0),
        num_units=num_units,
    )
    clear = _check_folder(folder, overwrite)
    recording, sorting, extra, levels = _generate(duration_s, num_units, seed)

    if clear:
        _clear_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("written by containers.demo.world.write_demo_world\n")
    _write_config(world, files)
    world.exclusions_file.parent.mkdir(parents=True, exist_ok=True)
    world.exclusions_file.write_text(f"{EXCLUSIONS_HEADER}\n{world.flat_fname}\t{start_s}\t{end_s}\tflat\n")

    for file in files:
        part = recording.frame_slice(file.start_frame, file.start_frame + file.num_samples)
        if file is last:
            part = silence_periods(
                part, periods=np.array([(0, f0, f1)], dtype=base_period_dtype), mode="zeros"
            )
        meta = dict(create_time=file.create_time, first_sample=file.first_sample, extra_meta=file.extra_meta)
        write_spikeglx_file(file.bin_path, part, **meta)
        if verbose:
            print(f"wrote {file.bin_path} ({file.num_samples / SAMPLING_RATE:.1f} s)", flush=True)

    _write_ground_truth(world, sorting, extra, levels, (last.start_frame + f0, last.start_frame + f1))
    listing = "\n".join(f"  {p.relative_to(folder)}" for p in world.bin_paths)
    kept_s = world.kept_num_samples / SAMPLING_RATE
    text = README.format(
        w=world, sessions=", ".join(SESSIONS), files=listing, kept_s=kept_s, drift=DRIFT_UM, seed=seed
    )
    world.readme.write_text(text)
    return world
