"""Small inline SVG charts drawn by hand for report.html: bars with shaded spans, histograms, a timeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

import numpy as np

WIDTH, HEIGHT, LEFT, BOTTOM = 760, 180, 48, 28
STATE_COLOURS = {
    "done": "#3a7d44",
    "running": "#2b6cb0",
    "failed": "#c53030",
    "stale": "#b7791f",
    "partial": "#b7791f",
    "missing": "#a0aec0",
}


def _svg(body: list[str], width: int = WIDTH, height: int = HEIGHT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 11, colour: str = "#333") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{colour}">'
        f"{escape(text)}</text>"
    )


def _axes(ymax: float, xlabel: str, x0: str, x1: str) -> list[str]:
    plot_h = HEIGHT - BOTTOM - 10
    return [
        f'<line x1="{LEFT}" y1="10" x2="{LEFT}" y2="{10 + plot_h}" stroke="#555"/>',
        f'<line x1="{LEFT}" y1="{10 + plot_h}" x2="{WIDTH - 8}" y2="{10 + plot_h}" stroke="#555"/>',
        _text(LEFT - 4, 16, f"{ymax:g}", "end"),
        _text(LEFT - 4, 10 + plot_h, "0", "end"),
        _text(LEFT, HEIGHT - 6, x0),
        _text(WIDTH - 8, HEIGHT - 6, x1, "end"),
        _text((LEFT + WIDTH) / 2, HEIGHT - 6, xlabel, "middle"),
    ]


def bars(
    values: Sequence[float],
    span: float,
    xlabel: str,
    shaded: Sequence[tuple[float, float, str]] = (),
    ticks: Sequence[tuple[float, str]] = (),
) -> str:
    """Counts per bin over [0, span), with labelled red spans (excluded bouts) and thin tick lines (files)."""
    values = np.asarray(values, dtype="float64")
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - 10
    ymax = float(values.max()) if values.size and values.max() > 0 else 1.0
    body = []

    def x(t: float) -> float:
        return LEFT + plot_w * t / span if span else LEFT

    for start, end, label in shaded:
        width = max(x(end) - x(start), 1.5)
        body.append(
            f'<rect class="excluded" x="{x(start):.1f}" y="10" width="{width:.1f}" height="{plot_h}" '
            f'fill="#fc8181" opacity="0.45"><title>{escape(label)}: {start:.2f}-{end:.2f} s excluded'
            "</title></rect>"
        )
    for t, label in ticks:
        body.append(
            f'<line x1="{x(t):.1f}" y1="10" x2="{x(t):.1f}" y2="{10 + plot_h}" stroke="#cbd5e0">'
            f"<title>{escape(label)}</title></line>"
        )
    step = plot_w / max(values.size, 1)
    for i, value in enumerate(values):
        h = plot_h * value / ymax
        body.append(
            f'<rect x="{LEFT + i * step:.2f}" y="{10 + plot_h - h:.2f}" width="{max(step - 0.2, 0.5):.2f}" '
            f'height="{h:.2f}" fill="#4a5568"/>'
        )
    body += _axes(ymax, xlabel, "0", f"{span:.1f} s")
    return _svg(body)


def histogram(values: Sequence[float], title: str, bins: int = 20) -> str:
    """A small histogram of one metric over units (NaN left out, counted in the title)."""
    data = np.asarray(values, dtype="float64")
    finite = data[np.isfinite(data)]
    width, height = 240, 130
    body = [_text(4, 12, f"{title} (n={finite.size}, NaN {data.size - finite.size})", size=10)]
    if finite.size:
        counts, edges = np.histogram(finite, bins=bins)
        top = counts.max() or 1
        step = (width - 8) / bins
        for i, count in enumerate(counts):
            h = (height - 40) * count / top
            body.append(
                f'<rect x="{4 + i * step:.1f}" y="{height - 22 - h:.1f}" width="{step - 1:.1f}" '
                f'height="{h:.1f}" fill="#2b6cb0"><title>{edges[i]:.3g}-{edges[i + 1]:.3g}: {count}'
                "</title></rect>"
            )
        body += [
            _text(4, height - 8, f"{edges[0]:.3g}", size=10),
            _text(width - 4, height - 8, f"{edges[-1]:.3g}", "end", 10),
        ]
    return _svg(body, width, height)


def timeline(rows: Sequence[tuple[str, str, datetime, datetime]]) -> str:
    """Nextflow-style timeline: one bar per step from its start to its end, coloured by state."""
    if not rows:
        return ""
    t0 = min(r[2] for r in rows)
    t1 = max(r[3] for r in rows)
    total = max((t1 - t0).total_seconds(), 1e-3)
    label_w, row_h = 210, 18
    plot_w = WIDTH - label_w - 70
    body = []
    for i, (name, state, start, end) in enumerate(rows):
        y = 6 + i * row_h
        x = label_w + plot_w * (start - t0).total_seconds() / total
        w = max(plot_w * (end - start).total_seconds() / total, 2.0)
        seconds = (end - start).total_seconds()
        colour = STATE_COLOURS.get(state, "#718096")
        body += [
            _text(label_w - 6, y + 12, name, "end"),
            f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" fill="{colour}">'
            f"<title>{escape(name)}: {state}, {seconds:.1f} s</title></rect>",
            _text(x + w + 4, y + 12, f"{seconds:.1f} s", size=10),
        ]
    height = 16 + len(rows) * row_h
    body.append(_text(label_w, height - 2, f"{t0:%Y-%m-%d %H:%M:%S}  (total {total:.0f} s)", size=10))
    return _svg(body, WIDTH, height + 4)
