"""benchmarks/stacked_candidates.py: several stage-1 candidates as one network train exactly as
the separate networks do (its GPU timing is a benchmark; its correctness is checked here, on CPU)."""

from __future__ import annotations

import sys

import pytest
import torch

import stacked_candidates as sc


def test_stacked_candidates_give_each_candidates_logits_and_update():
    assert sc.check_equivalence("cpu", k=3) < 1e-5


def test_stacked_candidates_differ_from_each_other():
    models = sc.candidates(3)
    assert len({m.act1.tree.formula for m in models}) == 3
    x = torch.randn(4, 1, 28, 28)
    logits = sc.StackedLeNet5(models)(x)
    assert logits.shape == (3, 4, 10)
    assert not all(torch.equal(logits[0], other) for other in logits[1:])  # relu6 may equal relu here


def test_the_table_has_a_row_per_k_with_its_ratio(tmp_path, monkeypatch, capsys):
    out = tmp_path / "stacked.md"
    monkeypatch.setattr(sys, "argv", ["stacked_candidates.py", "--device", "cpu", "--candidates", "1,3",
                                      "--steps", "1", "--batch", "4", "--out", str(out)])
    sc.main()
    rows = [line.strip("| ").split(" | ") for line in out.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| K ")]
    assert [row[0] for row in rows] == ["1", "3"]
    for _, separate_ms, stacked_ms, ratio in rows:
        separate, stacked = float(separate_ms), float(stacked_ms)
        rounding = 0.005 * (1 / separate + stacked / separate**2) + 0.005  # the ms' 2 decimals, the ratio's 2
        assert float(ratio) == pytest.approx(stacked / separate, abs=rounding)
    assert "Stacked and separate agree to" in out.read_text()
