"""Generated SpikeGLX files on genuine probe .meta files, and a zigzag motion, for the engine tests."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from spikeinterface.core import BaseRecording, concatenate_recordings
from spikeinterface.core.motion import Motion

from containers.recording.chain import SpikeGLXFileRecording

META_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spikeglx-meta"
NP1_META = META_DIR / "Noise_g0_t0.imec0.ap.meta"  # NP1.0 (type 0), 384 AP channels
NP2_4SHANK_META = META_DIR / "NP2_4_shanks.imec0.ap.meta"  # NP2.0 4-shank (type 24)
RATE = 30000


def _set(text: str, key: str, value: object) -> str:
    return re.sub(rf"^(~?){key}=.*$", lambda m: f"{m[1]}{key}={value}", text, count=1, flags=re.MULTILINE)


def synthetic_counts(
    n_samples: int, locations: np.ndarray, seed: int, dead: tuple = (), noisy: tuple = ()
) -> np.ndarray:
    """(n_samples, channels) int16 counts: depth-correlated noise, LFP, spikes, offsets, bad channels."""
    rng = np.random.default_rng(seed)
    n = locations.shape[0]
    depth = locations[:, 1]
    # Neighbouring contacts share most of the noise (as in a brain): spatially smoothed white noise.
    dist = np.abs(depth[:, None] - depth[None, :]) + 0.5 * np.abs(locations[:, :1] - locations[:, 0][None, :])
    mixing = np.exp(-((dist / 25.0) ** 2))
    mixing /= np.sqrt((mixing**2).sum(axis=1, keepdims=True))
    data = rng.normal(0, 5.0, (n_samples, n)).astype(np.float32) @ mixing.T.astype(np.float32)
    data += rng.normal(0, 2.0, (n_samples, n)).astype(np.float32)
    t = np.arange(n_samples) / RATE
    lfp = 30 * np.sin(2 * np.pi * 7 * t) + 15 * np.sin(2 * np.pi * 41 * t + 1.0)
    data += (lfp[:, None] * (1 + depth[None, :] / depth.max())).astype(np.float32)
    for _ in range(max(4, n // 8)):  # units: -60 count spikes on contacts within ~40 um
        centre = locations[rng.integers(n)]
        weight = np.exp(-((np.linalg.norm(locations - centre, axis=1) / 30.0) ** 2))
        times = rng.integers(20, n_samples - 40, size=max(1, n_samples // 3000))
        shape = -60 * np.exp(-((np.arange(-10, 30) / 4.0) ** 2)) + 20 * np.exp(
            -(((np.arange(-10, 30) - 12) / 6.0) ** 2)
        )
        for time in times:
            data[time - 10 : time + 30] += shape[:, None] * weight[None, :]
    data += rng.normal(0, 30, n).astype(np.float32)[None, :]
    data[:, list(dead)] *= 0.02
    data[:, list(noisy)] += rng.normal(0, 150.0, (n_samples, len(noisy))).astype(np.float32)
    return np.clip(np.round(data), -32768, 32767).astype(np.int16)


def write_sglx(
    folder: Path, meta: Path, n_samples: int, seed: int = 0, dead: tuple = (), noisy: tuple = ()
) -> SpikeGLXFileRecording:
    """A .bin/.meta pair on a genuine .meta (its probe, gains, channel map), read as the pipeline reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    bin_path = folder / f"{meta.name.split('.')[0]}_{seed}_g0_t0.imec0.ap.bin"
    meta_path = bin_path.with_suffix(".meta")
    shutil.copy(meta, meta_path)
    text = meta_path.read_text(encoding="latin-1")
    n_saved = int(re.search(r"^nSavedChans=(\d+)", text, re.MULTILINE)[1])
    for key, value in (
        ("fileName", bin_path.as_posix()),
        ("fileSizeBytes", n_samples * n_saved * 2),
        ("fileTimeSecs", n_samples / RATE),
    ):
        text = _set(text, key, value)
    meta_path.write_text(text, encoding="latin-1")
    bin_path.write_bytes(b"\0" * (n_samples * n_saved * 2))  # placeholder so the probe can be read
    probe_rec = SpikeGLXFileRecording(bin_path)
    counts = np.zeros((n_samples, n_saved), dtype=np.int16)
    counts[:, : probe_rec.get_num_channels()] = synthetic_counts(
        n_samples, probe_rec.get_channel_locations(), seed, dead, noisy
    )
    counts.tofile(bin_path)
    return SpikeGLXFileRecording(bin_path)


def kept_pieces(recording: BaseRecording, cuts: list[tuple[int, int]]) -> BaseRecording:
    """Frame slices concatenated into one segment, as load_kept_recording keeps the 'keep' rows."""
    return concatenate_recordings([recording.frame_slice(a, b) for a, b in cuts])


def zigzag_motion(
    duration_s: float, depths_um: np.ndarray, bin_s: float = 1.0, amplitude_um: float = 15.0
) -> Motion:
    """A cleaned-looking non-rigid zigzag: two depth windows moving in opposite phase."""
    times = np.arange(bin_s / 2, duration_s, bin_s)
    phase = (times / (4 * bin_s)) % 1.0
    zig = amplitude_um * (2 * np.abs(2 * phase - 1) - 1)
    displacement = np.stack([zig, -0.5 * zig], axis=1)
    windows = np.array(
        [depths_um.min() + 0.25 * np.ptp(depths_um), depths_um.min() + 0.75 * np.ptp(depths_um)]
    )
    return Motion([displacement], [times], windows)
