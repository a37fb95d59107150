"""A line plot with error bars as a small SVG, written by hand: the benchmarks need no plotting library."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Series:
    """One line: ``points`` are (x position in [0, 1], mean, sd) in y units."""

    label: str
    colour: str
    points: list[tuple[float, float, float]]
    dashed: bool = False


def line_plot(series: Sequence[Series], x_ticks: Sequence[tuple[float, str]], x_title: str, y_title: str,
              y_range: tuple[float, float] = (0.0, 100.0), y_step: float = 20.0) -> str:
    """The SVG text: lines with a dot per point, a bar of one sd, a legend on the right."""
    w, h, left, right, top, bottom = 640, 400, 56, 170, 20, 44
    lo, hi = y_range

    def px(pos: float) -> float:
        return left + (w - left - right) * pos

    def py(y: float) -> float:
        return top + (h - top - bottom) * (1 - (min(max(y, lo), hi) - lo) / (hi - lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="11"><rect width="{w}" height="{h}" fill="white"/>']
    y = lo
    while y <= hi + 1e-9:
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += y_step
    for pos, label in x_ticks:
        out.append(f'<text x="{px(pos):.1f}" y="{h - bottom + 16}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{(left + w - right) / 2:.1f}" y="{h - 8}" text-anchor="middle">{x_title}</text>'
               f'<text x="14" y="{(top + h - bottom) / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(top + h - bottom) / 2:.1f})">{y_title}</text>')
    legend_y = top + 10
    for s in series:
        if not s.points:
            continue
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        path = " ".join(f"{px(x):.1f},{py(m):.1f}" for x, m, _ in s.points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="1.6"{dash}/>')
        for x, m, sd in s.points:
            out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{py(m + sd):.1f}" y2="{py(m - sd):.1f}" '
                       f'stroke="{s.colour}"/><circle cx="{px(x):.1f}" cy="{py(m):.1f}" r="2.5" '
                       f'fill="{s.colour}"/>')
        out.append(f'<line x1="{w - right + 12}" x2="{w - right + 36}" y1="{legend_y}" y2="{legend_y}" '
                   f'stroke="{s.colour}" stroke-width="1.6"{dash}/><text x="{w - right + 42}" '
                   f'y="{legend_y + 4}">{s.label}</text>')
        legend_y += 16
    out.append("</svg>")
    return "\n".join(out)
