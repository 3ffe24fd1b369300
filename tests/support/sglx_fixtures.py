"""Test helpers: write SpikeGLX trees of sparse `.bin` files and `.meta` files (genuine or generated)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

# The repo is <root>/main and the shared data sit beside it in <root>/shared (CI clones them the same way).
META_DIR = Path(__file__).parents[2].parent / "shared" / "data" / "spikeglx-meta"
GENUINE_METAS = sorted(META_DIR.glob("*.meta"))


def set_meta_fields(text: str, fields: Mapping[str, object | None]) -> str:
    """Replace (keeping a `~` prefix and the line ending), add, or (value None) remove `key=value` lines."""
    newline = "\r\n" if "\r\n" in text else "\n"
    for key, value in fields.items():
        line = re.compile(rf"^(~?){re.escape(key)}=[^\r\n]*(\r?\n|$)", re.MULTILINE)
        if value is None:
            text = line.sub("", text)
        elif line.search(text):
            text = line.sub(lambda m, k=key, v=value: f"{m[1]}{k}={v}{m[2]}", text, count=1)
        else:
            text = text + ("" if text.endswith("\n") or not text else newline) + f"{key}={value}{newline}"
    return text


def default_meta_text(
    stream: str = "ap",
    *,
    n_chans: int = 385,
    rate: float = 30000.0,
    n_samples: int = 3000,
    create_time: str = "2021-03-01T09:00:05",
    crlf: bool = False,
) -> str:
    """A small but complete imec `.meta` for `n_samples` samples of `n_chans` int16 channels."""
    neural = n_chans - 1
    fields = {
        "fileCreateTime": create_time,
        "fileName": "rewritten-below",
        "fileSizeBytes": n_samples * 2 * n_chans,
        "fileTimeSecs": repr(n_samples / rate),
        "firstSample": 1000,
        "imDatPrb_type": 0,
        "imSampRate": repr(rate),
        "nSavedChans": n_chans,
        "snsApLfSy": f"{neural},0,1" if stream == "ap" else f"0,{neural},1",
        "snsSaveChanSubset": f"0:{n_chans - 1}",
        "typeThis": "imec",
        "~imroTbl": "(0,384)(0 0 0 500 250 1)",
    }
    newline = "\r\n" if crlf else "\n"
    return "".join(f"{k}={v}{newline}" for k, v in fields.items())


def bin_path(root: Path, run: str, gate: int, trigger: int, probe: str = "imec0", stream: str = "ap") -> Path:
    """SpikeGLX's layout: <root>/<run>_g<G>/<run>_g<G>_<probe>/<run>_g<G>_t<T>.<probe>.<stream>.bin."""
    gate_dir = f"{run}_g{gate}"
    return Path(root, gate_dir, f"{gate_dir}_{probe}", f"{gate_dir}_t{trigger}.{probe}.{stream}.bin")


def write_pair(bin_file: Path, meta_text: str, *, bin_size: int | None = None) -> Path:
    """Write `bin_file` (sparse) and its `.meta`; fileName is set to `bin_file`, the size to fileSizeBytes."""
    bin_file.parent.mkdir(parents=True, exist_ok=True)
    text = set_meta_fields(meta_text, {"fileName": bin_file})
    # latin-1 round-trips any byte; newline="" keeps CRLF as written.
    with open(bin_file.with_suffix(".meta"), "w", encoding="latin-1", newline="") as f:
        f.write(text)
    if bin_size is None:
        m = re.search(r"^fileSizeBytes=(\d+)", text, re.MULTILINE)
        bin_size = int(m[1]) if m else 0
    with open(bin_file, "wb") as f:
        f.truncate(bin_size)  # sparse: no data blocks, any size
    return bin_file


def write_file(
    root: Path,
    run: str,
    gate: int = 0,
    trigger: int = 0,
    probe: str = "imec0",
    stream: str = "ap",
    *,
    meta_text: str | None = None,
    fields: Mapping[str, object | None] | None = None,
    bin_size: int | None = None,
) -> Path:
    """Write one SpikeGLX file pair in the standard layout; returns the `.bin` path."""
    text = meta_text if meta_text is not None else default_meta_text(stream)
    text = set_meta_fields(text, fields or {})
    return write_pair(bin_path(root, run, gate, trigger, probe, stream), text, bin_size=bin_size)


def read_meta_naive(path: Path) -> dict[str, str]:
    """An independent, minimal `.meta` reader for expected values in tests."""
    out = {}
    for line in path.read_bytes().decode("latin-1").replace("\r\n", "\n").split("\n"):
        if "=" in line:
            key, value = line.split("=", 1)
            out[key.lstrip("~")] = value
    return out
