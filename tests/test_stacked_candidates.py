"""benchmarks/stacked_candidates.py: several stage-1 candidates as one network train exactly as
the separate networks do (its GPU timing is a benchmark; its correctness is checked here, on CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import stacked_candidates as sc  # noqa: E402


def test_stacked_candidates_give_each_candidates_logits_and_update():
    assert sc.check_equivalence("cpu", k=3) < 1e-5


def test_stacked_candidates_differ_from_each_other_and_time_both_ways():
    models = sc.candidates(3)
    assert len({m.act1.tree.formula for m in models}) == 3
    x = torch.randn(4, 1, 28, 28)
    logits = sc.StackedLeNet5(models)(x)
    assert logits.shape == (3, 4, 10)
    assert not all(torch.equal(logits[0], other) for other in logits[1:])  # relu6 may equal relu here
    separate, stacked = sc.time_steps(2, "cpu", steps=1, batch=8)
    assert separate > 0 and stacked > 0
