"""Every setting of `[wisc]`, `[wisc_scheduler]` and `[wisc_slurm]` in one table: luigi.cfg, then WISC_*
variables, then flags.

Settings are resolved here, on the host that plans; a step program never reads them (DESIGN.md): what it
needs (the disk reserve, say) reaches it as a command-line flag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import luigi.configuration

from tasks.core.errors import UserError


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    default: str
    kind: type = str  # str, int, float or Path
    minimum: float | None = None
    description: str = ""

    @property
    def env(self) -> str:
        prefix = (
            "WISC_" if self.section == "wisc" else f"{self.section.upper()}_"
        )  # WISC_SCHEDULER_, WISC_SLURM_
        return prefix + self.key.upper()


def _wisc(key: str, default: str, kind: type = str, minimum: float | None = None, description: str = ""):
    return Setting("wisc", key, default, kind, minimum, description)


def _slurm(key: str, default: str, kind: type = str, minimum: float | None = None, description: str = ""):
    return Setting("wisc_slurm", key, default, kind, minimum, description)


def _scheduler(key: str, default: str, kind: type = str, minimum: float | None = None, description: str = ""):
    return Setting("wisc_scheduler", key, default, kind, minimum, description)


SETTINGS: dict[tuple[str, str], Setting] = {
    (s.section, s.key): s
    for s in [
        _wisc("projects_file", "projects.yaml", Path, description="YAML stream of project/project_directory"),
        _wisc("subjects_dir", "subjects", Path, description="folder of <SUBJECT>.yml files"),
        _wisc("exclusions_project", "shared", description="project holding <probe>.ap.artifacts.htsv"),
        _wisc(
            "cache_file", "", description="Parquet file table; empty: <subjects_dir>/file_table_cache.parquet"
        ),
        _wisc("executor", "local", description="local, docker or slurm: where step programs run"),
        _wisc("prepro_device", "auto", description="engine device: auto (CUDA when free), cpu or cuda"),
        _wisc("disk_reserve_gb", "0", float, 0, "GiB kept free on a drive when writing recording.dat"),
        _wisc("chronic_threshold_hours", "6.0", float, 0, "kept hours from which a recording is chronic"),
        _wisc("gpu_units_chronic", "2", int, 0, "GPU units a chronic sort takes (two never share a GPU)"),
        _wisc("gpu_units_acute", "1", int, 0, "GPU units an acute sort takes"),
        _wisc("gpu_capacity", "3", int, 1, "units per GPU device"),
        _wisc("gpu_resource", "gpu", description="Luigi resource name (gpu@host for per-host caps)"),
        _wisc("gpu_devices", "", description="device ids to use, e.g. 0,1 (default: CUDA_VISIBLE_DEVICES)"),
        _wisc("gpu_lock_dir", "/tmp/wisc-sorting-gpu-locks", Path, description="host-local device locks"),
        _wisc("gpu_lock_timeout_s", "86400", float, 0, "seconds a sort waits for a device lock"),
        _wisc("verbose", "0", int, 0, "1: step output, library warnings, Luigi's summaries on the terminal"),
        _wisc("image_si", "", description="SpikeInterface image name (default wisc-sorting-si:<version>)"),
        _wisc(
            "slurm_gpu_gres",
            "shard",
            description="SLURM gres of GPU steps: shard (units), gpu[:type] (a GPU)",
        ),
        _wisc("image_ks25", "", description="Kilosort 2.5 image name (default wisc-sorting-ks25:<version>)"),
        _scheduler("address", "127.0.0.1", description="luigid has no authentication: loopback by default"),
        _scheduler("port", "8082", int, 1),
        _scheduler("state_dir", "~/.wisc-sorting/scheduler", Path, description="state, history, logs"),
        _scheduler("remove_delay", "172800", int, 0, "seconds finished tasks stay visible (two days)"),
        _scheduler("worker_disconnect_delay", "600", int, 1, "a busy worker's ping may be late"),
        _scheduler("retry_delay", "900", int, 0),
        _scheduler("retry_count", "1", int, 1, "a failed step waits for the user: no retry loop"),
        _scheduler("watch_interval", "5", float, 0, "seconds between GPU-wait notes (0: no watcher)"),
        _slurm("partition", "", description="sbatch --partition (empty: the cluster's default)"),
        _slurm("account", "", description="sbatch --account (empty: the user's default)"),
        _slurm("sbatch_options", "", description="more sbatch options, shell-quoted, e.g. --qos=long"),
        _slurm("python", "", description="command running `-m containers` on the nodes (empty: this python)"),
        _slurm("time_factor", "3.0", float, 0, "job time limit: hours per kept hour of recording"),
        _slurm("min_time_minutes", "60", int, 1, "shortest job time limit"),
        _slurm(
            "mem_gb", "8", float, 0.1, "GiB a step's job asks for, plus mem_gb_per_hour (the sort: twice)"
        ),
        _slurm("mem_gb_per_hour", "0.5", float, 0, "GiB more per kept hour of recording"),
        _slurm("poll_s", "10", float, 0.1, "seconds between squeue polls of a step's job"),
    ]
}


def _spec(section: str, key: str) -> Setting:
    try:
        return SETTINGS[(section, key)]
    except KeyError:
        raise KeyError(f"[{section}] {key} is not a declared setting (tasks/settings.py)") from None


def raw(key: str, section: str = "wisc", override: object = None) -> str:
    """The text of a setting: a non-empty override, else its env variable, else luigi.cfg, else default."""
    spec = _spec(section, key)
    if override not in (None, ""):
        return str(override).strip()
    value = luigi.configuration.get_config().get(section, key, spec.default)
    return os.environ.get(spec.env, str(value)).strip()


def get(key: str, section: str = "wisc", override: object = None):
    """A setting with its type; a bad value is a one-line error naming the section, key and variable."""
    spec = _spec(section, key)
    text = raw(key, section, override) or spec.default
    if spec.kind is str:
        return text
    if spec.kind is Path:
        return Path(text).expanduser()
    try:
        value = spec.kind(text)
    except ValueError:
        value = None
    if value is None or value != value or (spec.minimum is not None and value < spec.minimum):
        at_least = f" >= {spec.minimum:g}" if spec.minimum is not None else ""
        raise UserError(
            f"[{section}] {key} = {text!r} (luigi.cfg or {spec.env}) is not a {spec.kind.__name__}"
            f"{at_least}; "
            f"set it like the default {spec.default}"
        )
    return value


def disk_reserve_bytes() -> int:
    """Bytes to leave free on a drive: `[wisc] disk_reserve_gb` (GiB) or WISC_DISK_RESERVE_GB."""
    return int(get("disk_reserve_gb") * 2**30)


@dataclass(frozen=True)
class Paths:
    projects_file: Path
    subjects_dir: Path
    exclusions_project: str
    cache_file: Path


def load_paths(**overrides: str | Path | None) -> Paths:
    """Where the lab's inputs live; flags (overrides) win over env variables and luigi.cfg."""
    subjects_dir = get("subjects_dir", override=overrides.get("subjects_dir"))
    cache = raw("cache_file", override=overrides.get("cache_file"))
    return Paths(
        projects_file=get("projects_file", override=overrides.get("projects_file")),
        subjects_dir=subjects_dir,
        exclusions_project=get("exclusions_project", override=overrides.get("exclusions_project")),
        cache_file=Path(cache).expanduser() if cache else subjects_dir / "file_table_cache.parquet",
    )


def export_paths(paths: Paths) -> None:
    """Hand resolved paths to Luigi tasks (maybe in other worker processes), which resolve them again."""
    os.environ.update(
        {
            "WISC_PROJECTS_FILE": str(paths.projects_file.resolve()),
            "WISC_SUBJECTS_DIR": str(paths.subjects_dir.resolve()),
            "WISC_EXCLUSIONS_PROJECT": paths.exclusions_project,
            "WISC_CACHE_FILE": str(paths.cache_file.resolve()),
        }
    )
