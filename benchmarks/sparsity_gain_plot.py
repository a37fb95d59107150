"""What SAFS adds to magnitude pruning at each sparsity and allocation: one SVG from the sweeps.

Reads the tables that ``benchmarks/sparsity_sweep.py`` wrote (its column "SAFS − ReLU", mean ± sd
over seeds) for the quick-start data and the full Fashion-MNIST, and draws the gain against
sparsity, one colour per allocation, solid for Fashion-MNIST and dashed for the quick start::

    python benchmarks/sparsity_gain_plot.py

writes ``benchmarks/results/sparsity_gain.svg``. It runs nothing: rerun the sweeps to change it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from svg_plot import Series, line_plot

RESULTS = Path(__file__).resolve().parent / "results"
SOURCES = {  # label -> results file, in legend order
    "Fashion-MNIST": "sparsity_sweep_fashion_mnist.md",
    "quick start": "sparsity_sweep.md",
}
COLOURS = {"layer": "#d62728", "global": "#1f77b4", "erk": "#2ca02c", "lamp": "#9467bd"}
_ROW = re.compile(r"^\| ([0-9.]+) \| (\w+) \| (\d+) \|.*\| ([+-]?[0-9.]+) ± ([0-9.]+) \|$")


def read_gains(path: Path) -> dict[tuple[float, str], tuple[float, float, int]]:
    """(sparsity, allocation) -> (mean gain, sd, seeds) from a sweep's results table."""
    gains = {}
    for line in path.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            ratio, scope, seeds, mean, sd = match.groups()
            gains[(float(ratio), scope)] = (float(mean), float(sd), int(seeds))
    if not gains:
        raise SystemExit(f"{path}: no rows of a sparsity sweep's table found")
    return gains


def figure(sources: dict[str, Path]) -> str:
    """The SVG text: SAFS − ReLU against sparsity, a bar of one sd per point."""
    tables = {label: read_gains(path) for label, path in sources.items()}
    ratios = sorted({ratio for table in tables.values() for ratio, _ in table})
    pos = {r: 0.04 + 0.92 * i / max(len(ratios) - 1, 1) for i, r in enumerate(ratios)}
    series = []
    for d, (label, table) in enumerate(tables.items()):
        for s, scope in enumerate(COLOURS):
            # a small offset per line, so that the error bars of one sparsity do not overlap
            shift = (s - 1.5) * 0.008 + (d - 0.5) * 0.004
            points = [(pos[r] + shift, *table[(r, scope)][:2]) for r in ratios if (r, scope) in table]
            series.append(Series(f"{scope}, {label}", COLOURS[scope], points, dashed=d > 0))
    ticks = [(x, f"{r:g}") for r, x in pos.items()]
    return line_plot(series, ticks, "sparsity (share of weights removed)",
                     "SAFS − magnitude pruning, points", (-5.0, 35.0), 5.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(RESULTS / "sparsity_gain.svg"))
    args = p.parse_args()
    Path(args.out).write_text(figure({label: RESULTS / name for label, name in SOURCES.items()}) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
