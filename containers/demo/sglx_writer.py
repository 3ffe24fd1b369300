"""Write Neuropixels 1.0 SpikeGLX files (`.ap.bin` + `.meta`) the way SpikeGLX does, for demos and tests."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from probeinterface import Probe
    from spikeinterface.core import BaseRecording

NUM_AP = 384
NUM_SAVED = NUM_AP + 1  # 384 AP channels + the SY (sync) word
SY_CHANNEL = 768  # SpikeGLX numbers the SY channel after 384 AP + 384 LF acquired channels
AI_RANGE_MAX_V = 0.6
MAX_INT = 512  # NP1.0 ADCs are 10-bit: counts lie in [-512, 511]
AP_GAIN = 500
LF_GAIN = 250
UV_PER_BIT = AI_RANGE_MAX_V / MAX_INT / AP_GAIN * 1e6  # 2.34375 uV per count
PART_NUMBER = "PRB_1_4_0480_1_C"  # commercial NP1.0 with cap, as recent SpikeGLX writes it
# Keys SpikeGLX writes with a leading "~" (long table values).
TILDE_KEYS = ("imroTbl", "muxTbl", "snsChanMap", "snsShankMap", "snsGeomMap")


def _imro_table() -> str:
    # (type=0, n channels)(channel bank refid apgain lfgain aphipass): bank 0, external ref, AP filter on.
    rows = "".join(f"({c} 0 0 {AP_GAIN} {LF_GAIN} 1)" for c in range(NUM_AP))
    return f"(0,{NUM_AP}){rows}"


def _mux_table() -> str:
    # NP1.0: 32 ADCs, 12 conversion groups; group g samples channels 24a+2g and 24a+2g+1.
    groups = "".join(
        "(" + " ".join(f"{24 * a + 2 * g} {24 * a + 2 * g + 1}" for a in range(16)) + ")" for g in range(12)
    )
    return f"(32,12){groups}"


def _chan_map() -> str:
    ap = "".join(f"(AP{c};{c}:{c})" for c in range(NUM_AP))
    return f"({NUM_AP},{NUM_AP},1){ap}(SY0;{SY_CHANNEL}:{SY_CHANNEL})"


def _geom_map() -> str:
    # Bank 0: electrode = channel; rows of 2 at 20 um pitch; x from the shank's left edge, staggered
    # 27/59 um on even rows and 11/43 um on odd rows (NP1.0 ProbeTable offsets).
    cells = []
    for c in range(NUM_AP):
        row, col = divmod(c, 2)
        x = (27 if row % 2 == 0 else 11) + 32 * col
        cells.append(f"(0:{x}:{20 * row}:1)")
    return f"({PART_NUMBER},1,0,70)" + "".join(cells)


def _shank_map() -> str:
    # The pre-2023 form: (shanks, cols, rows)(shank:col:row:used).
    cells = "".join(f"(0:{c % 2}:{c // 2}:1)" for c in range(NUM_AP))
    return f"(1,2,480){cells}"


def np1_meta(
    n_samples: int,
    sampling_rate: float,
    bin_path: Path,
    create_time: datetime,
    first_sample: int,
    *,
    geom_map: bool = True,
    sha1: str = "0",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The `.meta` of an NP1.0 AP file of `n_samples` x 385 int16 (bank 0, AP gain 500, LF gain 250).

    `geom_map=True` writes `snsGeomMap` as SpikeGLX >= 2023 does; False writes the older `snsShankMap`.
    Keys are returned without the tilde (`write_meta` adds it); `extra` adds or overrides keys.
    """
    n_samples = int(n_samples)
    meta = {
        "acqApLfSy": f"{NUM_AP},{NUM_AP},1",
        "appVersion": "20240129" if geom_map else "20230120",
        "fileCreateTime": create_time.strftime("%Y-%m-%dT%H:%M:%S"),
        # neo names the stream from this path, so it must be this file's own path.
        "fileName": Path(bin_path).absolute().as_posix(),
        "fileSHA1": sha1,
        "fileSizeBytes": str(n_samples * NUM_SAVED * 2),
        "fileTimeSecs": repr(n_samples / sampling_rate),
        "firstSample": str(int(first_sample)),
        "gateMode": "Immediate",
        "imAiRangeMax": str(AI_RANGE_MAX_V),
        "imAiRangeMin": str(-AI_RANGE_MAX_V),
        "imCalibrated": "true",
        "imDatApi": "3.62",
        "imDatBs_fw": "2.0.169",
        "imDatBsc_fw": "3.2.189",
        "imDatBsc_hw": "2.1",
        "imDatBsc_pn": "NP2_QBSC_00",
        "imDatBsc_sn": "207",
        "imDatFx_hw": "4.13",
        "imDatFx_pn": "NP2_FLEX_0",
        "imDatFx_sn": "0",
        "imDatHs_hw": "5.1",
        "imDatHs_pn": "NP2_HS_30",
        "imDatHs_sn": "455",
        "imDatPrb_dock": "1",
        "imDatPrb_pn": PART_NUMBER,
        "imDatPrb_port": "1",
        "imDatPrb_slot": "2",
        "imDatPrb_sn": "19454409771",
        "imDatPrb_type": "0",
        "imIsSvyRun": "false",
        "imLEDEnable": "false",
        "imMaxInt": str(MAX_INT),
        "imSampRate": repr(float(sampling_rate)),
        "imStdby": "",
        "imSvyMaxBnk": "-1",
        "imSvySecPerBnk": "35",
        "imTrgRising": "true",
        "imTrgSource": "0",
        "imroFile": "",
        "nDataDirs": "1",
        "nSavedChans": str(NUM_SAVED),
        "snsApLfSy": f"{NUM_AP},0,1",
        "snsSaveChanSubset": f"0:{NUM_AP - 1},{SY_CHANNEL}",
        "syncImInputSlot": "2",
        "syncSourceIdx": "0",
        "syncSourcePeriod": "1",
        "trigMode": "Immediate",
        "typeImEnabled": "1",
        "typeNiEnabled": "0",
        "typeObEnabled": "0",
        "typeThis": "imec",
        "userNotes": "",
        "imroTbl": _imro_table(),
        "muxTbl": _mux_table(),
        "snsChanMap": _chan_map(),
    }
    if geom_map:
        meta["imAnyChanFullBand"] = "false"
        meta["imChan0apGain"] = str(AP_GAIN)
        meta["imErrFlags_IS_CT_SR_LK_PP_SY"] = "0 0 0 0 0 0"
        meta["imLowLatency"] = "false"
        meta["imTipLength"] = "209"
        meta["snsGeomMap"] = _geom_map()
    else:
        meta["snsShankMap"] = _shank_map()
    meta.update(extra or {})
    return meta


def write_meta(path: Path, meta: dict[str, str], crlf: bool = False) -> None:
    """Write `key=value` lines sorted as SpikeGLX sorts them (ASCII order, so `~` keys come last)."""
    written = {}
    for key, value in meta.items():
        bare = key.lstrip("~")
        written["~" + bare if bare in TILDE_KEYS else bare] = value
    newline = "\r\n" if crlf else "\n"
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("".join(f"{key}={written[key]}{newline}" for key in sorted(written)))


def np1_probe(sampling_rate: float = 30000.0) -> Probe:
    """The NP1.0 probe (bank 0, 384 contacts) that `probeinterface.read_spikeglx` builds from our `.meta`."""
    import probeinterface

    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "probe_g0_t0.imec0.ap.meta"
        bin_path = meta_path.with_suffix(".bin")
        write_meta(meta_path, np1_meta(0, sampling_rate, bin_path, datetime(2026, 1, 1), 0))
        return probeinterface.read_spikeglx(meta_path)


def _uv_chunks(
    source: BaseRecording | np.ndarray, chunk_frames: int
) -> tuple[int, float | None, Iterator[np.ndarray]]:
    """(n_samples, sampling rate or None, iterator over (frames, 384) float chunks in uV)."""
    if isinstance(source, np.ndarray):
        if source.ndim != 2 or source.shape[1] != NUM_AP:
            raise ValueError(f"traces must have shape (n_samples, {NUM_AP}), got {source.shape}")
        n = source.shape[0]
        return n, None, (source[i : i + chunk_frames] for i in range(0, n, chunk_frames))
    if source.get_num_channels() != NUM_AP or source.get_num_segments() != 1:
        raise ValueError(f"the recording must have {NUM_AP} channels and 1 segment")
    n = source.get_num_samples(0)
    # Generated recordings are float uV without gains; scaled ones are converted to uV.
    in_uv = source.has_scaleable_traces()

    def chunks() -> Iterator[np.ndarray]:
        for i in range(0, n, chunk_frames):
            yield source.get_traces(0, i, min(i + chunk_frames, n), return_in_uV=in_uv)

    return n, float(source.sampling_frequency), chunks()


def uv_to_counts(traces_uv: np.ndarray) -> np.ndarray:
    """uV -> NP1.0 int16 counts, rounded and clipped to the 10-bit range as the ADC saturates."""
    # float32 is exact enough here (|counts| <= 512) and twice as fast as float64.
    counts = np.multiply(traces_uv, np.float32(1 / UV_PER_BIT), dtype=np.float32)
    np.rint(counts, out=counts)
    np.clip(counts, -MAX_INT, MAX_INT - 1, out=counts)
    return counts.astype(np.int16)


def write_spikeglx_file(
    bin_path: Path,
    recording_or_traces_uV: BaseRecording | np.ndarray,
    *,
    create_time: datetime,
    sampling_rate: float | None = None,
    first_sample: int = 0,
    chunk_frames: int = 30000,
    geom_map: bool = True,
    extra_meta: dict[str, str] | None = None,
) -> dict[str, str]:
    """Write `bin_path` (int16, 384 AP + a zero SY channel) chunk by chunk, then its `.meta`; return the meta.

    The source is a one-segment 384-channel recording or an array (n_samples, 384), both in uV;
    `sampling_rate` is required for an array and defaults to the recording's rate. The `.meta` is
    written last, as SpikeGLX does, so a file without one was interrupted.
    """
    bin_path = Path(bin_path)
    if not bin_path.name.endswith(".ap.bin"):
        raise ValueError(f"{bin_path}: an AP file name must end with .ap.bin")
    n_samples, source_rate, chunks = _uv_chunks(recording_or_traces_uV, chunk_frames)
    rate = sampling_rate if sampling_rate is not None else source_rate
    if rate is None:
        raise ValueError("sampling_rate is required when writing an array")
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    sha1 = hashlib.sha1()
    with open(bin_path, "wb") as f:
        for uv in chunks:
            block = np.zeros((uv.shape[0], NUM_SAVED), dtype="<i2")
            block[:, :NUM_AP] = uv_to_counts(uv)
            sha1.update(block.data)
            f.write(block.data)
    meta = np1_meta(
        n_samples,
        rate,
        bin_path,
        create_time,
        first_sample,
        geom_map=geom_map,
        sha1=sha1.hexdigest().upper(),
        extra=extra_meta,
    )
    write_meta(bin_path.with_suffix(".meta"), meta)
    return meta
