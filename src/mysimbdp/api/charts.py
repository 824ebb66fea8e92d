"""Line charts as inline SVG, drawn on the server: the dashboard needs no chart library,
no script to draw and nothing from a CDN."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape

from mysimbdp.services.timeseries import Point

WIDTH, HEIGHT = 560, 170
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 24, 22
COLOURS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#4b5563")


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times 10^k at or above ``value`` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1.0, 2.0, 2.5, 5.0, 10.0) if step * power >= value)


def _label(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def line_chart(title: str, lines: Mapping[str, Sequence[Point]], *, start: float, end: float) -> str:
    """An SVG of one line per name over ``[start, end]`` (epoch s); "no data" when empty."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_ceiling(max((p.value for points in lines.values() for p in points), default=0.0))
    span = max(end - start, 1e-9)

    def x(at: float) -> float:
        return LEFT + (at - start) / span * plot_w

    def y(value: float) -> float:
        return TOP + plot_h - value / top * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<text x="{LEFT}" y="15" class="chart-title">{escape(title)}</text>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        level = y(top * fraction)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{level:.1f}" y2="{level:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{level + 4:.1f}" class="tick" text-anchor="end">{_label(top * fraction)}</text>'
        )
    for at, anchor in ((start, "start"), (end, "end")):
        clock = datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")
        parts.append(f'<text x="{x(at):.1f}" y="{HEIGHT - 6}" class="tick" text-anchor="{anchor}">{clock}</text>')
    legend = []
    for index, (name, points) in enumerate(sorted(lines.items())):
        if not points:
            continue
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(f"{x(p.at):.1f},{y(p.value):.1f}" for p in points)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.6">'
            f"<title>{escape(name)}</title></polyline>"
        )
        if len(points) == 1:
            parts.append(f'<circle cx="{x(points[0].at):.1f}" cy="{y(points[0].value):.1f}" r="2.5" fill="{colour}"/>')
        legend.append(f'<tspan fill="{colour}"> ■ {escape(name)}</tspan>')
    drawn = len(legend)
    if legend:
        parts.append(f'<text x="{WIDTH - RIGHT}" y="15" class="legend" text-anchor="end">{"".join(legend)}</text>')
    if not drawn:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" class="empty" text-anchor="middle">'
            "no data in this period</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
