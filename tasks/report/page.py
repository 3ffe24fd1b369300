"""report.html's sections, rendered from what tasks.report.gather read (plain HTML, inline SVG, relative
images: one file that opens from the share, no server, no script)."""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

import pandas as pd

from tasks.core.layout import SortingDir
from tasks.options.diff import options_diff
from tasks.report import gather, svg

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#1a202c;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #cbd5e0;margin-top:1.8em}
table{border-collapse:collapse;font-size:12px;margin:.4em 0}td,th{border:1px solid #e2e8f0;padding:2px 6px;
text-align:left;vertical-align:top}th{background:#f7fafc}pre{background:#f7fafc;padding:.6em;overflow:auto}
.state{font-weight:600}.done{color:#3a7d44}.running{color:#2b6cb0}.failed{color:#c53030}
.stale,.partial{color:#b7791f}.missing{color:#718096}.grid{display:flex;flex-wrap:wrap;gap:8px}
.grid figure{margin:0;font-size:11px}.grid img{width:220px;border:1px solid #e2e8f0}nav a{margin-right:.8em}
"""
METRICS = ("firing_rate", "snr", "presence_ratio", "isi_violations_ratio", "amplitude_cutoff", "num_spikes")
MAX_UNITS_SHOWN = 120


def _rel(sorting: SortingDir, path: Path) -> str:
    return escape(os.path.relpath(path, sorting.root))


def _table(header: list[str], rows: list[list[object]], raw: bool = False) -> str:
    cell = (lambda v: str(v)) if raw else (lambda v: escape(str(v)))
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _bytes(n: object) -> str:
    if not isinstance(n, (int, float)):
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def _seconds(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, (int, float)) else ""


def recording_section(sorting: SortingDir) -> str:
    summary, segments = gather.recording_summary(sorting)
    columns = [c for c in ("fname", "type", "withinFileStartFrame", "withinFileEndFrame", "segmentDuration")]
    rows = [
        [*(row[c] for c in columns[:-1]), f"{row['segmentDuration']:.3f}"] for _, row in segments.iterrows()
    ]
    return f"<h2 id='recording'>Recording and segments</h2><pre>{escape(summary)}</pre>" + _table(
        columns, rows
    )


def _engine(manifest: dict) -> str:
    """`torch`, or `spikeinterface (asked torch: why)` where the engine fell back."""
    engine = manifest.get("engine")
    if not isinstance(engine, dict):
        return str(engine or "")
    used, asked = engine.get("used", "?"), engine.get("requested")
    if asked and asked != used:
        return f"{used} (asked {asked}: {engine.get('reason', '')})"
    return str(used)


def _clock(stamp: object) -> str:
    """2026-11-29T18:42:56.029+00:00 -> 11-29 18:42:56."""
    text = str(stamp or "")
    return text[5:19].replace("T", " ") if len(text) >= 19 else text


def _short_name(name: str) -> str:
    return name.removeprefix("postpro.")


def steps_section(rows: list[gather.StepRow]) -> str:
    header = [
        "step",
        "state",
        "started",
        "finished",
        "wall",
        "cpu",
        "peak memory",
        "read",
        "written",
        "exit",
        "host",
        "device",
        "engine",
        "versions",
    ]
    table, version_sets = [], []
    for row in rows:
        rec, trace = row.record, row.trace
        versions = rec.get("versions") or {}
        if versions and versions not in version_sets:
            version_sets.append(versions)
        device = trace.get("device") or rec.get("device") or ""
        state = f"<span class='state {row.state}'>{escape(row.state)}</span>"
        if row.state == "failed":
            state += f"<br>{escape(str(row.failure.get('error', ''))[:300])}"
        table.append(
            [
                escape(_short_name(row.name)),
                state,
                _clock(rec.get("started")),
                _clock(rec.get("finished")),
                _seconds(trace.get("wall_s")),
                _seconds(trace.get("cpu_s")),
                _bytes(trace.get("peak_rss_bytes")),
                _bytes(trace.get("io_read_bytes")),
                _bytes(trace.get("io_write_bytes")),
                escape(str(trace.get("exit_status", ""))),
                escape(str(trace.get("host") or rec.get("host", ""))),
                escape(str(device)),
                escape(_engine(rec)),
                f"#{version_sets.index(versions) + 1}" if versions else "",
            ]
        )
    legend = "".join(
        f"<li>#{i + 1}: {escape(', '.join(f'{k} {v}' for k, v in versions.items()))}</li>"
        for i, versions in enumerate(version_sets)
    )
    bars = [(_short_name(r.name), r.state, *r.times()) for r in rows if r.times() is not None]
    bars.sort(key=lambda bar: bar[2])
    return (
        "<h2 id='steps'>Steps</h2>"
        + _table(header, table, raw=True)
        + f"<p>versions:</p><ul>{legend}</ul>"
        + "<h2 id='timeline'>Timeline</h2>"
        + (svg.timeline(bars) or "<p>no step has run yet</p>")
    )


def options_section(opts: dict) -> str:
    shipped, diff = options_diff(opts)
    if not shipped:
        return ""
    rows = [[key, before, after] for key, before, after in diff]
    body = _table(["key", shipped, "opts.yaml"], rows) if rows else f"<p>identical to {escape(shipped)}</p>"
    return f"<h2 id='options'>Options (against the shipped {escape(shipped)})</h2>{body}"


def motion_section(sorting: SortingDir, segments: pd.DataFrame) -> str:
    parts = ["<h2 id='motion'>Motion and peaks</h2>"]
    plot = sorting.preprocessing / "motion_summary.png"
    if plot.exists():
        parts.append(
            f"<a href='{_rel(sorting, plot)}'><img src='{_rel(sorting, plot)}' style='max-width:100%' "
            "alt='motion summary'></a>"
        )
    counts = gather.peak_counts(sorting, segments)
    if counts is not None:
        span = counts.counts.size * counts.bin_s
        parts.append(
            f"<p>Peaks per {counts.bin_s:.2f} s along the recording (files in order; excluded bouts "
            f"in red: {len(counts.excluded)}; grey lines: file starts)</p>"
        )
        parts.append(
            svg.bars(counts.counts, span, "time (kept and excluded segments)", counts.excluded, counts.files)
        )
    return "".join(parts) if len(parts) > 1 else ""


def sort_section(sorting: SortingDir, opts: dict) -> str:
    summary = gather.sorter_summary(sorting, opts)
    rows = [[key, value] for key, value in summary.items()]
    rows.append(["curation", gather.curation_text(sorting)])
    return "<h2 id='sort'>Sort and curation</h2>" + _table(["", ""], rows)


def postpro_section(sorting: SortingDir) -> str:
    parts = []
    for view in gather.postpro_views(sorting):
        parts.append(
            f"<h2 id='postpro-{escape(view.name)}'>Postprocessing {escape(view.name)} "
            f"(<span class='state {view.state}'>{escape(view.state)}</span>)</h2>"
        )
        if view.metrics is not None:
            metrics = view.metrics
            if "group" in metrics:
                groups = ", ".join(f"{k} {v}" for k, v in metrics["group"].value_counts().items())
                if "group_source" in metrics:  # phy's labels, or the automatic pre-labels
                    sources = metrics["group_source"].value_counts().items()
                    groups += " (labelled by " + ", ".join(f"{k} {v}" for k, v in sources) + ")"
                parts.append(
                    f"<p>{len(metrics)} units; groups: {escape(groups)} (<a href="
                    f"'{_rel(sorting, sorting.root / view.name / 'metrics.csv')}'>metrics.csv</a>)</p>"
                )
            charts = [svg.histogram(metrics[m], m) for m in METRICS if m in metrics]
            parts.append("<div class='grid'>" + "".join(charts) + "</div>")
        if view.metric_plots:
            parts.append("<h3>Metrics against firing rate</h3>" + _gallery(sorting, view.metric_plots))
        if view.unit_plots:
            shown = view.unit_plots[:MAX_UNITS_SHOWN]
            more = len(view.unit_plots) - len(shown)
            note = f" (first {len(shown)}; {more} more in the folder)" if more > 0 else ""
            parts.append(f"<h3>Units{note}</h3>" + _gallery(sorting, shown))
    return "".join(parts)


def _gallery(sorting: SortingDir, paths: list[Path]) -> str:
    figures = "".join(
        f"<figure><a href='{_rel(sorting, p)}'><img loading='lazy' src='{_rel(sorting, p)}' "
        f"alt='{escape(p.stem)}'></a><figcaption>{escape(p.stem)}</figcaption></figure>"
        for p in paths
    )
    return f"<div class='grid'>{figures}</div>"


def finalize_section(sorting: SortingDir) -> str:
    record = gather.finalize_record(sorting)
    if not record:
        return "<h2 id='finalize'>Finalize</h2><p>not finalized</p>"
    rows = [
        [key, record.get(key, "")]
        for key in ("phase", "source", "destination", "method", "postpro", "started", "finished", "host")
    ]
    removed = ", ".join(
        f"{rel} ({_bytes(info.get('size'))})" for rel, info in (record.get("removed") or {}).items()
    )
    rows.append(["deleted", removed or "nothing"])
    return "<h2 id='finalize'>Finalize</h2>" + _table(["", ""], rows)
