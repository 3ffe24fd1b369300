"""Where a sorting's postprocessing sets stand: names on disk and done/stale/partial/missing (for status)."""

from __future__ import annotations

from tasks.core.layout import SortingDir
from tasks.steps.postpro_stages import OPTS_FILE, PostproSet, expected_stages, stage_status, stages


def postpro_sets(sorting: SortingDir) -> list[str]:
    """Names of the postprocessing folders present on disk (those holding their options copy)."""
    root = sorting.root
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and not entry.is_symlink() and (entry / OPTS_FILE).is_file()
    )


def postpro_status(sorting: SortingDir, name: str) -> str:
    """'done' (every stage's manifest current for today's opts.yaml, segments.htsv, postpro options,
    curation and hypnogram), 'stale' (some stage made from other inputs), 'partial' or 'missing'."""
    pset = PostproSet(sorting, name)
    if not pset.opts.is_file() or not sorting.opts.is_file() or not sorting.segments.is_file():
        return "missing"
    exp = expected_stages(pset)
    states = [stage_status(pset, stage, exp[stage]) for stage in stages(pset.load_options())]
    if all(state == "done" for state in states):
        return "done"
    if "stale" in states:
        return "stale"
    if all(state == "missing" for state in states):
        return "missing"
    return "partial"
