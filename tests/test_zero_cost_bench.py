"""The zero-cost benchmark's verdict: a feature holds only with one sign and |ρ| ≥ the bar in every run."""

from __future__ import annotations

import math

from zero_cost import holding, rhos, spearman


def _run(pairs):
    # Rows whose trained score (accuracy curve above a band of 10) follows ``score``.
    rows = [{"features": {"response_gain": g, "loss_drop": d}, "val_accuracy": [s], "val_loss": [1.0]}
            for g, d, s in pairs]
    return {"rows": rows, "band": 10.0}


def test_spearman_orders_scores_as_tuples_and_is_nan_for_a_constant_side():
    assert spearman([1, 2, 3], [(5.0, -2.0), (5.0, -1.0), (6.0, -3.0)]) == 1.0
    assert math.isnan(spearman([1, 1, 1], [(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)]))


def test_a_feature_holds_only_with_one_sign_above_the_bar_everywhere():
    up = _run([(1, 3, 20), (2, 1, 30), (3, 2, 40), (4, 4, 50)])      # gain: +1; drop: +0.4
    down = _run([(1, 3, 50), (2, 1, 40), (3, 2, 30), (4, 4, 20)])    # gain: -1
    assert rhos(up)["response_gain"] == 1.0
    assert holding([up, up], 0.3) == {**dict.fromkeys(holding([up], 0.3), ""), "response_gain": "+",
                                      "loss_drop": "+"}
    assert holding([up, down], 0.3)["response_gain"] == ""   # signs differ
    assert holding([up], 0.5)["loss_drop"] == ""             # below the bar
    assert holding([up], 0.3)["fisher_trace"] == ""          # never measured
