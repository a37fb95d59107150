"""Paper-style result tables and activation plots (SVG, no plotting library needed)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

COLUMNS = ("dense", "magnitude pruning", "stage 1", "stage 2", "SAFS")

# The SAFS paper's summary table (Loni et al., AutoML 2023, sparsity 0.99; test accuracy %).
PAPER: dict[tuple[str, str], tuple[float, float, float, float, float]] = {
    ("lenet5", "mnist"): (98.49, 46.69, 61.63, 60.2, 62.22),
    ("vgg16", "cifar10"): (86.76, 70.32, 78.11, 80.97, 79.2),
    ("resnet18", "cifar10"): (89.86, 77.55, 79.34, 82.74, 83.88),
    ("efficientnet_b0", "imagenet16"): (18.41, 10.96, 11.84, 11.7, 12.5),
}
# The embedded quick-start data is Fashion-MNIST; the paper's closest row is LeNet-5 on MNIST.
CLOSEST = {("lenet5", "quickstart"): ("lenet5", "mnist"), ("lenet5", "fashion_mnist"): ("lenet5", "mnist")}


@dataclass(frozen=True)
class ResultRow:
    """One line of the table: a label and the test accuracy (%) of each column (None: not yet)."""

    label: str
    values: tuple[float | None, ...]


def paper_row(model: str, dataset: str) -> ResultRow | None:
    """The paper's row for this model and dataset (or the closest one), if it reports one."""
    key = (model, dataset)
    key = key if key in PAPER else CLOSEST.get(key, key)
    if key not in PAPER:
        return None
    return ResultRow(f"paper: {key[0]} on {key[1]}", PAPER[key])


def _cell(value: float | None, base: float | None, gain: bool) -> str:
    if value is None:
        return "—"
    if gain and base is not None:
        return f"{value:.2f} ({value - base:+.2f})"
    return f"{value:.2f}"


def markdown_table(rows: Sequence[ResultRow]) -> str:
    """A markdown table; the SAFS column shows its gain over magnitude pruning, as the paper."""
    lines = ["| | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in rows:
        base = row.values[1]
        cells = [_cell(v, base, i == len(COLUMNS) - 1) for i, v in enumerate(row.values)]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def activation_curves(
    activations: Mapping[str, nn.Module], lo: float = -4.0, hi: float = 4.0, points: int = 121
) -> dict[str, tuple[list[float], list[float]]]:
    """Sample each activation module on ``[lo, hi]`` (on CPU, without gradients)."""
    xs = torch.linspace(lo, hi, points)
    curves = {}
    with torch.no_grad():
        for name, module in activations.items():
            ys = module.cpu()(xs.clone())
            curves[name] = (xs.tolist(), [float(y) if math.isfinite(y) else 0.0 for y in ys.tolist()])
    return curves


def activation_svg(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                   titles: Mapping[str, str] | None = None, cols: int = 4) -> str:
    """A grid of small line plots, one per activation site, as a standalone SVG document."""
    w, h, pad = 220, 170, 28
    rows = max(1, math.ceil(len(curves) / cols))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * w}" height="{rows * h}" '
           'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>']
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        ox, oy = (i % cols) * w, (i // cols) * h
        y_lo, y_hi = min(ys), max(ys)
        if y_hi - y_lo < 1e-6:
            y_lo, y_hi = y_lo - 1, y_hi + 1
        x_lo, x_hi = xs[0], xs[-1]

        def px(x: float) -> float:
            return ox + pad + (x - x_lo) / (x_hi - x_lo) * (w - 2 * pad)

        def py(y: float) -> float:
            return oy + h - pad - (y - y_lo) / (y_hi - y_lo) * (h - 2 * pad)

        title = html.escape((titles or {}).get(name, name))
        out.append(f'<text x="{ox + pad}" y="{oy + 14}">{title}</text>')
        out.append(f'<rect x="{ox + pad}" y="{oy + pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" '
                   'fill="none" stroke="#bbb"/>')
        if y_lo < 0 < y_hi:
            out.append(f'<line x1="{px(x_lo):.1f}" y1="{py(0):.1f}" x2="{px(x_hi):.1f}" y2="{py(0):.1f}" stroke="#ddd"/>')
        if x_lo < 0 < x_hi:
            out.append(f'<line x1="{px(0):.1f}" y1="{oy + pad}" x2="{px(0):.1f}" y2="{oy + h - pad}" stroke="#ddd"/>')
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
        out.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="1.6"/>')
        out.append(f'<text x="{ox + pad}" y="{oy + h - 8}" fill="#666">x in [{x_lo:g}, {x_hi:g}], '
                   f'y in [{y_lo:.2g}, {y_hi:.2g}]</text>')
    out.append("</svg>")
    return "\n".join(out)
