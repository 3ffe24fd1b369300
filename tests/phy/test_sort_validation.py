"""Sort success checks: what a crashed or truncated Kilosort run leaves behind is refused, naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.phy.validation import SortFailed, SortSummary, read_params, validate_sorter_output

PARAMS = (
    "dat_path = 'recording.dat'\nn_channels_dat = 384\ndtype = 'int16'\noffset = 0\n"
    "sample_rate = 30000.123\nhp_filtered = True\n"
)
N_SAMPLES = 10_000


def _sort(folder: Path, times=(5, 10, 10, 9_999), clusters=(0, 1, 0, 2), params: str = PARAMS) -> Path:
    """A minimal finished sort, Kilosort-style: (n, 1) uint64 times and int32 clusters."""
    np.save(folder / "spike_times.npy", np.asarray(times, dtype=np.uint64)[:, None])
    np.save(folder / "spike_clusters.npy", np.asarray(clusters, dtype=np.int32)[:, None])
    (folder / "params.py").write_text(params)
    return folder


def test_complete_sort(tmp_path):
    assert validate_sorter_output(_sort(tmp_path), N_SAMPLES) == SortSummary(n_spikes=4, n_units=3)
    np.save(tmp_path / "spike_times.npy", np.array([5, 10, 10, 9_999], dtype=np.int64))  # (n,) also accepted
    assert validate_sorter_output(tmp_path, None).n_spikes == 4


def test_params_parsed_not_executed(tmp_path):
    params = read_params(_sort(tmp_path) / "params.py")
    assert params == dict(
        dat_path="recording.dat", n_channels_dat=384, dtype="int16", offset=0, sample_rate=30000.123,
        hp_filtered=True,
    )  # fmt: skip
    (tmp_path / "params.py").write_text(PARAMS + "import os\n")
    with pytest.raises(SortFailed, match=r"params.py: line 7 is not a `name = value` assignment"):
        read_params(tmp_path / "params.py")
    (tmp_path / "params.py").write_text(PARAMS + "x = open('/etc/passwd')\n")
    with pytest.raises(SortFailed, match="line 7: the value is not a literal"):
        read_params(tmp_path / "params.py")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("", "params.py: empty; the sorter crashed"),
        ("  \n", "params.py: empty"),
        ("dat_path = 'recording.dat\n", "params.py: not parseable"),
        (
            "dat_path = 'recording.dat'\n",
            "params.py: no n_channels_dat, dtype, offset, sample_rate, hp_filtered",
        ),
    ],
)
def test_bad_params(tmp_path, params, message):
    with pytest.raises(SortFailed, match=message):
        validate_sorter_output(_sort(tmp_path, params=params), N_SAMPLES)


def test_missing_files(tmp_path):
    _sort(tmp_path)
    for name in ("spike_clusters.npy", "spike_times.npy", "params.py"):
        (tmp_path / name).unlink()
        with pytest.raises(SortFailed, match=rf"{name}: missing; the sorter did not finish"):
            validate_sorter_output(tmp_path, N_SAMPLES)


def test_zero_byte_spike_times(tmp_path):
    _sort(tmp_path)
    (tmp_path / "spike_times.npy").write_bytes(b"")
    with pytest.raises(SortFailed, match=r"spike_times.npy: empty \(0 bytes\); the sorter crashed"):
        validate_sorter_output(tmp_path, N_SAMPLES)


def test_truncated_spike_clusters(tmp_path):
    _sort(tmp_path)
    data = (tmp_path / "spike_clusters.npy").read_bytes()
    (tmp_path / "spike_clusters.npy").write_bytes(data[:-6])
    with pytest.raises(SortFailed, match="spike_clusters.npy: not loadable"):
        validate_sorter_output(tmp_path, N_SAMPLES)


def test_lengths_differ(tmp_path):
    _sort(tmp_path, clusters=(0, 1, 0))
    with pytest.raises(SortFailed, match="spike_clusters.npy: 3 entries but spike_times.npy has 4"):
        validate_sorter_output(tmp_path, N_SAMPLES)


def test_times_outside_the_recording(tmp_path):
    _sort(tmp_path, times=(5, 10, 10, N_SAMPLES))
    with pytest.raises(SortFailed, match=r"spike_times.npy: spike time 10000 is past the recording's end"):
        validate_sorter_output(tmp_path, N_SAMPLES)
    np.save(tmp_path / "spike_times.npy", np.array([[-1], [2], [3], [4]], dtype=np.int64))
    with pytest.raises(SortFailed, match="spike_times.npy: negative spike time -1"):
        validate_sorter_output(tmp_path, N_SAMPLES)


def test_wrong_shape_or_dtype(tmp_path):
    _sort(tmp_path)
    np.save(tmp_path / "spike_times.npy", np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(SortFailed, match=r"spike_times.npy: shape \(4, 2\)"):
        validate_sorter_output(tmp_path, N_SAMPLES)
    np.save(tmp_path / "spike_times.npy", np.zeros(4))
    with pytest.raises(SortFailed, match="spike_times.npy: dtype float64, expected integers"):
        validate_sorter_output(tmp_path, N_SAMPLES)


def test_no_spikes_is_a_finished_sort(tmp_path):
    assert validate_sorter_output(_sort(tmp_path, times=(), clusters=()), N_SAMPLES) == SortSummary(0, 0)


def test_light_package(tmp_path):
    import subprocess
    import sys

    code = "import sys, tasks.phy.validation; print('spikeinterface' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"
