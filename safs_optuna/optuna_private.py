"""The few parts of Optuna's private API this package cannot do without, in one place.

Optuna's public API covers a study seen from one process. A sampler that replays a chain from
storage, a pruner that records why it stopped a trial, and workers that claim, re-queue and fail
each other's trials need the storage's own ids and a few internals. Each use lives here, with the
public alternative or the reason there is none, so a new Optuna release breaks one module, and
``tests/test_optuna_private.py`` runs on the oldest and newest Optuna that setup.cfg admits.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

__all__ = [
    "ENQUEUED_PARAMS_ATTR",
    "UpdateFinishedTrialError",
    "claimed_trial",
    "contains",
    "enqueued_params",
    "heartbeat_interval",
    "heartbeat_model",
    "rdb_backend",
    "rdb_models",
    "rdb_session",
    "record_heartbeat",
    "storage_of",
    "study_id",
    "trial_id",
]

# ``Study.enqueue_trial`` keeps a queued trial's parameters in this system attribute until the
# sampler asks for them. Public alternative: none; ``FrozenTrial.params`` holds them only once
# suggested, and a sampler must know what another worker's queued trial will evaluate.
ENQUEUED_PARAMS_ATTR = "fixed_params"


# What updating a finished trial raises: ``optuna.exceptions.UpdateFinishedTrialError`` where
# Optuna has it (a RuntimeError), a plain RuntimeError on the older releases setup.cfg admits.
UpdateFinishedTrialError: type[RuntimeError] = getattr(optuna.exceptions, "UpdateFinishedTrialError", RuntimeError)


def storage_of(study: optuna.Study) -> BaseStorage:
    """The study's storage. Public alternative: none; samplers and pruners get the study only."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage.

    Public alternative: ``storage.get_study_id_from_name(study.study_name)``, one more query per
    call; the attribute is read on hot paths (every sampler call).
    """
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's id in its storage (unique across studies, unlike ``number``).

    Public alternative: ``storage.get_trial_id_from_study_id_trial_number``, one more query per
    call; storage methods take this id, and trials of several studies share one table.
    """
    return trial._trial_id


def enqueued_params(trial: FrozenTrial) -> dict[str, Any]:
    """Parameters queued for ``trial`` by ``Study.enqueue_trial`` (empty when none)."""
    return dict(trial.system_attrs.get(ENQUEUED_PARAMS_ATTR, {}))


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` (external form) lies in ``dist``.

    Public alternative: none; ``BaseDistribution._contains`` is what Optuna itself uses to check
    an enqueued value against a distribution.
    """
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def rdb_backend(storage: BaseStorage) -> optuna.storages.RDBStorage | None:
    """The RDBStorage under ``storage`` (Optuna wraps it in a cache), or None for other storages.

    Public alternative: none; ``optuna.storages.get_storage`` returns the private cache wrapper,
    whose ``_backend`` is the RDBStorage that owns the engine and heartbeat settings.
    """
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def claimed_trial(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """The :class:`optuna.Trial` of a queued trial this worker claimed (set RUNNING) itself.

    Public alternative: ``study.ask()``, which claims a queued trial too, but creates a new one
    when another worker claimed it first; a stage that runs once must run its queued trial only.
    Optuna's docs advise against calling the ``Trial`` constructor directly.
    """
    return optuna.Trial(study, trial_id)


def heartbeat_interval(storage: BaseStorage) -> int | None:
    """Seconds between heartbeats the storage expects (``None``: it records none).

    Public alternative: none; ``study.optimize`` records heartbeats of its own trials only, and a
    trial claimed outside it (a stage that runs once) must record its own.
    """
    get = getattr(storage, "get_heartbeat_interval", None)  # RDB storages and their cache only
    return get() if get is not None else None


def record_heartbeat(storage: BaseStorage, trial_id: int) -> None:
    """Record that the worker running ``trial_id`` is alive (see :func:`heartbeat_interval`);
    nothing for a storage without heartbeats."""
    if heartbeat_interval(storage) is not None:
        storage.record_heartbeat(trial_id)


def heartbeat_model() -> Any:
    """The SQLAlchemy model of RDB heartbeats, to ask which running trials have none yet.

    Public alternative: none; ``optuna.storages.fail_stale_trials`` skips trials without a
    heartbeat row, and a trial claimed by a worker that died before its first heartbeat has none.
    """
    from optuna.storages._rdb.models import TrialHeartbeatModel

    return TrialHeartbeatModel


def rdb_models() -> Any:
    """Optuna's SQLAlchemy models (studies, trials, their attributes).

    Public alternative: none; a write that must be recognisable after a lost connection (did it
    commit?) stores a token in the same transaction, which needs the models and a session.
    """
    from optuna.storages._rdb import models

    return models


def rdb_session(storage: optuna.storages.RDBStorage) -> Any:
    """A context manager over one transaction of ``storage``, as RDBStorage's own methods use:
    committed at the end, rolled back on an error (SQLAlchemy errors become
    ``StorageInternalError``, an ``IntegrityError`` propagates).

    Public alternative: none (see :func:`rdb_models`).
    """
    from optuna.storages._rdb.storage import _create_scoped_session

    return _create_scoped_session(storage.scoped_session)
