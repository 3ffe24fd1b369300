"""Test helper: a small complete input world (projects, subject, sparse SpikeGLX, exclusions) for the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.sglx_fixtures import META_DIR, write_file

GENUINE_NP1 = META_DIR / "Noise_g0_t0.imec0.ap.meta"  # NP1.0 (imDatPrb_type 0), 385 channels, 30 kHz
RATE = 30000.0
N_CHANS = 385
N_SAMP = 60000  # 2 s per file: sparse, so the size costs nothing
SUBJECT = "CNPIX99-Test"
EXPERIMENT = "novel_objects"
PROBES = ("imec0", "imec1")
# session id -> [(run, gate, trigger, fileCreateTime)]; t10 checks that triggers sort as numbers.
SESSIONS: dict[str, list[tuple[str, int, int, str]]] = {
    "7-10-2021": [
        ("r1", 0, 0, "2021-07-10T10:00:00"),
        ("r1", 0, 1, "2021-07-10T10:01:00"),
        ("r1", 0, 2, "2021-07-10T10:02:00"),
        ("r1", 0, 10, "2021-07-10T10:10:00"),
    ],
    "7-11-2021": [
        ("r2", 0, 0, "2021-07-11T10:00:00"),
        ("r2", 1, 0, "2021-07-11T11:00:00"),
    ],
}
EXCLUSIONS_IMEC0 = [
    ("r1_g0_t1.imec0.ap.bin", "0.5", "1.0", "artifact"),
    ("r2_g0_t0.imec0.ap.bin", "0", "0.25", "flat"),
]
SUBJECT_YAML = """\
---
recording_sessions:
  - id: 7-10-2021
    ap: {s1}
    lf: {s1}
    imSyncType: barcode
  - id: 7-11-2021
    ap: {s2}
    lf: {s2}
    imSyncType: barcode
experiments:
  {experiment}:
    recording_session_ids:
      - 7-10-2021
      - 7-11-2021
    aliases:
      full:
        - start_file: r1_g0_t0
          end_file: r2_g1_t0
      morning:
        - start_time: 2021-07-10 10:00:30
          end_time: 2021-07-10 10:02:30
{extra_aliases}...
"""


@dataclass
class CliWorld:
    root: Path
    projects_file: Path
    subjects_dir: Path
    subject_file: Path
    shared_dir: Path  # project `shared`: holds the exclusions
    ssd_dir: Path  # project `shared_ssd`: where sortings go
    session_dirs: dict[str, Path]
    subject: str = SUBJECT
    experiment: str = EXPERIMENT
    bins: list[Path] = field(default_factory=list)  # every .bin, both probes

    @property
    def cache_file(self) -> Path:
        return self.subjects_dir / "file_table_cache.parquet"

    def bin(self, run: str, gate: int, trigger: int, probe: str = "imec0") -> Path:
        session = next(s for s, files in SESSIONS.items() if any(f[0] == run for f in files))
        gate_dir = f"{run}_g{gate}"
        name = f"{gate_dir}_t{trigger}.{probe}.ap.bin"
        return self.session_dirs[session] / gate_dir / f"{gate_dir}_{probe}" / name

    def exclusions_file(self, probe: str = "imec0") -> Path:
        return self.shared_dir / self.experiment / self.subject / f"{probe}.ap.artifacts.htsv"

    def sorting_dir(self, alias: str = "full", probe: str = "imec0") -> Path:
        return self.ssd_dir / self.experiment / alias / self.subject / f"sorting.{probe}"

    def path_args(self) -> list[str]:
        return ["--projects-file", str(self.projects_file), "--subjects-dir", str(self.subjects_dir)]

    def target_args(
        self, alias: str = "full", probe: str = "imec0", project: str = "shared_ssd"
    ) -> list[str]:
        input_ = f"{self.subject},{probe}"
        return ["--project", project, "--experiment", self.experiment, "--alias", alias, "--input", input_]

    def argv(self, command: str = "segments", *extra: str, **target: str) -> list[str]:
        return [command, *self.target_args(**target), *self.path_args(), *extra]

    def write_subject(self, extra_aliases: str = "") -> None:
        """(Re)write the subject file; `extra_aliases` is YAML indented under `aliases:` (8 spaces)."""
        s1, s2 = (self.session_dirs[s] for s in SESSIONS)
        self.subject_file.write_text(
            SUBJECT_YAML.format(s1=s1, s2=s2, experiment=self.experiment, extra_aliases=extra_aliases)
        )

    def write_exclusions(self, rows: list[tuple[str, ...]], probe: str = "imec0") -> Path:
        path = self.exclusions_file(probe)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["fname\twithinFileStartTime\twithinFileEndTime\ttype", *("\t".join(r) for r in rows)]
        path.write_text("\n".join(lines) + "\n")
        return path


def write_sglx(bin_file: Path, *, created: str, n_samp: int = N_SAMP, **fields: object) -> Path:
    """A sparse `.bin` + genuine NP1.0 `.meta` with this file's name, size, duration and creation time."""
    run, rest = bin_file.name.split("_g", 1)
    gate, trigger = (int(x) for x in rest.split(".")[0].split("_t"))
    probe = bin_file.name.split(".")[1]
    n_chans = int(fields.get("nSavedChans", N_CHANS))
    rate = float(fields.get("imSampRate", RATE))
    meta = {
        "fileSizeBytes": n_samp * 2 * n_chans,
        "fileTimeSecs": repr(n_samp / rate),
        "fileCreateTime": created,
        "firstSample": 1000 + 7 * trigger,
        **fields,
    }
    root = bin_file.parents[2]
    return write_file(root, run, gate, trigger, probe, meta_text=GENUINE_NP1.read_text(), fields=meta)


def build_cli_world(root: Path) -> CliWorld:
    """Write the world under `root` (which must be empty or absent); returns its paths."""
    root = Path(root)
    (root / "subjects").mkdir(parents=True)
    (root / "projects.yaml").write_text(
        "project: shared\nproject_directory: shared\n...\nproject: shared_ssd\nproject_directory: ssd\n...\n"
    )
    world = CliWorld(
        root=root,
        projects_file=root / "projects.yaml",
        subjects_dir=root / "subjects",
        subject_file=root / "subjects" / f"{SUBJECT}.yml",
        shared_dir=root / "shared",
        ssd_dir=root / "ssd",
        session_dirs={s: root / "data" / SUBJECT / s / "SpikeGLX" for s in SESSIONS},
    )
    world.ssd_dir.mkdir()
    for files in SESSIONS.values():
        for run, gate, trigger, created in files:
            for probe in PROBES:
                world.bins.append(write_sglx(world.bin(run, gate, trigger, probe), created=created))
    world.write_subject()
    world.write_exclusions(EXCLUSIONS_IMEC0, "imec0")
    world.write_exclusions([], "imec1")
    return world


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every path under `root` with its kind, size and mtime (ns): equal snapshots = nothing written."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            kind = "dir" if path.is_dir() else "file"
            out[str(path.relative_to(root))] = (kind, 0 if kind == "dir" else st.st_size, st.st_mtime_ns)
    return out


def contents(root: Path) -> dict[str, tuple]:
    """`snapshot` less the folders' mtimes (they move when a lock file beside a sorting comes and goes)."""
    return {k: v if v[0] == "file" else v[:2] for k, v in snapshot(root).items()}
