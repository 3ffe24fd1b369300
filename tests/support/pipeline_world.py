"""A small generated demo world and helpers to run `wisc-sort sort` on it, shared by the pipeline tests."""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.core.layout import SortingDir
from tests.support.cli import main_keeping_env

REPO = Path(__file__).resolve().parents[2]
DEMO_OPTS = REPO / "opts" / "sorting_demo.yaml"
EXPERIMENT, SUBJECT, PROBE = "demo_experiment", "DEMO1-Mouse", "imec0"


def drift_params(opts: dict) -> dict:
    """The drift_correction step's params in an options dict (edited in place by tests)."""
    return next(s for s in opts["preprocessing"] if s["step_name"] == "drift_correction")["step_params"]


def edit_drift(sorting: SortingDir, key: str, **values) -> dict:
    """Update drift_correction's `key` params in the sorting's opts.yaml; returns the old ones."""
    opts = yaml.safe_load(sorting.opts.read_text())
    drift = drift_params(opts)
    old = dict(drift[key])
    drift[key].update(values)
    sorting.opts.write_text(yaml.safe_dump(opts, sort_keys=False))
    return old


def fast_options(localize: str = "center_of_mass") -> dict:
    """The demo options with cheap choices where the test is about the pipeline, not SpikeInterface."""
    opts = yaml.safe_load(DEMO_OPTS.read_text())
    drift = drift_params(opts)
    if localize == "center_of_mass":
        drift["localize_peaks_kwargs"] = {"method": "center_of_mass", "radius_um": 75.0}
    drift["estimate_motion_kwargs"]["bin_s"] = 5.0
    drift["clean_motion_kwargs"]["sigma_smooth_s"] = 5.0
    return opts


@dataclass
class World:
    """A demo world plus one projects file per test, so each test sorts into its own folder."""

    folder: Path

    @property
    def subjects_dir(self) -> Path:
        return self.folder / "subjects"

    def projects_file(self, sorting_root: Path) -> Path:
        """shared_ssd -> `sorting_root/ssd`; shared -> `sorting_root/shared` if a test made its own copy."""
        path = sorting_root / "projects.yaml"
        sorting_root.mkdir(parents=True, exist_ok=True)
        shared = sorting_root / "shared" if (sorting_root / "shared").is_dir() else self.folder / "shared"
        path.write_text(
            f"project: shared\nproject_directory: {shared}\n...\n---\n"
            f"project: shared_ssd\nproject_directory: {sorting_root / 'ssd'}\n...\n"
        )
        return path

    def sorting(self, sorting_root: Path) -> SortingDir:
        return SortingDir.locate(sorting_root / "ssd", EXPERIMENT, "full", SUBJECT, PROBE)

    def argv(self, sorting_root: Path, *extra: str, n_jobs: int = 2) -> list[str]:
        return [
            "sort",
            "--projects-file", str(self.projects_file(sorting_root)),
            "--subjects-dir", str(self.subjects_dir),
            "--cache-file", str(sorting_root / "cache.parquet"),
            "--project", "shared_ssd",
            "--experiment", EXPERIMENT,
            "--input", f"{SUBJECT},{PROBE}",
            "--n-jobs", str(n_jobs),
            "--local-scheduler",
            *extra,
        ]  # fmt: skip

    def run(self, sorting_root: Path, *extra: str, n_jobs: int = 2) -> int:
        # The CLI exports WISC_* paths for its Luigi workers: keep them out of other tests.
        return main_keeping_env(self.argv(sorting_root, *extra, n_jobs=n_jobs))


def write_options(path: Path, opts: dict) -> Path:
    path.write_text(yaml.safe_dump(copy.deepcopy(opts), sort_keys=False))
    return path


def copy_sorting(source: SortingDir, target: SortingDir) -> None:
    shutil.copytree(source.root, target.root, copy_function=shutil.copy2)


def wait_until(condition, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll `condition()` until it holds or `timeout_s` passes; whether it held."""
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() >= deadline:
            return False
        time.sleep(interval_s)
    return True
