"""report.py: the paper-style table, the paper's rows, activation curves and their SVG."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest
import torch

from safs_optuna.activation import OperatorTree, TreeActivation
from safs_optuna.report import (COLUMNS, OPTIONAL_COLUMNS, PAPER, ResultRow, activation_curves, activation_svg,
                                markdown_table, mean_row, paper_row)

SVG = "{http://www.w3.org/2000/svg}"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_markdown_table_columns_missing_values_and_gain():
    rows = [ResultRow("mine", (98.0, 40.0, None, 55.5, 61.25)),
            ResultRow("empty", (None,) * 5),
            ResultRow("no base", (90.0, None, 1.0, 2.0, 50.0))]
    lines = markdown_table(rows).splitlines()
    shown = [c for c in COLUMNS if c not in OPTIONAL_COLUMNS]  # no row fills an optional column
    assert _cells(lines[0]) == ["", *shown]
    assert set(lines[1].replace("|", "")) == {"-"} and lines[1].count("|") == len(shown) + 2
    assert _cells(lines[2]) == ["mine", "98.00", "40.00", "—", "55.50", "61.25 (+21.25)"]
    assert _cells(lines[3]) == ["empty", "—", "—", "—", "—", "—"]
    assert _cells(lines[4]) == ["no base", "90.00", "—", "1.00", "2.00", "50.00"]
    assert len(lines) == 5


def test_an_optional_column_shows_when_a_row_fills_it():
    same = COLUMNS.index("ReLU, same compute")
    rows = [ResultRow("mine", (98.0, 40.0, 45.0, 55.5, 61.25, 42.5)), ResultRow("paper", (1.0, 2.0, 3.0, 4.0, 5.0))]
    head, _, mine, paper = markdown_table(rows).splitlines()
    assert _cells(head)[same + 1] == "ReLU, same compute"
    assert _cells(mine)[5:] == ["61.25 (+21.25)", "42.50"] and _cells(paper)[5:] == ["5.00 (+3.00)", "—"]
    mean = mean_row(rows[:1] * 2, "two")
    assert mean.values[same] == 42.5 and mean.spread[same] == 0.0


def test_markdown_table_negative_gain():
    line = markdown_table([ResultRow("worse", (1.0, 50.0, 2.0, 3.0, 45.5))]).splitlines()[2]
    assert _cells(line)[-1] == "45.50 (-4.50)"


def test_paper_row_known_closest_unknown():
    row = paper_row("resnet18", "cifar10")
    assert row == ResultRow("paper: resnet18 on cifar10", PAPER[("resnet18", "cifar10")])
    assert row.values[COLUMNS.index("SAFS")] == 83.88 and row.values[-1] is None  # the paper has no same-compute run
    closest = paper_row("lenet5", "quickstart")
    assert closest is not None and closest.label == "paper: lenet5 on mnist"
    assert closest.values == (98.49, 46.69, 61.63, 60.2, 62.22, None)
    assert paper_row("lenet5", "fashion_mnist").values == closest.values
    assert paper_row("vgg16", "quickstart") is None
    assert paper_row("lenet5", "cifar10") is None
    # The paper's own table: SAFS beats magnitude pruning by the gain the paper prints.
    assert "62.22 (+15.53)" in markdown_table([closest])


def test_activation_curves_sample_each_module():
    acts = {"a": TreeActivation(OperatorTree.unary("relu")), "b": TreeActivation("max(x, sin(x))")}
    with torch.no_grad():
        acts["b"].beta.fill_(2.0)
    curves = activation_curves(acts, lo=-2.0, hi=2.0, points=5)
    assert list(curves) == ["a", "b"]
    xs, ys = curves["a"]
    assert xs == pytest.approx([-2, -1, 0, 1, 2])
    assert ys == pytest.approx([0, 0, 0, 1, 2])
    xs, ys = curves["b"]
    assert ys == pytest.approx([2 * max(x, math.sin(x)) for x in xs], rel=1e-6)
    assert all(isinstance(y, float) for y in ys)


def test_activation_curves_replace_non_finite_values():
    class Bad(torch.nn.Module):
        def forward(self, x):
            return torch.where(x > 0, torch.full_like(x, math.inf), torch.full_like(x, math.nan))

    _, ys = activation_curves({"bad": Bad()}, points=3)["bad"]
    assert ys == [0.0, 0.0, 0.0]


def test_activation_svg_is_well_formed_with_one_polyline_per_site():
    acts = {f"features.{i}": TreeActivation(OperatorTree.unary(op))
            for i, op in enumerate(["relu", "tanh", "swish", "elu", "gelu"])}
    curves = activation_curves(acts, points=21)
    titles = {"features.0": "a < b & \"c\" > d", "features.1": "1.2·max(x, sin(x)) at 0.9·x"}
    svg = activation_svg(curves, titles, cols=2)
    root = ET.fromstring(svg)  # raises on malformed XML, e.g. an unescaped '<' or '&' in a title
    assert root.tag == f"{SVG}svg"
    assert root.get("width") == "440" and root.get("height") == str(3 * 170)  # 5 plots, 2 per row
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 5
    assert all(len(p.get("points").split()) == 21 for p in lines)
    texts = [t.text for t in root.findall(f"{SVG}text")]
    assert titles["features.0"] in texts and titles["features.1"] in texts
    assert "features.2" in texts  # sites without a title show their name
    # Every point of a plot lies inside its own cell.
    for i, line in enumerate(lines):
        ox, oy = (i % 2) * 220, (i // 2) * 170
        for point in line.get("points").split():
            x, y = map(float, point.split(","))
            assert ox <= x <= ox + 220 and oy <= y <= oy + 170


def test_activation_svg_of_a_constant_curve_and_of_nothing():
    flat = {"zero": ([-1.0, 0.0, 1.0], [0.0, 0.0, 0.0])}
    root = ET.fromstring(activation_svg(flat))
    points = root.find(f"{SVG}polyline").get("points")
    assert "nan" not in points and "inf" not in points
    assert len(ET.fromstring(activation_svg({})).findall(f"{SVG}polyline")) == 0
