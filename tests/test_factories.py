"""The sampler, pruner and start-point registries and the config accept the same names, and
every name builds what it says."""

from __future__ import annotations

import optuna
import pytest

from safs_optuna import config
from safs_optuna.config import parse_config
from safs_optuna.pipeline.factories import PRUNERS, SAMPLERS, START_POINTS, make_pruner, make_sampler
from safs_optuna.pipeline.resources import Resources
from safs_optuna.pipeline.stages import STAGES, Kind, Searches
from safs_optuna.pruners import DivergencePruner, HalvingPruner, IncumbentPruner
from safs_optuna.samplers import LAHCSampler, PositionSeededSampler, SurrogateSampler

SEARCHES = [s for s in STAGES if s.kind == Kind.SEARCH]


def _cfg(tmp_path, section: str, **keys: object) -> config.StudyConfig:
    return parse_config({"name": "f", "storage": f"sqlite:///{tmp_path / 'f.db'}",
                         "artifacts": str(tmp_path / "art"), section: dict(keys)})


def test_the_registries_hold_exactly_the_names_the_config_accepts():
    assert sorted(SAMPLERS) == sorted(config.SAMPLERS)
    assert sorted(PRUNERS) == sorted(config.PRUNERS)
    assert set(START_POINTS) == set(Searches)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("stage", SEARCHES, ids=lambda s: s.name)
def test_every_sampler_name_is_accepted_and_builds(tmp_path, name, stage):
    cfg = _cfg(tmp_path, stage.section, sampler=name)
    sampler = make_sampler(cfg, stage, Resources(cfg))
    expected = {"lahc": LAHCSampler, "surrogate": SurrogateSampler}.get(name, PositionSeededSampler)
    assert isinstance(sampler, expected)


@pytest.mark.parametrize("name", sorted(PRUNERS))
@pytest.mark.parametrize("stage", SEARCHES, ids=lambda s: s.name)
def test_every_pruner_name_is_accepted_and_builds(tmp_path, name, stage):
    cfg = _cfg(tmp_path, stage.section, pruner=name)
    pruner = make_pruner(cfg, stage)
    wrapped = name.startswith("divergence")
    inner = name.split("+")[-1] if "+" in name else (None if wrapped else name)
    if wrapped:
        assert isinstance(pruner, DivergencePruner)
        pruner = pruner.wrapped_pruner
    kinds = {None: type(None), "none": optuna.pruners.NopPruner, "incumbent": IncumbentPruner,
             "median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
             "halving": HalvingPruner}
    assert isinstance(pruner, kinds[inner]), (name, pruner)


def test_a_name_the_config_refuses_is_in_no_registry(tmp_path):
    with pytest.raises(config.ConfigError, match="sampler"):
        _cfg(tmp_path, "hpo", sampler="cmaes")
    assert "cmaes" not in SAMPLERS


def test_once_stages_draw_with_a_seeded_random_sampler_and_are_never_pruned(tmp_path):
    cfg = _cfg(tmp_path, "hpo")
    for stage in (s for s in STAGES if s.kind == Kind.ONCE):
        assert isinstance(make_sampler(cfg, stage, Resources(cfg)), optuna.samplers.RandomSampler)
        assert isinstance(make_pruner(cfg, stage), optuna.pruners.NopPruner)
