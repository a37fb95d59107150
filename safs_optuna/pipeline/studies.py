"""The stages' Optuna studies in one storage: creation, fingerprint, re-arming, stale trials.

"once" stages hold one trial, queued (WAITING) by whoever creates the study; a worker claims it
atomically (WAITING -> RUNNING), so it runs once however many workers start together. "search"
stages run trials until the configured number has finished; their first trial, the start point
(the network's own activations, or the default protocol), is queued the same way. Every trial
records heartbeats; a dead worker's trial is failed and re-queued by the storage (see
:mod:`safs_optuna.storage`). Reading where a stage stands is :class:`.status.StatusReader`'s job.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from ..config import StudyConfig, parse_config, to_dict
from ..optuna_private import trial_id
from ..storage import GRACE_PERIOD, fail_unbeating_trials, redact
from .factories import make_pruner, make_sampler, start_params, warm_params
from .fidelity import START_ATTR
from .resources import Resources
from .stages import STAGES, Kind, Stage, stage as stage_of
from .status import FINISHED, StageStatus, StatusReader
from .warm_start import WARM_START_ATTR

__all__ = ["PipelineError", "StageStatus", "Studies", "FINISHED", "START_ATTR", "PROGRESS_ATTR", "all_stages"]

REQUEUE_ATTR = "requeued_after"  # user attr of a "once" trial queued again: the failed trial's number
# What may change between runs of one study without invalidating what is stored.
RUNTIME_KEYS = ("storage", "artifacts", "device", "threads", "lend_threads", "path", "data.loader_workers",
                "storage_retry_seconds")
# User attr of a resumable once-stage's trial (gradual pruning), rewritten after every epoch:
# {"epoch": epochs done, "checkpoint": artifact id of the model then, "schedule": per-epoch record}.
PROGRESS_ATTR = "progress"


class PipelineError(RuntimeError):
    """A stage cannot go on; the message says which and why."""


def quiet_optuna() -> None:
    """Optuna's per-trial info lines and experimental-feature warnings off: the worker logs its own."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=ExperimentalWarning)


def _fingerprint(cfg: StudyConfig) -> dict[str, Any]:
    """What defines a study: its config less the runtime keys and the budgets, as JSON values."""
    d = to_dict(cfg)
    for key in RUNTIME_KEYS:
        section, _, name = key.rpartition(".")
        (d.get(section, {}) if section else d).pop(name, None)
    # Budgets may grow on resume ("run 10 more trials"); everything else defines the study.
    for section in {s.section for s in STAGES if s.section}:
        d.get(section, {}).pop("trials", None)
    return json.loads(json.dumps(d, default=str))


def _with_defaults(stored: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(stored)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, Mapping) and isinstance(out[key], Mapping):
            out[key] = _with_defaults(out[key], value)
    return out


@functools.cache
def _default_fingerprint() -> dict[str, Any]:
    # The name only sets the storage and artifacts paths, which a fingerprint leaves out.
    return _fingerprint(parse_config({"name": "defaults"}))


class Studies(StatusReader):
    """The studies of one pipeline config in its storage, created and kept up to date.

    Args:
        cfg: The validated config.
        stages: The stages this config runs (:func:`all_stages`).
        storage: The storage (:func:`safs_optuna.storage.make_storage`).
        res: The worker's data and model, for a search stage's start point and sampler.
        grace_period: Seconds without a heartbeat after which a running trial's worker is dead.
    """

    def __init__(self, cfg: StudyConfig, stages: tuple[Stage, ...], storage: optuna.storages.BaseStorage,
                 res: Resources, grace_period: int = GRACE_PERIOD) -> None:
        super().__init__(cfg, storage)
        self.stages = stages
        self.res = res
        self.grace_period = grace_period

    # ------------------------------------------------------------- creation
    def study(self, stage: Stage | str) -> optuna.Study:
        """The stage's study, created (with its queued first trial) if missing."""
        stage = stage_of(stage)
        if stage.name in self._studies:
            return self._studies[stage.name]
        kwargs = dict(storage=self.storage, study_name=self.cfg.study_name(stage.name),
                      sampler=make_sampler(self.cfg, stage, self.res), pruner=make_pruner(self.cfg, stage))
        try:
            study = optuna.create_study(direction=self.cfg.training.direction, **kwargs)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(**kwargs)
            self._check_stored(study, stage, "Use another name, or delete the database to start over.")
        else:
            # Only the creator queues the first trial: creating a study is atomic in any RDB,
            # so it is queued exactly once however many workers start together.
            study.set_user_attr("config", _fingerprint(self.cfg))
            study.set_user_attr("stage", stage.name)
            # Named in the dashboard's plots.
            training = self.cfg.training
            study.set_metric_names(["validation accuracy %" if training.is_accuracy else training.metric])
            if stage.kind == Kind.ONCE:
                study.enqueue_trial({})
            else:
                params = start_params(self.cfg, stage, self.res)
                if params is not None:
                    study.enqueue_trial(params, user_attrs={START_ATTR: True})
                for source, warm in warm_params(self.cfg, stage, self.storage, self.res):
                    study.enqueue_trial(warm, user_attrs={WARM_START_ATTR: source})
        self._studies[stage.name] = study
        return study

    def check_config(self) -> None:
        """Raise :class:`PipelineError` when the stored studies were made with another config, for
        commands that only read them: they would label the results, or rebuild the model, wrongly.
        Every stage's study stores the same config (``run`` checks each), so the first one decides."""
        for stage in self.stages:
            try:
                study = optuna.load_study(study_name=self.cfg.study_name(stage.name), storage=self.storage)
            except KeyError:
                continue
            self._check_stored(study, stage, "Read it with the config it was made with (or --set those keys).")
            return

    def _check_stored(self, study: optuna.Study, stage: Stage, hint: str) -> None:
        stored = study.user_attrs.get("config")
        if stored is None:
            return
        # The keys added to the config since it was stored, at their defaults: a study made
        # before a key existed was made with the key's default behaviour.
        stored = _with_defaults(stored, _default_fingerprint())
        if stored != _fingerprint(self.cfg):
            raise PipelineError(f"{self._config_diff(self.cfg.study_name(stage.name), stored)} {hint}")

    def _config_diff(self, name: str, stored: Mapping[str, Any]) -> str:
        now = _fingerprint(self.cfg)
        diffs = []
        for section in sorted(set(stored) | set(now)):
            a, b = stored.get(section), now.get(section)
            if isinstance(a, dict) and isinstance(b, dict):
                diffs += [f"{section}.{k}: stored {a.get(k)!r}, config {b.get(k)!r}"
                          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            elif a != b:
                diffs.append(f"{section}: stored {a!r}, config {b!r}")
        return (f"study {name!r} in {redact(self.cfg.storage)} was made with a different config "
                f"({'; '.join(diffs)}).")

    def prepare(self, rearm: bool = True) -> None:
        """Create every stage's study; with ``rearm``, re-queue "once" stages whose only trials
        failed (an earlier run crashed or was stopped), so that this run retries them."""
        for stage in self.stages:
            study = self.study(stage)
            if rearm and stage.kind == Kind.ONCE:
                trials = study.get_trials(deepcopy=False)
                if trials and all(t.state == TrialState.FAIL for t in trials):
                    self.requeue(study, trials[-1])

    # ------------------------------------------------------------- re-queueing
    @staticmethod
    def requeue(study: optuna.Study, failed: FrozenTrial) -> None:
        """Queue a "once" stage again after its trial ``failed``, marked with that trial's number,
        so that a second worker re-queueing after the same failure is found out
        (:meth:`requeued_twice`) and the stage still trains once."""
        study.enqueue_trial({}, user_attrs={REQUEUE_ATTR: failed.number})

    @staticmethod
    def requeued_twice(study: optuna.Study, claimed: FrozenTrial) -> FrozenTrial | None:
        """Another trial re-queued after the same failure as ``claimed`` that is running or
        finished, if any: then ``claimed`` is a duplicate and must not train."""
        after = claimed.user_attrs.get(REQUEUE_ATTR)
        if after is None:
            return None
        return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
                     if trial_id(t) != trial_id(claimed) and t.user_attrs.get(REQUEUE_ATTR) == after), None)

    def requeue_if_superseded(self, stage: Stage) -> bool:
        """Queue a new first trial for a stage whose every finished trial used superseded upstream
        winners (its earlier results stay in the study); True when one was queued."""
        st = self.status(stage)
        if not st.superseded or st.finished or st.running or st.waiting:
            return False
        study = self.study(stage)
        if stage.kind == Kind.ONCE:
            study.enqueue_trial({})
            return True
        params = start_params(self.cfg, stage, self.res)
        if params is None:
            return False
        study.enqueue_trial(params, user_attrs={START_ATTR: True})
        return True

    # ------------------------------------------------------------- dead workers
    def running_ids(self) -> set[int]:
        """Storage ids of the running trials of the studies this process opened."""
        return {trial_id(t) for study in self._studies.values()
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}

    def fail_stale(self) -> None:
        """Fail (and so re-queue) trials whose worker died: silent heartbeats, and trials claimed
        by a worker that died before its first heartbeat."""
        for study in self._studies.values():
            optuna.storages.fail_stale_trials(study)
            fail_unbeating_trials(study, self.grace_period)

    def settle(self, log: Callable[[str], None]) -> None:
        """Wait until trials left RUNNING by an earlier run are either alive (their heartbeat
        goes on) or failed and re-queued — so a resumed run re-evaluates a killed trial first,
        as the run that never stopped did, instead of drawing a new one beside it."""
        running = self.running_ids()
        if not running:
            return
        log(f"{len(running)} trial(s) were running before this run; waiting up to "
            f"{self.grace_period}s to see whether their workers are still alive")
        deadline = time.time() + self.grace_period + 2
        while time.time() < deadline:
            self.fail_stale()
            if not running & self.running_ids():
                return
            time.sleep(1.0)

    # ------------------------------------------------------------- progress
    def progress(self, stage: Stage) -> tuple[int, dict[str, Any]] | None:
        """Where a resumable once-stage got to before its worker died: the furthest progress
        (trial number, :data:`PROGRESS_ATTR`) among the trials that did not finish since the
        stage last completed, so ``--rerun`` starts over; ``None`` when there is none."""
        trials = self.study(stage).get_trials(deepcopy=False)
        last = max((t.number for t in trials if t.state == TrialState.COMPLETE), default=-1)
        left = [t for t in trials
                if t.number > last and t.state != TrialState.COMPLETE and PROGRESS_ATTR in t.user_attrs]
        if not left:
            return None
        best = max(left, key=lambda t: (t.user_attrs[PROGRESS_ATTR]["epoch"], t.number))
        return best.number, best.user_attrs[PROGRESS_ATTR]


def all_stages(cfg: StudyConfig) -> tuple[Stage, ...]:
    """The stages this config runs: ablations only with ``ablations``, a stage with
    ``Stage.enabled_by`` only when that key is true, none that a set config key skips
    (``Stage.skipped_by``), and needs only on stages that run."""
    def skipped(stage: Stage) -> bool:
        if stage.skipped_by is None:
            return False
        section, key = stage.skipped_by.split(".")
        return getattr(getattr(cfg, section), key) is not None

    kept = [s for s in STAGES if (cfg.ablations or not s.ablation) and not skipped(s)
            and (s.enabled_by is None or getattr(cfg, s.enabled_by))]
    names = {s.name for s in kept}
    return tuple(dataclasses.replace(s, needs=tuple(n for n in s.needs if n in names)) for s in kept)
