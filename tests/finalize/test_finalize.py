"""wisc-sort finalize: refusals (nothing changed), the move across two real filesystems and within one,
params.py after the move, --dry-run, --keep-recording-dat, resume after a crash at each point, Luigi."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import luigi
import pytest

from tasks.core import manifest
from tasks.finalize.finalize import JOURNAL_REL, finalize_state, read_journal
from tasks.finalize.relocate import CRASH_ENV
from tasks.phy.params import NOTE_PREFIX, check_params, read_dat_paths
from tasks.phy.validation import read_params
from tasks.steps.finalize import Finalize
from tasks.steps.postpro_state import postpro_status
from tests.support.cli import run_cli
from tests.support.disks import mounted_tmpfs
from tests.support.finalize_world import (
    CURATED,
    METRICS,
    PARAMS,
    POSTPRO,
    RECORDING_DAT,
    MiB,
    build_sorting,
    make_world,
    snapshot,
)

REPO = Path(__file__).resolve().parents[2]
REWRITTEN = (PARAMS, ".pipeline/sort.json")


@pytest.fixture(autouse=True)
def no_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WISC_DISK_RESERVE_GB", "0")


@pytest.fixture
def two_drives(tmp_path: Path):
    """A world whose `shared_ssd` and `shared` projects are two separate tmpfs filesystems."""
    with mounted_tmpfs(tmp_path / "ssd", 32), mounted_tmpfs(tmp_path / "shared", 32):
        world = make_world(tmp_path / "cfg", tmp_path / "ssd" / "proj", tmp_path / "shared" / "proj")
        build_sorting(world.source())
        yield world


@pytest.fixture
def one_drive(tmp_path: Path):
    world = make_world(tmp_path / "cfg", tmp_path / "ssd", tmp_path / "shared")
    build_sorting(world.source())
    return world


def expected_tree(before: dict[str, str], *, keep_dat: bool = False) -> dict[str, str]:
    tree = {k: v for k, v in before.items() if keep_dat or k != RECORDING_DAT}
    for rel in REWRITTEN:  # params.py (dat_path note) and the sort manifest (its new size): checked apart
        tree.pop(rel)
    return tree


def assert_moved(world, before: dict[str, str], *, keep_dat: bool = False) -> dict[str, str]:
    dst = world.destination()
    after = snapshot(dst.root)
    assert after.pop(JOURNAL_REL) and after.pop("postpro") == f"link:{POSTPRO}"
    for rel in REWRITTEN:
        after.pop(rel)
    assert after.pop("report.html")  # rewritten in the new home, with the finalize record
    after.pop(".pipeline/report.cache.json", None)
    assert after == expected_tree(before, keep_dat=keep_dat)  # file by file, content hashes
    for rel in (*CURATED, METRICS):
        assert after[rel] == before[rel]  # curated labels and metrics byte-identical
    assert not world.source().root.exists()
    assert finalize_state(dst.root) == "finalized"
    assert (dst.root / "postpro" / "metrics.csv").is_file()
    return after


def test_finalize_across_two_filesystems(two_drives, capsys) -> None:
    world = two_drives
    before = snapshot(world.source().root)
    code, out, err = run_cli(world.argv(), capsys)
    assert (code, err) == (0, "")
    assert "(copy)" in out and "deleted si_output/sorter_output/recording.dat (256 KiB)" in out
    assert_moved(world, before)
    dst = world.destination()
    params = dst.path(PARAMS)
    assert read_params(params)["dat_path"] == "recording.dat"  # parsed as phy reads it
    assert NOTE_PREFIX in params.read_text() and "recording.dat (256 KiB) deleted" in params.read_text()
    assert "deleted (noted in params.py)" in check_params(params)
    journal = read_journal(dst.root)
    assert journal["method"] == "copy" and journal["phase"] == "done"
    files = [e for e in journal["entries"].values() if e["kind"] == "file"]
    assert files and all(e["state"] == "verified" and len(e["sha256"]) == 64 for e in files)
    # The pipeline still sees a finished sort and postprocessing where the sorting now lives.
    assert manifest.status(dst, "sort") == "done"
    assert postpro_status(dst, POSTPRO) == "done"
    # Rerunning is a no-op.
    code, out, _ = run_cli(world.argv(), capsys)
    assert code == 0 and "already finalized" in out


def test_finalize_on_one_filesystem_is_a_rename(one_drive, capsys) -> None:
    world = one_drive
    before = snapshot(world.source().root)
    inode = world.source().path(METRICS).stat().st_ino
    code, out, err = run_cli(world.argv(), capsys)
    assert (code, err) == (0, "") and "(rename)" in out
    assert_moved(world, before)
    assert world.destination().path(METRICS).stat().st_ino == inode  # renamed, not copied
    assert read_journal(world.destination().root)["method"] == "rename"


def test_keep_recording_dat_moves_it_and_dat_path_resolves(two_drives, capsys) -> None:
    world = two_drives
    before = snapshot(world.source().root)
    code, _, err = run_cli(world.argv("--keep-recording-dat"), capsys)
    assert (code, err) == (0, "")
    assert_moved(world, before, keep_dat=True)
    params = world.destination().path(PARAMS)
    assert check_params(params).endswith("dat_path resolves")
    assert NOTE_PREFIX not in params.read_text()


def test_absolute_dat_path_is_made_relative(tmp_path: Path, capsys) -> None:
    world = make_world(tmp_path / "cfg", tmp_path / "ssd", tmp_path / "shared")
    src = world.source()
    build_sorting(src, dat_path=str(src.sorter_output / "recording.dat"))
    lines_before = src.path(PARAMS).read_text().splitlines()
    assert run_cli(world.argv("--keep-recording-dat"), capsys)[0] == 0
    params = world.destination().path(PARAMS)
    assert read_dat_paths(params) == ["recording.dat"]
    assert (params.parent / "recording.dat").is_file()
    lines_after = params.read_text().splitlines()
    assert lines_after[1:] == lines_before[1:]  # every other line kept


def test_dry_run_prints_the_plan_and_changes_nothing(two_drives, capsys) -> None:
    world = two_drives
    before = snapshot(world.source().root)
    code, out, err = run_cli(world.argv("--dry-run"), capsys)
    assert (code, err) == (0, "")
    assert "delete si_output/sorter_output/recording.dat (256 KiB)" in out
    assert f"link postpro -> {POSTPRO}" in out
    dst = world.destination().root
    files = [rel for rel in before if before[rel] != "dir" and rel != RECORDING_DAT]
    size = sum((world.source().root / rel).stat().st_size for rel in files)
    assert f"move to {dst}: copy {len(files)} files" in out and f"({size} bytes) across filesystems" in out
    assert snapshot(world.source().root) == before and not dst.exists()


def test_several_inputs_are_all_checked_before_any_moves(two_drives, capsys) -> None:
    world = two_drives
    build_sorting(world.source("imec1"), uncurated=(3,))
    before = snapshot(world.ssd)
    code, _, err = run_cli(world.argv(probes=("imec0", "imec1")), capsys)
    assert code == 2 and "1 of 6 units lack a group: 3" in err
    assert snapshot(world.ssd) == before and not world.shared.exists()


# --- Refusals: one line, exit 2, nothing changed on either drive ---------------------------------------


def unlocked(tree: dict[str, str] | None) -> dict[str, str] | None:
    """A snapshot less the sortings' lock files (a crashed run's stale lock is cleared by the next run)."""
    return None if tree is None else {k: v for k, v in tree.items() if not k.endswith(".lock")}


def refused(world, capsys, *extra: str) -> str:
    before, before_dst = snapshot(world.ssd), snapshot(world.shared) if world.shared.exists() else None
    code, out, err = run_cli(world.argv(*extra), capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("wisc-sort: error: ")
    assert unlocked(snapshot(world.ssd)) == unlocked(before)
    assert unlocked(snapshot(world.shared) if world.shared.exists() else None) == unlocked(before_dst)
    return err


def test_refuses_uncurated_units(tmp_path: Path, capsys) -> None:
    world = make_world(tmp_path / "cfg", tmp_path / "ssd", tmp_path / "shared")
    build_sorting(world.source(), uncurated=(2, 4))
    err = refused(world, capsys)
    assert "curation incomplete" in err and "2 of 6 units lack a group: 2, 4" in err


def test_refuses_postprocessing_not_done(one_drive, capsys) -> None:
    world = one_drive
    err = refused(world, capsys, "--postpro", "postpro_acute_df")
    assert "postprocessing postpro_acute_df is missing, not done" in err
    # Curation edited after postprocessing: metrics.csv no longer matches phy's labels.
    relabelled = "cluster_id\tgroup\n" + "".join(f"{u}\tgood\n" for u in range(6))
    (world.source().sorter_output / "cluster_group.tsv").write_text(relabelled)
    err = refused(world, capsys)
    assert f"postprocessing {POSTPRO} is stale, not done" in err


def test_refuses_when_destination_holds_the_sorting(one_drive, capsys) -> None:
    world = one_drive
    (world.destination().root / "si_output").mkdir(parents=True)
    err = refused(world, capsys)
    assert f"{world.destination().root}: project shared already holds this sorting" in err


def test_refuses_without_room(tmp_path: Path, capsys) -> None:
    with mounted_tmpfs(tmp_path / "ssd", 32), mounted_tmpfs(tmp_path / "shared", 1):
        world = make_world(tmp_path / "cfg", tmp_path / "ssd" / "proj", tmp_path / "shared" / "proj")
        build_sorting(world.source())
        err = refused(world, capsys)
        assert "needs 1.28 MiB to copy the sorting on project shared's drive, 1 MiB free" in err
        # recording.dat is deleted, not copied: without it the sorting fits.
        build_sorting(world.source("imec1"), dat_bytes=4 * MiB, big_bytes=64 * 1024)
        assert run_cli(world.argv(probes=("imec1",)), capsys)[0] == 0


def test_refuses_a_postpro_folder_in_the_way(one_drive, capsys) -> None:
    world = one_drive
    (world.source().root / "postpro").mkdir()
    err = refused(world, capsys)
    assert "postpro: exists and is not a symlink" in err


# --- Resume ----------------------------------------------------------------------------------------------


CRASH_POINTS = ["deleted", "verified:3", "copied:5", "dest_journal", "removed:4"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_resume_after_a_crash_at_each_point(two_drives, capsys, point: str) -> None:
    world = two_drives
    before = snapshot(world.source().root)
    env = {**os.environ, CRASH_ENV: point, "PYTHONPATH": str(REPO)}
    code = f"import sys; from tasks.commands.cli import main; sys.exit(main({world.argv()!r}))"
    crashed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert crashed.returncode == 77, crashed.stderr
    src_state, dst_state = finalize_state(world.source().root), finalize_state(world.destination().root)
    assert "in progress" in (src_state, dst_state)
    code_, out, err = run_cli(world.argv(), capsys)
    assert (code_, err) == (0, ""), err
    assert_moved(world, before)
    assert not list(world.destination().root.rglob("*wisc-*"))  # no temporary file left


def test_resume_with_other_settings_is_refused(two_drives, capsys) -> None:
    world = two_drives
    env = {**os.environ, CRASH_ENV: "verified:2", "PYTHONPATH": str(REPO)}
    code = f"import sys; from tasks.commands.cli import main; sys.exit(main({world.argv()!r}))"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode == 77
    err = refused(world, capsys, "--keep-recording-dat")
    assert "a finalize with other settings is in progress: keep_recording_dat False (asked True)" in err


# --- Luigi -----------------------------------------------------------------------------------------------


def test_luigi_finalize_task_ends_the_dag(one_drive, monkeypatch: pytest.MonkeyPatch) -> None:
    world = one_drive
    monkeypatch.setenv("WISC_PROJECTS_FILE", str(world.projects_file))
    before = snapshot(world.source().root)
    task = Finalize(project="shared_ssd", experiment="novel_objects", subject="CNPIX99-Test", probe="imec0",
                    postpro=POSTPRO)  # fmt: skip
    assert not task.complete()
    assert [t.task_family for t in luigi.task.flatten(task.requires())] == ["Pipeline", "Postpro"]
    result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="CRITICAL")
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    assert_moved(world, before)
    assert task.complete()


def test_luigi_finalize_in_progress_does_not_visit_upstream(two_drives, monkeypatch) -> None:
    world = two_drives
    env = {**os.environ, CRASH_ENV: "deleted", "PYTHONPATH": str(REPO)}
    code = f"import sys; from tasks.commands.cli import main; sys.exit(main({world.argv()!r}))"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode == 77
    monkeypatch.setenv("WISC_PROJECTS_FILE", str(world.projects_file))
    task = Finalize(project="shared_ssd", experiment="novel_objects", subject="CNPIX99-Test", probe="imec0",
                    postpro=POSTPRO)  # fmt: skip
    assert task.requires() == []  # recording.dat is gone: the pipeline must not write it again
    assert luigi.build([task], local_scheduler=True, log_level="CRITICAL")
    assert json.loads((world.destination().root / JOURNAL_REL).read_text())["phase"] == "done"


def test_finalize_in_place_when_already_home(one_drive, capsys) -> None:
    world = one_drive
    src = world.source()
    code, out, err = run_cli(world.argv("--to", "shared_ssd"), capsys)
    assert (code, err) == (0, "") and "(none)" in out
    assert not src.path(RECORDING_DAT).exists() and os.readlink(src.path("postpro")) == POSTPRO
    assert finalize_state(src.root) == "finalized" and not world.destination().root.exists()


def test_luigi_knows_the_finalize_task() -> None:
    code = "import tasks.dag; from luigi.task_register import Register; print(sorted(Register.task_names()))"
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'Finalize'" in names
