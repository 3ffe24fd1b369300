"""Finalize a sorting: refuse unless curated and postprocessed, delete recording.dat, link `postpro -> NAME`,
make phy's params.py location-proof, and move the sorting home (tasks/relocate.py), journaled in
`.pipeline/finalize.json` so that an interrupted finalize resumes where it stopped."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core import atomic, manifest
from tasks.core.atomic import TMP_MARK
from tasks.core.diskspace import full_disk_as_error, human_bytes, require_room
from tasks.core.errors import UserError
from tasks.core.layout import PIPELINE_DIR, SortingDir
from tasks.finalize.relocate import (
    COPY_MARK,
    changed_since_plan,
    copy_tree,
    crash_point,
    existing_parent,
    remove_empty_dirs,
    remove_source,
    rename_tree,
    same_filesystem,
    scan_tree,
    tree_bytes,
)
from tasks.phy.curation import require_curated
from tasks.phy.params import check_params, rewrite_dat_path
from tasks.phy.validation import require_whole_sort
from tasks.settings import disk_reserve_bytes
from tasks.steps.postpro_state import postpro_status

FORMAT = "wisc-finalize/1"
JOURNAL_REL = f"{PIPELINE_DIR}/finalize.json"
RECORDING_DAT = "si_output/sorter_output/recording.dat"
PARAMS = "si_output/sorter_output/params.py"
LINK = "postpro"
# Phases, in order; the journal lives in the source until the copy is verified, then in the destination.
PHASES = ("started", "prepared", "renaming", "copying", "copied", "removing_source", "done")


def journal_path(root: Path) -> Path:
    return Path(root) / JOURNAL_REL


def read_journal(root: Path) -> dict | None:
    try:
        data = json.loads(journal_path(root).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def finalize_state(sorting_root: Path) -> str:
    """'finalized', 'in progress' (a journal exists, not done) or '' (never started) for a sorting folder."""
    journal = read_journal(Path(sorting_root))
    if journal is None:
        return ""
    return "finalized" if journal.get("phase") == "done" else "in progress"


def _skip(rel: str) -> bool:
    """Never planned for the move: the journal (and its temporary copies) travel by their own rules."""
    name = rel.rsplit("/", 1)[-1]
    return rel == JOURNAL_REL or (
        rel.startswith(f"{PIPELINE_DIR}/") and name.startswith(f"finalize{TMP_MARK}")
    )


@dataclass
class Request:
    """One `--input` of `wisc-sort finalize`: where the sorting is and what to do with it."""

    source: SortingDir
    destination: SortingDir
    postpro: str
    to_project: str
    keep_recording_dat: bool = False


@dataclass
class Plan:
    request: Request
    journal: dict | None  # the journal of an interrupted finalize, if any (resume)
    home: Path  # where that journal lives
    method: str  # rename | copy | none (same place) | done (already finalized)
    delete: dict[str, int] = field(default_factory=dict)
    bytes_to_copy: int = 0
    n_files: int = 0
    free: int = 0

    @property
    def resuming(self) -> bool:
        return self.journal is not None and self.method != "done"


def _check_preconditions(req: Request) -> None:
    """The refusals of a fresh finalize, each one line, before anything changes."""
    src = req.source
    require_whole_sort(src)
    require_curated(src.sorter_output)
    state = postpro_status(src, req.postpro)
    if state != "done":
        raise UserError(
            f"{src.root / req.postpro}: postprocessing {req.postpro} is {state}, not done; run it "
            f"(wisc-sort postpro) and finalize again"
        )
    link = src.path(LINK)
    if (link.exists() or link.is_symlink()) and not link.is_symlink():
        raise UserError(f"{link}: exists and is not a symlink; rename it (finalize makes `postpro -> NAME`)")


def _check_room(req: Request, needed: int) -> int:
    return require_room(
        req.destination.root,
        needed,
        f"to copy the sorting on project {req.to_project}'s drive",
        "free space there, or finalize to another --to",
        disk_reserve_bytes(),
    )


def _find_journal(req: Request) -> tuple[dict | None, Path]:
    """The journal of this finalize: the destination's once the copy is verified, else the source's."""
    src, dst = req.source.root, req.destination.root
    at_dst = read_journal(dst)
    if at_dst is not None and at_dst.get("source") == str(src):
        return at_dst, dst
    return read_journal(src), src


def _check_same_request(req: Request, journal: dict, home: Path) -> None:
    asked = {
        "destination": str(req.destination.root),
        "postpro": req.postpro,
        "keep_recording_dat": req.keep_recording_dat,
    }
    differ = [f"{k} {journal.get(k)!r} (asked {v!r})" for k, v in asked.items() if journal.get(k) != v]
    if differ:
        raise UserError(
            f"{journal_path(home)}: a finalize with other settings is in progress: {'; '.join(differ)}; "
            "rerun it with those settings to complete it"
        )


def plan_finalize(req: Request) -> Plan:
    """Check everything (UserError, nothing changed) and say what a finalize will do."""
    src, dst = req.source, req.destination
    journal, home = _find_journal(req)
    if journal is not None and journal.get("phase") == "done":
        if src.root == dst.root or not src.root.exists():
            return Plan(req, journal, home, "done")
        journal = None  # the source was sorted again after an old finalize: the destination refusal applies
    if journal is not None:
        _check_same_request(req, journal, home)
    if journal is None:
        if not src.root.is_dir():
            raise UserError(
                f"{src.root}: no sorting here; check --project, --experiment, --alias and --input"
            )
        _check_preconditions(req)
        if dst.root != src.root and dst.root.exists() and (not dst.root.is_dir() or any(dst.root.iterdir())):
            raise UserError(
                f"{dst.root}: project {req.to_project} already holds this sorting; compare the two and "
                "remove one, or finalize to another --to"
            )
    if src.root == dst.root:
        method = "none"
    elif journal is not None and journal.get("method") in ("copy", "rename"):
        method = journal["method"]
    else:
        method = "rename" if same_filesystem(src.root, dst.root) else "copy"
    plan = Plan(req, journal, home, method)
    dat = src.path(RECORDING_DAT)
    if not req.keep_recording_dat and dat.is_file():
        plan.delete[RECORDING_DAT] = dat.stat().st_size
    if method == "copy":
        if journal is not None and journal.get("entries"):
            entries = journal["entries"]
            todo = [e for e in entries.values() if e["kind"] == "file" and e.get("state") != "verified"]
        elif src.root.is_dir():
            entries = scan_tree(src.root, _skip)
            todo = [e for rel, e in entries.items() if e["kind"] == "file" and rel not in plan.delete]
        else:
            todo = []
        plan.n_files, plan.bytes_to_copy = len(todo), sum(e["size"] for e in todo)
        plan.free = _check_room(req, plan.bytes_to_copy)
    return plan


def check_room_together(plans: list[Plan]) -> None:
    """Several sortings copied to one drive: their bytes together must fit (each was checked alone)."""
    by_drive: dict[int, list[Plan]] = {}
    for plan in plans:
        if plan.method == "copy":
            drive = os.stat(existing_parent(plan.request.destination.root)).st_dev
            by_drive.setdefault(drive, []).append(plan)
    for group in by_drive.values():
        if len(group) > 1:
            _check_room(group[0].request, sum(p.bytes_to_copy for p in group))


def describe(plan: Plan) -> list[str]:
    """The dry-run text: what is deleted (sizes), linked, moved where, bytes to copy."""
    req = plan.request
    src, dst = req.source.root, req.destination.root
    if plan.method == "done":
        return [f"{dst}: already finalized (from {plan.journal.get('source')}); nothing to do"]
    lines = [f"== finalize {src}" + (f" (resuming: {plan.journal.get('phase')})" if plan.resuming else "")]
    for rel, size in plan.delete.items():
        lines.append(f"delete {rel} ({human_bytes(size)})")
    if req.keep_recording_dat and src.joinpath(RECORDING_DAT).exists():
        lines.append(f"keep {RECORDING_DAT} (--keep-recording-dat): it moves too")
    lines.append(f"link {LINK} -> {req.postpro}")
    lines.append(
        f"params.py: dat_path made relative to {PARAMS} (resolves after the move, or noted as deleted)"
    )
    if plan.method == "none":
        lines.append(f"move: none (already in project {req.to_project})")
    elif plan.method == "rename":
        lines.append(f"move to {dst}: rename (same filesystem), 0 B to copy")
    else:
        lines.append(
            f"move to {dst}: copy {plan.n_files} files, {human_bytes(plan.bytes_to_copy)} "
            f"({plan.bytes_to_copy} bytes) across filesystems, verify each (size, sha256), then remove the "
            f"source; {human_bytes(plan.free)} free there"
        )
    return lines


def _new_journal(plan: Plan) -> dict:
    req = plan.request
    return {
        "format": FORMAT,
        "source": str(req.source.root),
        "destination": str(req.destination.root),
        "to_project": req.to_project,
        "postpro": req.postpro,
        "keep_recording_dat": req.keep_recording_dat,
        "method": plan.method,
        "phase": "started",
        "host": platform.node(),
        "pid": os.getpid(),
        "started": manifest.now(),
        "removed": {},
        "linked": {},
        "params": {},
        "entries": {},
    }


def _clean_own_tmp(root: Path) -> None:
    """Temporary files of a killed finalize (journal, params.py, sort manifest, postpro link): only ours."""
    sorting = SortingDir(root)
    for folder, stem, suffix in (
        (sorting.pipeline, "finalize", ".json"),
        (sorting.pipeline, "sort", ".json"),
        (sorting.sorter_output, "params", ".py"),
    ):
        for stale in folder.glob(f"{stem}{TMP_MARK}*{suffix}") if folder.is_dir() else []:
            stale.unlink()
    for stale in root.glob(f"{COPY_MARK}*") if root.is_dir() else []:
        stale.unlink()


def _sync_sort_manifest(sorting: SortingDir, rel: str) -> None:
    """params.py is a sort output: record its new size so that the sort still reads as done."""
    data = manifest.read_manifest(sorting, "sort")
    if data is None or rel not in data.get("outputs", {}):
        return
    size = sorting.path(rel).stat().st_size
    if data["outputs"][rel].get("size") != size:
        data["outputs"][rel]["size"] = size
        data["outputs"][rel]["rewritten_by"] = "finalize"
        atomic.write_json(sorting.manifest("sort"), data)


def _prepare(journal: dict, src: SortingDir, save) -> None:
    """Delete recording.dat, link postpro, rewrite dat_path: each idempotent, so a resume redoes them."""
    _clean_own_tmp(src.root)
    dat = src.path(RECORDING_DAT)
    if not journal["keep_recording_dat"] and dat.is_file():
        journal["removed"][RECORDING_DAT] = {"size": dat.stat().st_size, "at": manifest.now()}
        save()
        dat.unlink()
        atomic.fsync_dir(dat.parent)
        crash_point("deleted")
    link = src.path(LINK)
    if not (link.is_symlink() and os.readlink(link) == journal["postpro"]):
        if link.is_symlink():
            journal["linked"]["replaced"] = os.readlink(link)
        tmp = link.with_name(f"{COPY_MARK}{os.getpid()}-{LINK}")
        tmp.unlink(missing_ok=True)
        os.symlink(journal["postpro"], tmp)
        os.replace(tmp, link)
        atomic.fsync_dir(src.root)
    journal["linked"][LINK] = journal["postpro"]
    if src.path(PARAMS).is_file():
        removed = {rel: human_bytes(info["size"]) for rel, info in journal["removed"].items()}
        when = journal["removed"].get(RECORDING_DAT, {}).get("at", manifest.now())
        result = rewrite_dat_path(src.path(PARAMS), src.root, removed, when)
        if result["changed"] or not journal["params"]:
            journal["params"] = {k: result[k] for k in ("before", "after", "note")}
        _sync_sort_manifest(src, PARAMS)
    journal["phase"] = "prepared"
    save()


def _progress_bar(total: int, label: str):
    from tqdm import tqdm

    return tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=None, leave=False
    )


def _copy_phase(journal: dict, src: Path, dst: Path, save) -> None:
    entries = journal["entries"]
    if journal["phase"] == "prepared":
        entries.update(scan_tree(src, _skip))
        journal["phase"] = "copying"
        save()
    if journal["phase"] == "copying":

        def left() -> int:  # bytes still to copy: what a drive that filled meanwhile lacks
            return tree_bytes({rel: e for rel, e in entries.items() if e.get("state") != "verified"})

        full = full_disk_as_error(dst, f"copying {src} to {dst}", left, disk_reserve_bytes())
        with full, _progress_bar(2 * tree_bytes(entries), f"copy+verify {dst.name}") as bar:
            copy_tree(src, dst, entries, save, bar)
            for _ in range(3):  # written to while being copied: copy what changed, until nothing does
                if not changed_since_plan(src, entries, _skip):
                    break
                copy_tree(src, dst, entries, save, bar)
            else:
                raise UserError(f"{src}: keeps changing while being copied; stop what writes there and rerun")
        journal["phase"] = "copied"
        journal["bytes_copied"] = tree_bytes(entries)
        save()


def run_finalize(plan: Plan) -> list[str]:
    """Carry out (or resume) a planned finalize. Returns what was done, one line each."""
    req = plan.request
    src, dst = req.source, req.destination
    if plan.method == "done":
        return describe(plan)
    journal = plan.journal or _new_journal(plan)
    home = [plan.home if plan.journal is not None else src.root]

    def save() -> None:
        atomic.write_json(journal_path(home[0]), journal)

    if journal["phase"] == "started":
        save()
        _prepare(journal, src, save)
    if plan.method == "none":
        journal["phase"] = "done"
    elif plan.method == "rename":
        if journal["phase"] == "prepared":
            journal["phase"] = "renaming"
            save()
        if src.root.exists():
            if not rename_tree(src.root, dst.root):
                journal["method"], journal["phase"] = "copy", "prepared"  # EXDEV: two mounts of one drive
                save()
                plan.method = "copy"
                return run_finalize(plan_finalize(req))
        home[0] = dst.root
        journal["phase"] = "done"
    else:
        _clean_own_tmp(dst.root)
        _copy_phase(journal, src.root, dst.root, save)
        if journal["phase"] == "copied":
            home[0] = dst.root
            journal["phase"] = "removing_source"
            save()  # from here the destination's journal rules: every file is verified there
            crash_point("dest_journal")
        if journal["phase"] == "removing_source":
            home[0] = dst.root
            if src.root.is_dir() and changed_since_plan(src.root, journal["entries"], _skip):
                copy_tree(src.root, dst.root, journal["entries"], save)
            left = remove_source(src.root, dst.root, journal["entries"])
            if left:
                raise UserError(
                    f"{src.root}: kept {', '.join(left[:5])} (changed or not copied); rerun finalize"
                )
            journal_path(src.root).unlink(missing_ok=True)
            _clean_own_tmp(src.root)
            journal["left_in_source"] = remove_empty_dirs(src.root, journal["entries"])
            journal["phase"] = "done"
    journal["finished"] = manifest.now()
    save()
    _clean_own_tmp(home[0])
    return _summary(journal, dst if home[0] == dst.root else src)


def _summary(journal: dict, final: SortingDir) -> list[str]:
    lines = [f"== finalized {journal['source']} -> {final.root} ({journal['method']})"]
    for rel, info in journal["removed"].items():
        lines.append(f"deleted {rel} ({human_bytes(info['size'])})")
    lines.append(f"linked {LINK} -> {journal['postpro']}")
    if journal.get("method") == "copy":
        n = sum(1 for e in journal["entries"].values() if e["kind"] == "file")
        lines.append(f"copied and verified {n} files ({human_bytes(journal.get('bytes_copied', 0))})")
    if final.path(PARAMS).is_file():
        lines.append(check_params(final.path(PARAMS)))
    left = [rel for rel in journal.get("left_in_source", []) if rel]
    if left:
        lines.append(f"left in the source (not planned, so not removed): {', '.join(left)}")
    return lines


def finalize_one(req: Request, dry_run: bool = False) -> list[str]:
    plan = plan_finalize(req)
    return describe(plan) if dry_run else run_finalize(plan)
