"""What the nwb step reads besides its upstream steps: the postprocessing set the sorting's options name
(`nwb.postpro`), and that set's signature (luigi-free: the step program computes it too)."""

from __future__ import annotations

import yaml

from tasks.core import atomic
from tasks.core.errors import UserError
from tasks.core.layout import SortingDir
from tasks.options.sorting import load_sorting_options
from tasks.steps.postpro_stages import PostproSet, expected_stages


def nwb_set(opts: dict) -> str:
    """The postprocessing set named by the options' `nwb.postpro` ("" when none)."""
    return str((opts.get("nwb") or {}).get("postpro") or "")


def postpro_inputs(sorting: SortingDir, opts: dict) -> dict[str, str]:
    """What the nwb step reads of its postprocessing set: the signature its table (metrics, per-state
    metrics, curation, hence the analyzer and its waveforms) must carry now."""
    name = nwb_set(opts)
    pset = PostproSet(sorting, name)
    if not name or not pset.opts.is_file():
        return {f"postpro.{name}": "<absent>"}
    return {f"postpro.{name}": expected_stages(pset)["table"].signature}


def name_postpro_set(sorting: SortingDir, name: str | None, check_only: bool = False) -> tuple[str, str]:
    """The set to export: the sorting's `nwb.postpro`, or `name`, written into opts.yaml (old copy backed up)
    when the options name none yet (not with `check_only`). Returns (set, a line for the terminal or "")."""
    if not sorting.opts.is_file():
        raise UserError(f"{sorting.root}: no sorting here yet (no opts.yaml); run `wisc-sort sort` first")
    opts = load_sorting_options(sorting.opts).data
    named = nwb_set(opts)
    if named and name and named != name:
        raise UserError(
            f"{sorting.opts}: nwb.postpro is {named!r}, not {name!r}; edit that key to export another set"
        )
    if not named and not name:
        raise UserError(f"{sorting.opts}: names no postprocessing set to export; pass --postpro NAME")
    chosen = named or str(name)
    if not PostproSet(sorting, chosen).opts.is_file():
        raise UserError(
            f"{sorting.root}: no postprocessing set {chosen!r}; run `wisc-sort postpro --opts FILE` first"
        )
    message = ""
    if not named and not check_only:
        backup = atomic.backup_copies(sorting.root, "opts", [sorting.opts])
        text = sorting.opts.read_text().rstrip("\n") + "\n" + yaml.safe_dump({"nwb": {"postpro": name}})
        atomic.write_text(sorting.opts, text)
        message = f"{sorting.opts}: added nwb.postpro = {name} (previous copy in {backup})"
    return chosen, message
