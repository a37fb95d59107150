"""[activations] warm_start: earlier winners (a study in the storage, a file of formulas) queued
first in the activation search, and one line for every source that cannot be used."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from safs_optuna.config import load_config
from safs_optuna.optuna_private import enqueued_params
from safs_optuna.pipeline import Pipeline
from safs_optuna.pipeline.preflight import InputError, preflight

from ._tiny import write_config

OWN = {"act1": "relu(x)", "act2": "relu(x)", "act3": "relu(x)", "act4": "relu(x)"}


def _config(tmp_path, sources):
    path = write_config(tmp_path)
    text = path.read_text().replace("[activations]\n", f"[activations]\nwarm_start = {json.dumps(sources)}\n")
    path.write_text(text)
    return path


def _earlier(cfg, formulas, name="earlier"):
    """A finished activation search of another study in the same storage, as a run leaves it."""
    study = optuna.create_study(study_name=f"{name}/activations", storage=cfg.storage, direction="maximize")
    for value, f in ((30.0, OWN), (45.0, formulas), (40.0, {**OWN, "act1": "tanh(x)"})):
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=value,
                                                  user_attrs={"formulas": f}))


def _queued_formulas(pipe):
    study = pipe.studies.study("activations")
    out = []
    for t in study.get_trials(deepcopy=False):
        trees = pipe.res.space.decode(enqueued_params(t))
        out.append((t.user_attrs.get("warm_start"), {s: tree.formula for s, tree in trees.items()}))
    return out


def test_a_study_and_a_file_are_queued_after_the_start_point_in_order(tmp_path):
    (tmp_path / "winners.toml").write_text('act2 = "gelu(x)"\nact4 = "elu(x)"\n')
    path = _config(tmp_path, ["earlier", "winners.toml"])  # the file: relative to the config
    cfg = load_config(path)
    _earlier(cfg, {**OWN, "act1": "swish(x)", "act3": "srs(x)"})
    preflight([cfg])
    pipe = Pipeline(cfg, log=lambda msg: None)
    assert _queued_formulas(pipe) == [
        (None, OWN),  # the start point: the network's own activations
        ("earlier", {**OWN, "act1": "swish(x)", "act3": "srs(x)"}),  # the best trial, not the last
        ("winners.toml", {**OWN, "act2": "gelu(x)", "act4": "elu(x)"}),  # unnamed sites keep their own
    ]
    # Only the study's creator queues them: another worker (or a resumed run) adds none.
    again = Pipeline(cfg, log=lambda msg: None)
    assert len(again.studies.study("activations").get_trials(deepcopy=False)) == 3


def test_the_same_activations_are_queued_once(tmp_path):
    (tmp_path / "a.toml").write_text('act1 = "gelu(x)"\n')
    (tmp_path / "b.json").write_text('{"act1": "gelu(x)", "act2": "relu(x)"}')  # the same trees
    (tmp_path / "own.toml").write_text('act3 = "relu(x)"\n')  # the start point's
    cfg = load_config(_config(tmp_path, ["a.toml", "b.json", "own.toml", "a.toml"]))
    assert [source for source, _ in _queued_formulas(Pipeline(cfg, log=lambda msg: None))] == [None, "a.toml"]


def test_a_json_file_and_a_full_study_name_work_too(tmp_path):
    (tmp_path / "w.json").write_text(json.dumps({"act1": "hardswish(x)"}))
    path = _config(tmp_path, [str(tmp_path / "w.json"), "earlier/activations"])
    cfg = load_config(path)
    _earlier(cfg, {**OWN, "act2": "symexp(x)"})
    queued = _queued_formulas(Pipeline(cfg, log=lambda msg: None))
    assert [source for source, _ in queued] == [None, str(tmp_path / "w.json"), "earlier/activations"]
    assert queued[1][1]["act1"] == "hardswish(x)" and queued[2][1]["act2"] == "symexp(x)"


@pytest.mark.parametrize("sources, files, says", [
    (["nowhere"], {}, "no study 'nowhere/activations' in this storage; studies with an activation search: earlier"),
    (["missing.toml"], {}, "warm_start: no file"),
    (["bad.toml"], {"bad.toml": "act1 = swish(x)"}, "cannot read"),
    (["nums.json"], {"nums.json": '{"act1": 3}'}, 'must map each site to a formula string, e.g. act1 = "swish(x)"'),
    (["site.toml"], {"site.toml": 'fc9 = "gelu(x)"'}, "no site 'fc9' in this network; its sites: act1, act2, act3, act4"),
    (["op.toml"], {"op.toml": 'act1 = "cosh(x)"'}, "'op.toml'"),  # not in the "safs" space
    (["typo.toml"], {"typo.toml": 'act1 = "swsh(x)"'}, "swsh"),
])
def test_a_source_that_cannot_be_used_stops_the_run_in_one_line(tmp_path, sources, files, says):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cfg = load_config(_config(tmp_path, sources))
    _earlier(cfg, OWN)
    with pytest.raises(InputError) as err:
        preflight([cfg])
    message = str(err.value)
    assert "[activations] warm_start" in message and says in message and "\n" not in message


def test_a_study_without_finished_trials_or_an_absent_database_is_named(tmp_path):
    cfg = load_config(_config(tmp_path, ["earlier"]))
    with pytest.raises(InputError, match="no study 'earlier/activations' in this storage; studies with an "
                                         "activation search: none"):
        preflight([cfg])
    assert not (tmp_path / "tiny.db").exists()  # looking made no database
    optuna.create_study(study_name="earlier/activations", storage=cfg.storage)
    with pytest.raises(InputError, match="'earlier/activations' has no finished trial yet"):
        preflight([cfg])


@pytest.mark.slow
def test_a_run_starts_from_an_earlier_winner_and_the_search_goes_on(tmp_path):
    (tmp_path / "winners.toml").write_text('act1 = "swish(x)"\nact2 = "gelu(x)"\n')
    path = _config(tmp_path, ["winners.toml"])
    proc = subprocess.run([sys.executable, "-m", "safs_optuna.cli", "run", str(path)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_config(path)
    trials = optuna.load_study(study_name="tiny/activations", storage=cfg.storage).get_trials(deepcopy=False)
    assert len(trials) == 3 and trials[1].user_attrs["warm_start"] == "winners.toml"
    assert trials[1].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert trials[1].user_attrs["formulas"] == {**OWN, "act1": "swish(x)", "act2": "gelu(x)"}
    keys = {tuple(sorted(t.params.items())) for t in trials}
    assert len(keys) == 3  # the sampler proposed something new after the queued trials
