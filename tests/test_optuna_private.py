"""The private Optuna parts in one module still behave as this package relies on.

Runs in CI on the newest Optuna and again on the oldest that setup.cfg admits.
"""

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from safs_optuna import optuna_private as op


def _study(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=60)
    return optuna.create_study(storage=storage, study_name="s")


def test_ids_and_storage_match_the_public_lookups(tmp_path):
    study = _study(tmp_path)
    trial = study.ask()
    storage = op.storage_of(study)
    assert op.study_id(study) == storage.get_study_id_from_name("s")
    assert op.trial_id(trial) == storage.get_trial_id_from_study_id_trial_number(op.study_id(study), trial.number)
    frozen = study.get_trials(deepcopy=False)[0]
    assert op.trial_id(frozen) == op.trial_id(trial)


def test_enqueued_params_are_seen_before_the_trial_suggests_them(tmp_path):
    study = _study(tmp_path)
    study.enqueue_trial({"x": 3})
    frozen = study.get_trials(deepcopy=False)[0]
    assert frozen.params == {}
    assert op.enqueued_params(frozen) == {"x": 3}


def test_contains_checks_values_in_their_external_form():
    assert op.contains(CategoricalDistribution(["relu", "elu"]), "elu")
    assert not op.contains(CategoricalDistribution(["relu", "elu"]), "tanh")
    assert op.contains(FloatDistribution(0.1, 1.0), 0.5)
    assert not op.contains(FloatDistribution(0.1, 1.0), 2.0)
    assert not op.contains(IntDistribution(1, 5), "three")


def test_rdb_backend_and_heartbeat_model(tmp_path):
    study = _study(tmp_path)
    backend = op.rdb_backend(op.storage_of(study))
    assert isinstance(backend, optuna.storages.RDBStorage)
    assert op.rdb_backend(optuna.storages.InMemoryStorage()) is None
    trial = study.ask()
    backend.record_heartbeat(op.trial_id(trial))
    model = op.heartbeat_model()
    with backend.engine.connect() as conn:
        rows = [r[0] for r in conn.execute(sqlalchemy.select(model.trial_id))]
    assert rows == [op.trial_id(trial)]


def test_a_claimed_queued_trial_is_that_trial_and_records_heartbeats(tmp_path):
    study = _study(tmp_path)
    study.enqueue_trial({"x": 2})
    frozen = study.get_trials(deepcopy=False)[0]
    storage = op.storage_of(study)
    assert storage.set_trial_state_values(op.trial_id(frozen), state=optuna.trial.TrialState.RUNNING)
    trial = op.claimed_trial(study, op.trial_id(frozen))
    assert trial.number == frozen.number and trial.suggest_int("x", 0, 5) == 2
    assert op.heartbeat_interval(storage) == 60
    op.record_heartbeat(storage, op.trial_id(trial))
    with op.rdb_backend(storage).engine.connect() as conn:
        rows = [r[0] for r in conn.execute(sqlalchemy.select(op.heartbeat_model().trial_id))]
    assert rows == [op.trial_id(trial)]
    study.tell(trial, 1.0)
    assert study.trials[0].params == {"x": 2} and study.trials[0].value == 1.0
    assert op.heartbeat_interval(optuna.storages.InMemoryStorage()) is None


def test_updating_a_finished_trial_raises_what_the_package_catches(tmp_path):
    study = _study(tmp_path)
    trial = study.ask()
    study.tell(trial, 1.0)
    storage = op.storage_of(study)
    with pytest.raises(op.UpdateFinishedTrialError):
        storage.set_trial_state_values(op.trial_id(trial), state=optuna.trial.TrialState.FAIL)
