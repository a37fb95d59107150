"""The samplers, pruners and start points a stage can use, by the name the config gives.

These registries are the one place that maps a name to what it builds; the config lists the
same names to check a file before anything runs (``tests/test_factories.py`` keeps the two
equal). Every builder of a registry takes the same arguments, as timm's model registry does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from ..config import StudyConfig
from ..pruners import DivergencePruner, HalvingPruner, IncumbentPruner
from ..ranking import trial_score
from ..samplers import LAHCSampler, SurrogateSampler
from ..samplers.seeded import PositionSeededSampler, position_seed
from .features import describer
from .fidelity import configured_epochs
from .protocols import default_protocol_params
from .stages import Kind, Searches, Stage
from .warm_start import warm_start_params

if TYPE_CHECKING:
    from .resources import Resources

__all__ = ["PRUNERS", "SAMPLERS", "START_POINTS", "WARM_STARTS", "make_pruner", "make_sampler", "start_params",
           "warm_params"]

SamplerBuilder = Callable[[StudyConfig, Stage, int, "Resources"], optuna.samplers.BaseSampler]
PrunerBuilder = Callable[[int], optuna.pruners.BasePruner]
StartBuilder = Callable[[StudyConfig, Stage, "Resources"], "dict[str, Any] | None"]
WarmBuilder = Callable[[StudyConfig, "optuna.storages.BaseStorage | str", "Resources"], "list[tuple[str, dict[str, Any]]]"]


def _lahc(cfg: StudyConfig, stage: Stage, seed: int, res: Resources) -> optuna.samplers.BaseSampler:
    # Equivalent trees (same canonical key) are one candidate: drawn once, scored once.
    key = res.space.canonical_key if stage.searches == Searches.TREES else None
    return LAHCSampler(history_length=cfg.activations.history, seed=seed, canonical_key=key,
                       score=trial_score, variant=cfg.activations.lahc)


def _random(cfg: StudyConfig, stage: Stage, seed: int, res: Resources) -> optuna.samplers.BaseSampler:
    return PositionSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), seed)


def _tpe(cfg: StudyConfig, stage: Stage, seed: int, res: Resources) -> optuna.samplers.BaseSampler:
    startup = max(3, min(10, getattr(cfg, stage.section).trials // 3))
    return PositionSeededSampler(
        lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=startup, multivariate=True,
                                             group=True, constant_liar=True), seed)


def _surrogate(cfg: StudyConfig, stage: Stage, seed: int, res: Resources) -> optuna.samplers.BaseSampler:
    trees = stage.searches == Searches.TREES
    startup = max(3, min(10, getattr(cfg, stage.section).trials // 4))
    # Zero-cost features describe activations; a stage that searches protocols has none.
    describe = describer(cfg, res) if trees else None
    # Each candidate weighed with features is measured (about a forward pass): fewer of them.
    return SurrogateSampler(seed=seed, n_startup_trials=startup, pool_size=256 if describe is None else 64,
                            describe=describe, canonical_key=res.space.canonical_key if trees else None,
                            score=trial_score)


SAMPLERS: dict[str, SamplerBuilder] = {"lahc": _lahc, "random": _random, "tpe": _tpe, "surrogate": _surrogate}
"""Sampler of a search stage by ``[activations]``/``[hpo]`` ``sampler``: builder(cfg, stage, seed, res)."""


def _median(max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def _hyperband(max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs))


PRUNERS: dict[str, PrunerBuilder] = {
    "none": lambda max_epochs: optuna.pruners.NopPruner(),
    "incumbent": lambda max_epochs: IncumbentPruner(),
    "halving": lambda max_epochs: HalvingPruner(),
    "median": _median,
    "hyperband": _hyperband,
    "divergence": lambda max_epochs: DivergencePruner(None),
    "divergence+median": lambda max_epochs: DivergencePruner(_median(max_epochs)),
    "divergence+hyperband": lambda max_epochs: DivergencePruner(_hyperband(max_epochs)),
}
"""Pruner of a search stage by ``[activations]``/``[hpo]`` ``pruner``: builder(most epochs a trial trains)."""


def _own_trees(cfg: StudyConfig, stage: Stage, res: Resources) -> dict[str, Any] | None:
    try:
        return res.space.encode(res.own_trees())
    except ValueError:  # the own activation is not in the space: the sampler starts
        return None


def _default_protocol(cfg: StudyConfig, stage: Stage, res: Resources) -> dict[str, Any] | None:
    return default_protocol_params(cfg.hpo.space, cfg.protocol, stage.learn_scale)


START_POINTS: dict[Searches, StartBuilder] = {Searches.TREES: _own_trees, Searches.PROTOCOL: _default_protocol}
"""A search stage's first trial by what it searches: the network's own activations, or the
default protocol; ``None`` lets the sampler draw the first trial."""


WARM_STARTS: dict[Searches, WarmBuilder] = {
    Searches.TREES: lambda cfg, storage, res: warm_start_params(cfg, storage, res.space, res.own_trees()),
    Searches.PROTOCOL: lambda cfg, storage, res: [],
}
"""The trials queued after a search stage's start point, as ``(source, params)``: the earlier
winners of ``[activations] warm_start`` (see :mod:`.warm_start`); none for a protocol search."""


def make_sampler(cfg: StudyConfig, stage: Stage, res: Resources) -> optuna.samplers.BaseSampler:
    """The sampler of ``stage``'s study; seeded per stage, so that hpo and hpo-relu do not
    propose in lockstep. A "once" stage draws nothing: any seeded sampler does."""
    seed = position_seed(cfg.seed, stage.seed)
    if stage.kind == Kind.ONCE:
        return optuna.samplers.RandomSampler(seed=seed)
    return SAMPLERS[getattr(cfg, stage.section).sampler](cfg, stage, seed, res)


def make_pruner(cfg: StudyConfig, stage: Stage) -> optuna.pruners.BasePruner:
    """The pruner of ``stage``'s study (none for a "once" stage)."""
    if stage.kind == Kind.ONCE:
        return optuna.pruners.NopPruner()
    configured = configured_epochs(cfg, stage)
    max_epochs = configured if configured != "auto" else cfg.final.epochs
    return PRUNERS[getattr(cfg, stage.section).pruner](max_epochs)


def start_params(cfg: StudyConfig, stage: Stage, res: Resources) -> dict[str, Any] | None:
    """The params of a search stage's start trial (see :data:`START_POINTS`)."""
    return START_POINTS[stage.searches](cfg, stage, res)


def warm_params(cfg: StudyConfig, stage: Stage, storage: optuna.storages.BaseStorage | str,
                res: Resources) -> list[tuple[str, dict[str, Any]]]:
    """``(source, params)`` of the trials queued after a search stage's start point (see
    :data:`WARM_STARTS`)."""
    return WARM_STARTS[stage.searches](cfg, storage, res)
