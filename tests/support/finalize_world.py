"""Test helper: a sorting tree as the pipeline leaves it before finalize, built directly on disk.

The move engine does not care what the bytes mean, so the big files (recording.dat, analyzer arrays) are
random bytes; what the preconditions read is real: phy's curation tables, spike_clusters.npy, and the step
and postprocessing manifests written by the pipeline's own functions (tasks.core.manifest,
tasks.steps.postpro_stages).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from tasks.core.layout import SortingDir
from tasks.core.manifest import now, write_manifest
from tasks.steps.postpro_stages import (
    PostproSet,
    expected_stages,
    stage_outputs,
    stages,
    write_stage_manifest,
)
from tasks.steps.registry import expected

EXPERIMENT, ALIAS, SUBJECT, PROBE = "novel_objects", "full", "CNPIX99-Test", "imec0"
POSTPRO = "postpro_chronic_df"
KiB, MiB = 2**10, 2**20
POSTPRO_OPTS = {
    "analyzer": {"waveforms": {"ms_before": 1.0, "ms_after": 1.5}},
    "extensions": {"spike_amplitudes": {}},
    "quality_metrics": {"metric_names": ["num_spikes", "firing_rate"]},
    "plots": {"enabled": True},
}
CURATED = ("si_output/sorter_output/cluster_group.tsv", "si_output/sorter_output/cluster_info.tsv")
METRICS = f"{POSTPRO}/metrics.csv"
RECORDING_DAT = "si_output/sorter_output/recording.dat"
PARAMS = "si_output/sorter_output/params.py"


@dataclass
class FinalizeWorld:
    """projects.yaml with `shared_ssd` (where sortings are made) and `shared` (their home)."""

    folder: Path
    ssd: Path
    shared: Path

    @property
    def projects_file(self) -> Path:
        return self.folder / "projects.yaml"

    def write_projects(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.projects_file.write_text(
            f"project: shared\nproject_directory: {self.shared}\n...\n"
            f"project: shared_ssd\nproject_directory: {self.ssd}\n...\n"
        )

    def source(self, probe: str = PROBE) -> SortingDir:
        return SortingDir.locate(self.ssd, EXPERIMENT, ALIAS, SUBJECT, probe)

    def destination(self, probe: str = PROBE) -> SortingDir:
        return SortingDir.locate(self.shared, EXPERIMENT, ALIAS, SUBJECT, probe)

    def argv(self, *extra: str, probes: tuple[str, ...] = (PROBE,)) -> list[str]:
        inputs = [arg for probe in probes for arg in ("--input", f"{SUBJECT},{probe}")]
        return [
            "finalize",
            "--projects-file", str(self.projects_file),
            "--project", "shared_ssd",
            "--experiment", EXPERIMENT,
            "--alias", ALIAS,
            *inputs,
            "--postpro", POSTPRO,
            *extra,
        ]  # fmt: skip


def make_world(folder: Path, ssd: Path, shared: Path) -> FinalizeWorld:
    world = FinalizeWorld(folder, ssd, shared)
    world.write_projects()
    return world


def _random_file(path: Path, size: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())


def build_sorting(
    sorting: SortingDir,
    *,
    n_units: int = 6,
    uncurated: tuple[int, ...] = (),
    dat_bytes: int = 256 * KiB,
    big_files: int = 2,
    big_bytes: int = 512 * KiB,
    n_plots: int = 6,
    dat_path: str = "recording.dat",
    seed: int = 0,
) -> None:
    """A finished sort, curated in phy (but `uncurated` units), with postprocessing POSTPRO done."""
    rng = np.random.default_rng(seed)
    root, out = sorting.root, sorting.sorter_output
    out.mkdir(parents=True, exist_ok=True)
    sorting.opts.write_text(yaml.safe_dump({"sorting": {"sorter_name": "tridesclous2"}}))
    sorting.segments.write_text(
        "fname\ttype\tnSegmentSamp\timSampRate\nr1_g0_t0.imec0.ap.bin\tkeep\t60000\t30000.0\n"
    )
    _random_file(sorting.preprocessing / "peaks.npy", 64 * KiB, rng)
    (root / "preprocessed_si_probe.json").write_text('{"probes": []}\n')
    _random_file(out / "recording.dat", dat_bytes, rng)
    clusters = np.repeat(np.arange(n_units), 50)
    np.save(out / "spike_times.npy", np.sort(rng.integers(0, 60000, clusters.size)).astype(np.int64))
    np.save(out / "spike_clusters.npy", clusters.astype(np.int32))
    _random_file(out / "templates.npy", 96 * KiB, rng)
    (out / "params.py").write_text(
        f"dat_path = {dat_path!r}\nn_channels_dat = 384\ndtype = 'int16'\noffset = 0\n"
        "sample_rate = 30000.0\nhp_filtered = True\n"
    )
    labelled = [u for u in range(n_units) if u not in uncurated]
    groups = ["good", "mua", "noise"]
    (out / "cluster_group.tsv").write_text(
        "cluster_id\tgroup\n" + "".join(f"{u}\t{groups[u % 3]}\n" for u in labelled)
    )
    (out / "cluster_info.tsv").write_text(
        "cluster_id\tAmplitude\tgroup\n" + "".join(f"{u}\t{10 + u}.5\t{groups[u % 3]}\n" for u in labelled)
    )
    (out / ".phy").mkdir(exist_ok=True)
    _random_file(out / ".phy" / "spikes_per_cluster.pkl", 8 * KiB, rng)
    for step in ("preprocessed_probe", "recording_dat", "sort"):
        write_manifest(sorting, expected(sorting, step), now())
    _build_postpro(sorting, n_units, big_files, big_bytes, n_plots, rng)


def _build_postpro(
    sorting: SortingDir, n_units: int, big_files: int, big_bytes: int, n_plots: int, rng
) -> None:
    pset = PostproSet(sorting, POSTPRO)
    pset.folder.mkdir(parents=True, exist_ok=True)
    pset.opts.write_text(yaml.safe_dump(POSTPRO_OPTS, sort_keys=False))
    opts = pset.load_options()
    for stage in stages(opts):
        for rel in stage_outputs(stage):
            if not Path(rel).suffix:  # folders; the csv files are written below
                (pset.folder / rel).mkdir(parents=True, exist_ok=True)
    ext = pset.analyzer / "extensions"
    for i in range(big_files):
        _random_file(ext / "templates" / f"average_{i}.npy", big_bytes, rng)
    _random_file(ext / "noise_levels" / "noise_levels.npy", 4 * KiB, rng)
    _random_file(ext / "spike_amplitudes" / "amplitudes.npy", 32 * KiB, rng)
    (ext / "quality_metrics" / "metrics.csv").write_text(
        "cluster_id,num_spikes,firing_rate\n" + "".join(f"{u},50,{u / 7:.6f}\n" for u in range(n_units))
    )
    (pset.folder / "metrics.csv").write_text(
        "cluster_id,group,num_spikes,firing_rate\n"
        + "".join(f"{u},{['good', 'mua', 'noise'][u % 3]},50,{u / 7:.6f}\n" for u in range(n_units))
    )
    for i in range(n_plots):
        _random_file(pset.folder / "summary_plots" / f"unit_{i:04d}.png", 12 * KiB, rng)
    for stage in stages(opts):  # any other output a stage declares (e.g. quality_metrics.csv)
        for rel in stage_outputs(stage):
            if not (pset.folder / rel).exists():
                (pset.folder / rel).write_text(f"cluster_id,{stage}\n0,1\n")
    for exp in expected_stages(pset).values():
        write_stage_manifest(pset, exp, now())


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> 'dir', 'link:<target>' or the file's sha256: the tree, file by file."""
    tree = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                tree[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                tree[rel] = "dir"
            else:
                tree[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tree
