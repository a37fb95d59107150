"""Paper-style result tables and activation plots (SVG, no plotting library needed)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

COLUMNS = ("dense", "magnitude pruning", "stage 1", "stage 2", "SAFS", "ReLU, same compute")
# Columns a study fills only when asked to (``baseline_long``): a table leaves them out when empty.
OPTIONAL_COLUMNS = ("ReLU, same compute",)

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
    """One line of the table: a label and the test accuracy (%) of each column (None: not yet).

    ``spread`` holds a standard deviation per column for a row that is a mean over seeds."""

    label: str
    values: tuple[float | None, ...]
    spread: tuple[float | None, ...] | None = None

    def __post_init__(self) -> None:
        # A row may stop before the optional columns (the paper's rows do): they are empty.
        pad = (None,) * (len(COLUMNS) - len(self.values))
        object.__setattr__(self, "values", tuple(self.values) + pad)
        if self.spread is not None:
            object.__setattr__(self, "spread", tuple(self.spread) + (None,) * (len(COLUMNS) - len(self.spread)))


def mean_row(rows: Sequence[ResultRow], label: str) -> ResultRow:
    """The mean ± sample standard deviation of each column over ``rows`` (e.g. one per seed);
    a column is left empty unless every row has it."""
    means: list[float | None] = []
    sds: list[float | None] = []
    for i in range(len(COLUMNS)):
        values = [r.values[i] for r in rows]
        if not values or any(v is None for v in values):
            means.append(None)
            sds.append(None)
            continue
        m = sum(values) / len(values)
        sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        means.append(m)
        sds.append(sd)
    return ResultRow(label, tuple(means), tuple(sds))


def paper_row(model: str, dataset: str) -> ResultRow | None:
    """The paper's row for this model and dataset (or the closest one), if it reports one."""
    key = (model, dataset)
    key = key if key in PAPER else CLOSEST.get(key, key)
    if key not in PAPER:
        return None
    return ResultRow(f"paper: {key[0]} on {key[1]}", PAPER[key])


def _cell(value: float | None, base: float | None, gain: bool, sd: float | None = None) -> str:
    if value is None:
        return "—"
    text = f"{value:.2f}" if sd is None else f"{value:.2f} ± {sd:.2f}"
    if gain and base is not None:
        return f"{text} ({value - base:+.2f})"
    return text


def markdown_table(rows: Sequence[ResultRow]) -> str:
    """A markdown table; the SAFS column shows its gain over magnitude pruning, as the paper. An
    optional column no row fills is left out."""
    shown = [i for i, c in enumerate(COLUMNS) if c not in OPTIONAL_COLUMNS or any(r.values[i] is not None for r in rows)]
    base_at, gain_at = COLUMNS.index("magnitude pruning"), COLUMNS.index("SAFS")
    lines = ["| | " + " | ".join(COLUMNS[i] for i in shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for row in rows:
        sds = row.spread or (None,) * len(row.values)
        cells = [_cell(row.values[i], row.values[base_at], i == gain_at, sds[i]) for i in shown]
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


def describe_activation(act: nn.Module) -> str:
    """``srs(x)``, or with learned scales ``0.93 · srs(x) at x = 1.2·x``."""
    alpha, beta = act.alpha.item(), act.beta.item()
    if alpha == 1.0 and beta == 1.0:
        return act.tree.formula
    return f"{beta:.3g} · {act.tree.formula} at x = {alpha:.3g}·x"


def dashboard_note(cfg: object, table: str, warnings: Sequence[str], activations: Mapping[str, nn.Module],
                   plot_id: str | None, study_id: int) -> tuple[str, str | None]:
    """The SAFS study's optuna-dashboard note (markdown) and, when ``plot_id`` is None, the SVG
    plot of the activations to upload first (then call again with its artifact id)."""
    shown = {site: describe_activation(a) for site, a in activations.items()}
    if plot_id is None:
        svg = activation_svg(activation_curves(activations), {s: f"{s}: {d}" for s, d in shown.items()})
        return "", svg
    sp = cfg.sparsity  # type: ignore[attr-defined]
    lines = [f"# SAFS result: {cfg.name}", "",  # type: ignore[attr-defined]
             f"{cfg.model.name} on {cfg.data.name}, sparsity {sp.ratio:g} ({sp.scope}); "  # type: ignore[attr-defined]
             "test accuracy %.", "", table, ""]
    lines += [f"**Warning:** {w}" for w in warnings]
    lines += ["", "## Learned activations", "", "| site | activation |", "|---|---|"]
    lines += [f"| `{site}` | `{d}` |" for site, d in shown.items()]
    lines += ["", f"![learned activations](/artifacts/{study_id}/{plot_id})", ""]
    return "\n".join(lines), None
