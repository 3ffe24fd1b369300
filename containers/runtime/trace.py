"""What a step's run cost, recorded in its manifest as Nextflow's trace does: wall and CPU time, peak memory,
bytes read and written, exit status, host and device."""

from __future__ import annotations

import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path


def io_bytes() -> dict[str, int]:
    """/proc/self/io: bytes this process (and the worker processes it has reaped) read from and wrote to
    storage (`read_bytes`/`write_bytes`), and through read()/write() calls (`rchar`/`wchar`, page cache
    included). Empty where /proc has no io file."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return {}
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {key: int(fields[key]) for key in ("rchar", "wchar", "read_bytes", "write_bytes") if key in fields}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class Trace:
    """Counters at the start of a step; `record` gives the differences at its end."""

    wall: float
    cpu: float
    io: dict[str, int]

    @classmethod
    def start(cls) -> Trace:
        return cls(time.monotonic(), _cpu_seconds(), io_bytes())

    def record(self, exit_status: int, device: str) -> dict:
        wall = time.monotonic() - self.wall
        cpu = _cpu_seconds() - self.cpu
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        io = {key: value - self.io.get(key, 0) for key, value in io_bytes().items()}
        return {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cpu_percent": round(100 * cpu / wall, 1) if wall > 0 else None,
            # ru_maxrss is KiB on Linux: the largest of this process and of its largest reaped worker
            "peak_rss_bytes": max(own.ru_maxrss, children.ru_maxrss) * 1024,
            **{f"io_{key}": value for key, value in io.items()},
            "exit_status": exit_status,
            "host": platform.node(),
            "device": device,
        }
