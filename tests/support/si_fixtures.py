"""Generated SpikeInterface data shared by tests: a small drifting recording with known displacement."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from probeinterface import generate_multi_columns_probe
from spikeinterface.core import BaseRecording, load
from spikeinterface.generation import generate_drifting_recording
from spikeinterface.preprocessing import scale

DURATION_S = 40.0
DRIFT_UM = 40.0  # zigzag amplitude, peak to peak
SEED = 2205


@dataclass
class DriftingCase:
    recording: BaseRecording  # int16 on disk with gain_to_uV, like a SpikeGLX file
    displacement_um: np.ndarray  # (n_times, n_depths): true unit displacement along y
    times_s: np.ndarray  # (n_times,)
    depths_um: np.ndarray  # (n_depths,)


_CACHE: dict[Path, DriftingCase] = {}


def drifting_case(folder: Path) -> DriftingCase:
    """A 40 s, 48-channel drifting recording (40 um zigzag, rigid), saved once under `folder`.

    Saved as int16 with a gain so that reads are fast and the data look like a SpikeGLX file.
    """
    folder = Path(folder)
    if folder in _CACHE:
        return _CACHE[folder]
    probe = generate_multi_columns_probe(num_columns=2, num_contact_per_column=24, xpitch=32, ypitch=20)
    probe.set_device_channel_indices(np.arange(probe.get_contact_count()))
    _, drifting, _, extra = generate_drifting_recording(
        num_units=30,
        duration=DURATION_S,
        probe=probe,
        generate_displacement_vector_kwargs=dict(
            displacement_sampling_frequency=5.0,
            drift_start_um=[0, DRIFT_UM / 2],
            drift_stop_um=[0, -DRIFT_UM / 2],
            drift_step_um=1,
            motion_list=[
                dict(
                    drift_mode="zigzag",
                    non_rigid_gradient=None,
                    t_start_drift=4.0,
                    t_end_drift=None,
                    period_s=24,
                )
            ],
        ),
        extra_outputs=True,
        seed=SEED,
    )
    rec_folder = folder / "drifting_rec"
    if not rec_folder.exists():
        gain = 0.5
        as_int = scale(drifting, gain=1.0 / gain, dtype="int16")
        as_int.set_channel_gains(gain)
        as_int.set_channel_offsets(0.0)
        with warnings.catch_warnings():  # "not serializable": the generator has no provenance to save
            warnings.simplefilter("ignore")
            as_int.save(folder=rec_folder, n_jobs=1, progress_bar=False)
    recording = load(rec_folder)
    unit_disp = extra["unit_displacements"][:, :, 1]  # (n_times, n_units)
    unit_y = extra["unit_locations"][:, 1]
    order = np.argsort(unit_y)
    times = np.arange(unit_disp.shape[0]) / extra["displacement_sampling_frequency"]
    case = DriftingCase(recording, unit_disp[:, order], times, unit_y[order])
    _CACHE[folder] = case
    return case
