"""Where the lab's inputs live: the [wisc] section of luigi.cfg, then WISC_* env vars, then CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import luigi.configuration

SECTION = "wisc"
DEFAULTS = {
    "projects_file": "projects.yaml",
    "subjects_dir": "subjects",
    "exclusions_project": "shared",
    "cache_file": "",  # empty: <subjects_dir>/file_table_cache.parquet
}


@dataclass(frozen=True)
class Paths:
    projects_file: Path
    subjects_dir: Path
    exclusions_project: str
    cache_file: Path


def load_paths(**overrides: str | Path | None) -> Paths:
    """Resolve the input locations. Later sources win: luigi.cfg [wisc] < WISC_<KEY> env < overrides."""
    cfg = luigi.configuration.get_config()
    values: dict[str, str] = {}
    for key, default in DEFAULTS.items():
        value = cfg.get(SECTION, key, default)
        value = os.environ.get(f"WISC_{key.upper()}", value)
        if overrides.get(key) not in (None, ""):
            value = str(overrides[key])
        values[key] = value
    subjects_dir = Path(values["subjects_dir"]).expanduser()
    cache = values["cache_file"] or str(subjects_dir / "file_table_cache.parquet")
    return Paths(
        projects_file=Path(values["projects_file"]).expanduser(),
        subjects_dir=subjects_dir,
        exclusions_project=values["exclusions_project"],
        cache_file=Path(cache).expanduser(),
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
