"""phy's params.py across a move: `dat_path` made relative to params.py when it points into the sorting, and a
note when the file it names was deleted. Parsed with ast (never executed); every other line kept as is."""

from __future__ import annotations

import ast
import os
from pathlib import Path, PurePosixPath

from tasks.core import atomic
from tasks.core.errors import UserError
from tasks.phy.validation import SortFailed, read_params

NOTE_PREFIX = "# wisc-sort finalize:"


def _dat_path_node(tree: ast.Module, path: Path) -> ast.Assign:
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "dat_path"
        ):
            return node
    raise UserError(f"{path}: no `dat_path = ...` line; phy cannot open this sorting, fix params.py first")


def _relocated(value: str, params_dir: Path, sorting_root: Path) -> str:
    """A dat path inside the sorting, relative to params.py (moves with it); one outside it unchanged."""
    absolute = Path(os.path.normpath(params_dir / value))
    try:
        absolute.relative_to(sorting_root)
    except ValueError:
        return value
    return PurePosixPath(os.path.relpath(absolute, params_dir)).as_posix()


def in_sorting(value: str, params_dir: Path, sorting_root: Path) -> str | None:
    """The path, relative to the sorting root, that a dat path names, or None when it is outside."""
    absolute = Path(os.path.normpath(params_dir / value))
    try:
        return absolute.relative_to(sorting_root).as_posix()
    except ValueError:
        return None


def read_dat_paths(params_file: Path) -> list[str]:
    text = params_file.read_text()
    value = ast.literal_eval(_dat_path_node(ast.parse(text, filename=str(params_file)), params_file).value)
    return [value] if isinstance(value, str) else [str(v) for v in value]


def rewrite_dat_path(params_file: Path, sorting_root: Path, removed: dict[str, str], when: str) -> dict:
    """Rewrite `dat_path` of `params_file` (inside `sorting_root`) so that it resolves wherever the sorting
    moves; add a note line above it naming the deleted files (`removed`: relative path -> size text).

    Idempotent: a second call changes nothing. Returns {before, after, note, changed}.
    """
    params_file, sorting_root = Path(params_file), Path(sorting_root)
    text = params_file.read_text()
    try:
        tree = ast.parse(text, filename=str(params_file))
        node = _dat_path_node(tree, params_file)
        before = ast.literal_eval(node.value)
    except (SyntaxError, ValueError) as err:
        raise UserError(f"{params_file}: not a valid params.py ({err}); fix it before finalizing") from None
    values = [before] if isinstance(before, str) else list(before)
    if not all(isinstance(v, str) for v in values):
        raise UserError(f"{params_file}: dat_path is neither a path nor a list of paths; fix it")
    params_dir = params_file.parent
    after_values = [_relocated(v, params_dir, sorting_root) for v in values]
    after = after_values[0] if isinstance(before, str) else after_values
    gone = [rel for v in values if (rel := in_sorting(v, params_dir, sorting_root)) in removed]
    lines = text.splitlines(keepends=True)
    has_note = any(line.startswith(NOTE_PREFIX) for line in lines)
    note = ""
    if gone and not has_note:
        what = ", ".join(f"{PurePosixPath(rel).name} ({removed[rel]})" for rel in gone)
        note = (
            f"{NOTE_PREFIX} {what} deleted {when} after curation and postprocessing; phy opens this sorting "
            "without raw traces. Rerun the recording.dat step (wisc-sort sort) to write it again.\n"
        )
    if after == before and not note:
        return {"before": before, "after": after, "note": has_note, "changed": False}
    start, end = node.lineno - 1, (node.end_lineno or node.lineno)
    lines[start:end] = [note, f"dat_path = {after!r}\n"]
    atomic.write_text(params_file, "".join(lines))
    return {"before": before, "after": after, "note": bool(note) or has_note, "changed": True}


def check_params(params_file: Path) -> str:
    """After a move: params.py must parse as phy reads it and its dat_path must resolve, or say why not.
    Returns a one-line description; raises UserError otherwise."""
    try:
        read_params(params_file)
    except SortFailed as err:
        raise UserError(str(err)) from None
    missing = [v for v in read_dat_paths(params_file) if not (params_file.parent / v).exists()]
    if not missing:
        return f"{params_file}: dat_path resolves"
    if any(line.startswith(NOTE_PREFIX) for line in params_file.read_text().splitlines()):
        return f"{params_file}: dat_path {', '.join(missing)} deleted (noted in params.py)"
    raise UserError(f"{params_file}: dat_path {', '.join(missing)} does not exist and no note says why")
