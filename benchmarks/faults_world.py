"""Fault-injection harness, the world and the processes: the demo world with its sorting and home projects,
the hand-made curation, which step program runs under a command, and what a kill interrupts."""

from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import REPO

POSTPRO = "postpro_faults"
UNITS = 5
ORPHAN_WAIT_S = 30.0


@dataclass
class World:
    """The demo world, the sorting project on this disk and the home project on its own tmpfs."""

    work: Path
    home_mount: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def world(self) -> Path:
        return self.work / "world"

    @property
    def projects_file(self) -> Path:
        return self.work / "projects.yaml"

    def target(self, project_dir: Path):
        from tasks.core.layout import SortingDir
        from tests.support.pipeline_world import EXPERIMENT, PROBE, SUBJECT

        return SortingDir.locate(project_dir, EXPERIMENT, "full", SUBJECT, PROBE)

    @property
    def source(self):
        return self.target(self.work / "ssd")

    @property
    def destination(self):
        return self.target(self.home_mount / "home")

    def argv(self, phase: str, n_jobs: int) -> list[str]:
        from tests.support.cli import WISC_SORT
        from tests.support.pipeline_world import EXPERIMENT, PROBE, SUBJECT

        common = [
            "--projects-file", str(self.projects_file), "--project", "shared_ssd",
            "--experiment", EXPERIMENT, "--input", f"{SUBJECT},{PROBE}",
        ]  # fmt: skip
        if phase == "finalize":
            return [WISC_SORT, "finalize", *common, "--postpro", POSTPRO, "--to", "home"]
        paths = [
            "--subjects-dir",
            str(self.world / "subjects"),
            "--cache-file",
            str(self.work / "cache.parquet"),
        ]
        run = ["--n-jobs", str(n_jobs), "--local-scheduler"]
        opts = self.work / ("sorting.yaml" if phase == "sort" else f"{POSTPRO}.yaml")
        return [WISC_SORT, phase, *common, *paths, *run, "--opts", str(opts)]

    def reset(self) -> None:
        """No sorting anywhere: the next round starts from the raw data."""
        for root in (self.work / "ssd", self.home_mount / "home"):
            shutil.rmtree(root, ignore_errors=True)


def build_world(work: Path, home_mount: Path, duration_s: float) -> World:
    import yaml

    from containers.demo.world import write_demo_world
    from tests.support.pipeline_world import fast_options

    world = World(work, home_mount)
    if not (world.world / "README.txt").exists():
        write_demo_world(world.world, duration_s=duration_s, num_units=UNITS, seed=1, flat_s=1.0)
    world.projects_file.write_text(
        f"project: shared\nproject_directory: {world.world / 'shared'}\n...\n---\n"
        f"project: shared_ssd\nproject_directory: {work / 'ssd'}\n...\n---\n"
        f"project: home\nproject_directory: {home_mount / 'home'}\n...\n"
    )
    opts = fast_options()
    drift = next(s for s in opts["preprocessing"] if s["step_name"] == "drift_correction")["step_params"]
    drift["estimate_motion_kwargs"]["bin_s"] = drift["clean_motion_kwargs"]["sigma_smooth_s"] = 1.5
    # A seeded sort, one level of splits: the pipeline is under test here, not the sorter.
    opts["sorting"]["sorter_params"] = {"seed": 0, "clustering_recursive_depth": 1}
    (work / "sorting.yaml").write_text(yaml.safe_dump(opts, sort_keys=False))
    post = yaml.safe_load((REPO / "opts" / "postpro_demo.yaml").read_text())
    post.pop("by_hypnogram_state")  # no hypnogram here; the curation is the harness's, by hand
    post.pop("curation")
    post["plots"]["max_unit_plots"] = 4
    (work / f"{POSTPRO}.yaml").write_text(yaml.safe_dump(post, sort_keys=False))
    world.env = {**os.environ, "PYTHONPATH": str(REPO), "WISC_DISK_RESERVE_GB": "0"}
    return world


def curate(world: World) -> dict[str, str]:
    """What a person does in phy: every unit labelled (good, mua, noise in turn); the files' hashes."""
    import numpy as np

    from benchmarks.faults_checks import sha256

    out = world.source.sorter_output
    units = np.unique(np.load(out / "spike_clusters.npy"))
    groups = ("good", "mua", "noise")
    (out / "cluster_group.tsv").write_text(
        "cluster_id\tgroup\n" + "".join(f"{u}\t{groups[i % 3]}\n" for i, u in enumerate(units))
    )
    (out / "cluster_info.tsv").write_text(
        "cluster_id\tgroup\tcomment\n"
        + "".join(f"{u}\t{groups[i % 3]}\tby hand\n" for i, u in enumerate(units))
    )
    rel = out.relative_to(world.source.root)
    return {f"{rel}/{name}": sha256(out / name) for name in ("cluster_group.tsv", "cluster_info.tsv")}


def step_child(proc) -> tuple[object, str]:
    """The step program running under the command (`python -m containers <step>`), and its step name."""
    import psutil

    try:
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return None, ""
    for child in children:
        try:
            cmdline = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if (
            "containers" in cmdline
            and cmdline.index("containers") > 0
            and cmdline[cmdline.index("containers") - 1] == "-m"
        ):
            return child, cmdline[cmdline.index("containers") + 1]
    return None, ""


def where_now(world: World, phase: str, step: str) -> str:
    """What a kill interrupts: the step program's step (a postpro stage by the first not done), finalize's
    journal phase, or the worker between steps."""
    from tasks.finalize.finalize import read_journal

    if phase == "finalize":
        journal = read_journal(world.destination.root) or read_journal(world.source.root)
        return f"finalize: {journal['phase'] if journal else 'planning'}"
    if step.startswith("postpro."):
        from tasks.steps.postpro_stages import PostproSet, expected_stages, stage_status, stages

        pset = PostproSet(world.source, POSTPRO)
        try:
            exp = expected_stages(pset)
            todo = [s for s in stages(pset.load_options()) if stage_status(pset, s, exp[s]) != "done"]
        except (OSError, ValueError, KeyError):
            todo = []
        return f"postpro: {todo[0] if todo else 'finishing'}"
    return step or f"{phase}: worker between steps"


def wait_group_gone(pgid: int) -> list[str]:
    """Every process of the command's group must end with it (the step dies with its worker); those still
    there after ORPHAN_WAIT_S are named (and then killed, so the next run is not disturbed)."""
    import psutil

    end = time.monotonic() + ORPHAN_WAIT_S
    while time.monotonic() < end:
        left = [p for p in psutil.process_iter(["pid"]) if _group(p) == pgid]
        if not left:
            return []
        time.sleep(0.05)
    names = [" ".join(p.cmdline()[:6]) for p in left if p.is_running()]
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return names


def _group(proc) -> int:
    try:
        return os.getpgid(proc.pid)
    except (ProcessLookupError, PermissionError):
        return -1
