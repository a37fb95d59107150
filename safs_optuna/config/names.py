"""The sampler and pruner names a search stage may give, in one place.

The config checks ``[activations]`` and ``[hpo]`` against these lists, and the pipeline builds
samplers and pruners from the same names; neither imports Optuna or torch.
"""

from __future__ import annotations

__all__ = ["PRUNERS", "SAMPLERS"]

SAMPLERS: tuple[str, ...] = ("lahc", "random", "tpe", "surrogate")
"""Samplers a stage can use: ``lahc`` (:class:`~safs_optuna.samplers.lahc.LAHCSampler`),
Optuna's ``random`` and ``tpe``, and ``surrogate``
(:class:`~safs_optuna.samplers.SurrogateSampler`: a nearest-neighbour regression on the finished
trials proposes the candidate it predicts best)."""

PRUNERS: tuple[str, ...] = (
    "none",
    "median",
    "hyperband",
    "incumbent",
    "halving",
    "divergence",
    "divergence+median",
    "divergence+hyperband",
)
"""Optuna pruners (early stopping of trials). ``incumbent``
(:class:`~safs_optuna.pruners.IncumbentPruner`) stops a trial whose learning curve is clearly
behind the one it must beat (for the ``lahc`` sampler); ``halving``
(:class:`~safs_optuna.pruners.HalvingPruner`) trains every candidate 1 epoch, the best third 3,
and the best third of those in full (successive halving on the ranking score, any sampler); ``divergence`` also stops trials whose
accuracy stays at chance level for 2 epochs (an absolute rule, unfit for 99 % sparsity, where
every network starts at chance); ``divergence+X`` wraps X in a DivergencePruner."""
