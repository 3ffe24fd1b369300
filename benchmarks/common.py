"""Shared helpers for the benchmarks: the machine's description, the demo world, tables and result files."""

from __future__ import annotations

import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path

# Stdlib only at module level: benchmarks cap threads (tasks.core.threads) before numpy is imported.
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PYTHON = sys.executable
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_lines() -> list[str]:
    """Machine, date and versions, for the head of a result file."""
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("spikeinterface", "numpy", "luigi")
        if _installed(name)
    )
    return [
        f"- machine: {os.cpu_count()} cores (nproc), {cpu_model()}, {platform.machine()}, "
        f"Python {platform.python_version()}",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- versions: {versions}; torch {'installed' if _installed('torch') else 'not installed'}",
    ]


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def md_table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; numbers right-aligned."""
    align = ["---:" if rows and isinstance(rows[0][i], (int, float)) else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write_result(name: str, text: str) -> Path:
    """Print the result and write it to benchmarks/results/<name>.md."""
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(f"written: {path}")
    return path


@contextmanager
def timer(into: dict, key: str) -> Iterator[None]:
    """Wall seconds of the block into `into[key]` (added to what is there)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + time.perf_counter() - start


def ensure_demo_world(folder: Path, duration_s: float) -> tuple[float, bool]:
    """Write the demo world of `duration_s` into `folder` unless one of that duration is there.

    Returns (seconds spent writing, whether it was reused).
    """
    import numpy as np

    from containers.demo import world as demo_world

    folder = Path(folder).absolute()
    truth = folder / "ground_truth" / "sorting.npz"
    if (folder / demo_world.MARKER).exists() and truth.exists():
        with np.load(truth) as data:
            kept = int(data["num_samples"])
        wanted = int(duration_s * demo_world.SAMPLING_RATE)
        if abs(kept - wanted) <= int(10 * demo_world.SAMPLING_RATE):  # the flat bout is excluded
            return 0.0, True
    start = time.perf_counter()
    demo_world.write_demo_world(folder, duration_s=duration_s, overwrite=True)
    return time.perf_counter() - start, False


def demo_paths(folder: Path):
    """Input locations of the demo world, as `wisc-sort demo` sets them."""
    from tasks.settings import load_paths

    return load_paths(
        projects_file=folder / "projects.yaml",
        subjects_dir=folder / "subjects",
        exclusions_project="shared",
        cache_file=folder / "subjects" / "file_table_cache.parquet",
    )


def demo_target(project: str = "shared_ssd"):
    from containers.demo import world as demo_world
    from tasks.inputs.resolve import Target

    return Target(project, demo_world.EXPERIMENT, demo_world.ALIAS, demo_world.SUBJECT, demo_world.PROBE)


def demo_segments(folder: Path):
    """The demo world's segment table, resolved as the pipeline resolves it."""
    from tasks.inputs.resolve import resolve

    return resolve(demo_paths(folder), demo_target()).segments


def ground_truth(folder: Path) -> tuple:
    """(displacement_um, times_s, depths_um) of the demo world, in the kept timeline."""
    import numpy as np

    with np.load(Path(folder) / "ground_truth" / "motion.npz") as data:
        return data["displacement_um"], data["times_s"], data["depths_um"]


def chain_summary(opts_path: Path, upto_drift: bool = False) -> str:
    """The preprocessing chain of an options file in one line (the choices that cost time)."""
    import yaml

    names = []
    for step in yaml.safe_load(opts_path.read_text())["preprocessing"]:
        params = step.get("step_params") or {}
        if step["step_name"] == "drift_correction":
            methods = [
                (params.get(k) or {}).get("method", "?") for k in ("detect_kwargs", "localize_peaks_kwargs")
            ]
            names.append(f"drift_correction [{' / '.join(methods)}]")
            if upto_drift:
                break
        elif step["step_name"] == "common_reference":
            names.append(
                f"common_reference [{params.get('reference', 'global')} {params.get('operator', 'median')}]"
            )
        else:
            names.append(step["step_name"])
    return ", ".join(names)


def drift_params(opts: dict) -> dict:
    """The drift_correction step_params of an options dict (a reference into it)."""
    step = next(s for s in opts["preprocessing"] if s["step_name"] == "drift_correction")
    return step["step_params"]


def best_of(fn, repeat: int = 3) -> float:
    """Fewest wall seconds of `repeat` calls of fn()."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def timed_process(argv: list[str], log: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of a fresh process and all its descendants; its output to `log`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "ab") as out:
        code = subprocess.call(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed (exit {code}); see {log}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def demo_kept_pieces(segments) -> list[list]:
    """The kept pieces as [gate folder, segment index in neo's reader, start, end] (a script's view)."""
    triggers = {}
    for path, trigger in zip(segments["path"], segments["trigger"], strict=True):
        triggers.setdefault(str(Path(path).parents[1]), set()).add(int(trigger))
    kept = []
    for row in segments[segments["type"] == "keep"].itertuples():
        gate = str(Path(row.path).parents[1])
        index = sorted(triggers[gate]).index(int(row.trigger))
        kept.append([gate, index, int(row.withinFileStartFrame), int(row.withinFileEndFrame)])
    return kept


def run_cpu(argv: list[str], cap_s: float, cwd: Path = REPO) -> dict:
    """Run `argv`; CPU seconds (user+sys, its whole process tree) and wall seconds.

    A run that ends within `cap_s` is measured exactly (RUSAGE_CHILDREN: waited-for descendants included);
    a longer one is stopped (its own process group) and measured from psutil samples of the live tree.
    """
    import psutil

    def tree_cpu(root: psutil.Process, seen: dict[int, float]) -> None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            seen[proc.pid] = times.user + times.system

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    root, seen, samples = psutil.Process(proc.pid), {}, []
    while time.perf_counter() - start < cap_s:
        try:
            proc.wait(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            tree_cpu(root, seen)
            samples.append((time.perf_counter() - start, sum(seen.values())))
    wall = time.perf_counter() - start
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group started above: the step and its workers
        proc.wait()
        (t0, c0), (t1, c1) = min(samples, key=lambda s: abs(s[0] - wall / 2)), samples[-1]
        late = round((c1 - c0) / (t1 - t0), 2) if t1 > t0 else "-"
        return {"wall": wall, "cpu": samples[-1][1], "late": late, "how": f"first {cap_s:g} s (then stopped)"}
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "how": "whole run" + ("" if proc.returncode == 0 else " (FAILED)")}
