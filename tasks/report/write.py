"""Writes `<sorting_dir>/report.html` atomically (after each step, from the executor); a report that cannot be
written never fails the step that asked for it: the reason goes to `.pipeline/report.log`."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from html import escape

from tasks.core import atomic
from tasks.core.layout import SortingDir
from tasks.core.manifest import now


def _section(render: Callable[[], str], name: str) -> str:
    """One section; a broken input (a truncated table) costs that section only, said in its place."""
    try:
        return render()
    except Exception as err:
        reason = escape(f"{type(err).__name__}: {str(err)[:300]}")
        return f"<h2>{escape(name)}</h2><p class='failed'>could not read: {reason}</p>"


def render_report(sorting: SortingDir, running: str | None = None) -> str:
    from tasks.inputs.segments import read_segments
    from tasks.report import gather, page
    from tasks.steps.registry import load_inputs

    opts = load_inputs(sorting)[0]
    segments = read_segments(sorting.segments)  # the sections that read more of it say so themselves
    rows = gather.step_rows(sorting, running)
    states = ", ".join(f"{r.name} {r.state}" for r in rows if "." not in r.name)
    nav = "".join(
        f"<a href='#{anchor}'>{label}</a>"
        for anchor, label in (
            ("recording", "recording"),
            ("steps", "steps"),
            ("timeline", "timeline"),
            ("options", "options"),
            ("motion", "motion"),
            ("sort", "sort"),
            ("finalize", "finalize"),
        )
    )
    sections = [
        _section(lambda: page.recording_section(sorting), "Recording"),
        _section(lambda: page.steps_section(rows), "Steps"),
        _section(lambda: page.options_section(opts), "Options"),
        _section(lambda: page.motion_section(sorting, segments), "Motion"),
        _section(lambda: page.sort_section(sorting, opts), "Sort"),
        _section(lambda: page.postpro_section(sorting), "Postprocessing"),
        _section(lambda: page.finalize_section(sorting), "Finalize"),
    ]
    title = f"{sorting.root.parent.name} {sorting.root.name}"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{page.STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{escape(str(sorting.root))}<br>written {escape(now()[:19])}; "
        f"steps: {escape(states)}</p><nav>{nav}</nav>" + "".join(sections) + "</body></html>"
    )


def _remove_orphans(sorting: SortingDir) -> None:
    """A writer killed mid-write leaves `report.wisc-tmp-<pid>.html`: remove those whose process is gone."""
    for tmp in sorting.root.glob(f"{sorting.report.stem}{atomic.TMP_MARK}*{sorting.report.suffix}"):
        pid = tmp.stem.rsplit(atomic.TMP_MARK, 1)[-1]
        try:
            os.kill(int(pid), 0)
        except ValueError:
            continue
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            continue  # alive, someone else's


def refresh_report(sorting: SortingDir, running: str | None = None) -> bool:
    """Rewrite report.html (`running`: the step starting now); False, with the reason logged, on failure."""
    if not (sorting.opts.exists() and sorting.segments.exists()):
        return False
    try:
        _remove_orphans(sorting)
        atomic.write_text(sorting.report, render_report(sorting, running))
        return True
    except Exception:
        sorting.pipeline.mkdir(parents=True, exist_ok=True)
        with open(sorting.log("report"), "a") as log:
            log.write(f"== {now()}\n{traceback.format_exc()}")
        return False
