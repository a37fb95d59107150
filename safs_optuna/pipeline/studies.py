"""The stages' Optuna studies in one storage: creation, fingerprint, re-arming, stale trials, status.

"once" stages hold one trial, queued (WAITING) by whoever creates the study; a worker claims it
atomically (WAITING -> RUNNING), so it runs once however many workers start together. "search"
stages run trials until the configured number has finished; their first trial, the start point
(the network's own activations, or the default protocol), is queued the same way. Every trial
records heartbeats; a dead worker's trial is failed and re-queued by the storage (see
:mod:`safs_optuna.storage`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from ..config import FINAL, StudyConfig, parse_config, to_dict
from ..ranking import left_chance, trial_score
from ..storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, fail_unbeating_trials, make_storage, redact
from .stages import STAGES, Stage, stage as stage_of

__all__ = ["PipelineError", "StageStatus", "Studies", "FINISHED", "START_ATTR", "FIDELITY_ATTR", "PROGRESS_ATTR"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
REQUEUE_ATTR = "requeued_after"  # user attr of a "once" trial queued again: the failed trial's number
# What may change between runs of one study without invalidating what is stored.
RUNTIME_KEYS = ("storage", "artifacts", "device", "threads", "lend_threads", "path", "data.loader_workers",
                "storage_retry_seconds")
START_ATTR = "start"  # user attr of a search stage's start trial
INPUTS_ATTR = "inputs"  # user attr: the upstream winners a trial ran with, {stage: trial number}
FIDELITY_ATTR = "epochs"  # study user attr: epochs per trial of a search stage, once known
FIDELITY_WHY_ATTR = "epochs_reason"
# User attr of a resumable once-stage's trial (gradual pruning), rewritten after every epoch:
# {"epoch": epochs done, "checkpoint": artifact id of the model then, "schedule": per-epoch record}.
PROGRESS_ATTR = "progress"
USER_FIT_ERROR = "UserFitError"  # how the "error" attr of a trial the user's loop failed begins


class PipelineError(RuntimeError):
    """A stage cannot go on; the message says which and why."""


@dataclass
class StageStatus:
    """Where one stage stands, for ``safs-optuna status``."""

    stage: Stage
    exists: bool
    finished: int
    running: int
    waiting: int
    failed: int
    budget: int
    best_value: float | None
    best_trial: FrozenTrial | None
    started: float | None = None  # when its first trial started (a timestamp)
    ended: float | None = None  # when its last trial finished
    epochs: int | None = None  # a search stage's epochs per trial, once known
    epochs_reason: str | None = None
    found_nothing: str | None = None  # a finished search stage that found nothing says why
    superseded: int = 0  # finished trials that ran with upstream winners that are no longer the winners
    last_error: str | None = None  # "trial N: <error>" of the latest failed trial that recorded one
    errored: int = 0  # search trials the user's training loop failed: they count against the budget

    @property
    def spent(self) -> int:
        """Trials of a search stage that used up budget: finished, or failed by the user's loop
        (retrying those would fail again; a trial whose worker died is retried instead)."""
        return self.finished + self.errored

    @property
    def done(self) -> bool:
        if self.stage.kind == "once":  # a queued or running re-run is not done yet
            return self.exists and self.best_trial is not None and not (self.waiting or self.running)
        return self.exists and self.spent >= self.budget


def quiet_optuna() -> None:
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


class Studies:
    """The studies of one pipeline config in its storage.

    Args:
        cfg: The validated config.
        samplers / pruners: Build a stage's sampler and pruner (the runner knows the space).
        start_params: A search stage's start trial's params, or ``None`` to let the sampler start.
    """

    def __init__(self, cfg: StudyConfig, stages: tuple[Stage, ...],
                 sampler: Callable[[Stage], optuna.samplers.BaseSampler],
                 pruner: Callable[[Stage], optuna.pruners.BasePruner],
                 start_params: Callable[[Stage], dict[str, Any] | None],
                 heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD,
                 create: bool = True) -> None:
        quiet_optuna()
        self.cfg = cfg
        self.stages = stages
        self.grace_period = grace_period
        self.storage = make_storage(cfg.storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                    create=create, retry_seconds=cfg.storage_retry_seconds)
        self._sampler, self._pruner, self._start_params = sampler, pruner, start_params
        self._studies: dict[str, optuna.Study] = {}

    def name(self, stage: str) -> str:
        return self.cfg.study_name(stage)

    def budget(self, stage: Stage) -> int:
        return getattr(self.cfg, stage.section).trials if stage.kind == "search" else 1

    def configured_epochs(self, stage: Stage) -> int | str:
        """A search stage's epochs per trial as configured: a number (``"final"``: the full
        fine-tune's) or ``"auto"``."""
        epochs = getattr(self.cfg, stage.section).epochs
        return self.cfg.final.epochs if epochs == FINAL else epochs

    # ------------------------------------------------------------- creation
    def fingerprint(self) -> dict[str, Any]:
        return _fingerprint(self.cfg)

    def study(self, stage: Stage | str) -> optuna.Study:
        """The stage's study, created (with its queued first trial) if missing."""
        stage = stage_of(stage)
        if stage.name in self._studies:
            return self._studies[stage.name]
        kwargs = dict(storage=self.storage, study_name=self.name(stage.name), sampler=self._sampler(stage),
                      pruner=self._pruner(stage))
        try:
            study = optuna.create_study(direction=self.cfg.training.direction, **kwargs)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(**kwargs)
            self._check_stored(study, stage, "Use another name, or delete the database to start over.")
        else:
            # Only the creator queues the first trial: creating a study is atomic in any RDB,
            # so it is queued exactly once however many workers start together.
            study.set_user_attr("config", self.fingerprint())
            study.set_user_attr("stage", stage.name)
            # Named in the dashboard's plots.
            training = self.cfg.training
            study.set_metric_names(["validation accuracy %" if training.is_accuracy else training.metric])
            if stage.kind == "once":
                study.enqueue_trial({})
            else:
                params = self._start_params(stage)
                if params is not None:
                    study.enqueue_trial(params, user_attrs={START_ATTR: True})
        self._studies[stage.name] = study
        return study

    def check_config(self) -> None:
        """Raise :class:`PipelineError` when the stored studies were made with another config, for
        commands that only read them: they would label the results, or rebuild the model, wrongly.
        Every stage's study stores the same config (``run`` checks each), so the first one decides."""
        for stage in self.stages:
            try:
                study = optuna.load_study(study_name=self.name(stage.name), storage=self.storage)
            except KeyError:
                continue
            self._check_stored(study, stage, "Read it with the config it was made with (or --set those keys).")
            return

    def _check_stored(self, study: optuna.Study, stage: Stage, hint: str) -> None:
        stored = study.user_attrs.get("config")
        if stored is not None and self._upgraded(stored) != self.fingerprint():
            raise PipelineError(f"{self._config_diff(self.name(stage.name), self._upgraded(stored))} {hint}")

    def _upgraded(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """``stored`` with the keys added to the config since it was stored, at their defaults:
        a study made before a key existed was made with the key's default behaviour."""
        return _with_defaults(stored, _default_fingerprint())

    def _config_diff(self, name: str, stored: Mapping[str, Any]) -> str:
        now = self.fingerprint()
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
            if rearm and stage.kind == "once":
                trials = study.get_trials(deepcopy=False)
                if trials and all(t.state == TrialState.FAIL for t in trials):
                    self.requeue(study, trials[-1])

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
                     if t._trial_id != claimed._trial_id and t.user_attrs.get(REQUEUE_ATTR) == after), None)

    def running_ids(self) -> set[int]:
        return {t._trial_id for study in self._studies.values()
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

    # ------------------------------------------------------------- fidelity
    def fidelity(self, stage: Stage) -> tuple[int | None, str | None]:
        """A search stage's epochs per trial and why: the configured number, or the one that
        ``"auto"`` recorded on the study (None until its start trial has measured it)."""
        configured = self.configured_epochs(stage)
        if configured != "auto":
            return int(configured), None
        attrs = self.study(stage).user_attrs
        return attrs.get(FIDELITY_ATTR), attrs.get(FIDELITY_WHY_ATTR)

    def record_fidelity(self, stage: Stage, epochs: int, reason: str) -> None:
        study = self.study(stage)
        study.set_user_attr(FIDELITY_ATTR, int(epochs))
        study.set_user_attr(FIDELITY_WHY_ATTR, reason)

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

    # ------------------------------------------------------------- status
    def status(self, stage: Stage | str) -> StageStatus:
        stage = stage_of(stage)
        try:
            study = self._studies.get(stage.name) or optuna.load_study(
                study_name=self.name(stage.name), storage=self.storage)
        except KeyError:  # not created yet: the configured epochs are known, "auto" ones are not
            configured = self.configured_epochs(stage) if stage.kind == "search" else None
            return StageStatus(stage, False, 0, 0, 0, 0, self.budget(stage), None, None,
                               epochs=configured if configured != "auto" else None)
        trials = study.get_trials(deepcopy=False)
        # Trials that ran with other upstream winners (a search stage grew and found a better one
        # after this stage used it) are kept but no longer count: the stage runs again for the new ones.
        inputs = self.inputs(stage)
        current = [t for t in trials if not t.state.is_finished()
                   or t.user_attrs.get(INPUTS_ATTR, inputs) == inputs]
        superseded = sum(1 for t in trials if t.state in FINISHED) - sum(1 for t in current if t.state in FINISHED)
        trials = current
        count = lambda *states: sum(t.state in states for t in trials)  # noqa: E731
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if stage.kind == "once":  # run again (--rerun, new inputs): the latest run is the result
            best = max(complete, key=lambda t: t.number) if complete else None
        else:
            best = max(complete, key=lambda t: (trial_score(t), -t.number)) if complete else None
        starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start]
        ends = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete]
        st = StageStatus(stage, True, count(*FINISHED), count(TrialState.RUNNING),
                         count(TrialState.WAITING), count(TrialState.FAIL), self.budget(stage),
                         best.value if best else None, best, min(starts, default=None), max(ends, default=None))
        st.superseded = superseded
        failed = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("error")]
        if failed:
            st.last_error = f"trial {failed[-1].number}: {failed[-1].user_attrs['error']}"
        if stage.kind == "search":
            st.errored = sum(1 for t in failed if str(t.user_attrs["error"]).startswith(USER_FIT_ERROR))
        if stage.kind == "search":
            configured = self.configured_epochs(stage)
            st.epochs = int(configured) if configured != "auto" else study.user_attrs.get(FIDELITY_ATTR)
            st.epochs_reason = study.user_attrs.get(FIDELITY_WHY_ATTR) if configured == "auto" else None
            if st.done:
                st.found_nothing = self._found_nothing(stage, trials, best, st.epochs)
        return st

    def inputs(self, stage: Stage) -> dict[str, int]:
        """The current winners of the stages whose results ``stage`` uses, by trial number."""
        out: dict[str, int] = {}
        for up in dict.fromkeys(u for u in (stage.trees_from, stage.protocol_from) if u):
            best = self.status(up).best_trial
            if best is not None:
                out[up] = best.number
        return out

    def requeue_if_superseded(self, stage: Stage) -> bool:
        """Queue a new first trial for a stage whose every finished trial used superseded upstream
        winners (its earlier results stay in the study); True when one was queued."""
        st = self.status(stage)
        if not st.superseded or st.finished or st.running or st.waiting:
            return False
        study = self.study(stage)
        if stage.kind == "once":
            study.enqueue_trial({})
            return True
        params = self._start_params(stage)
        if params is None:
            return False
        study.enqueue_trial(params, user_attrs={START_ATTR: True})
        return True

    def _found_nothing(self, stage: Stage, trials: list[FrozenTrial], best: FrozenTrial | None,
                       epochs: int | None) -> str | None:
        """Why a finished search found nothing, with the knob to turn; None when it found something."""
        finished = [t for t in trials if t.state in FINISHED]
        moved = [t for t in finished if t.state == TrialState.COMPLETE and left_chance(t)]
        # Trials that train as long as the fine-tune ("final") get longer with it, so they stay alike.
        knob = "final" if getattr(self.cfg, stage.section).epochs == FINAL else stage.section
        longer = f"--set {knob}.epochs=…" + (f" (now {epochs})" if epochs is not None else "")
        more = f"--set {stage.section}.trials=… (now {self.budget(stage)})"
        if best is None:
            return (f"{stage.name}: found nothing — every one of its {len(finished)} trials was pruned; "
                    f"the likely cause is a fidelity too short to tell them apart: try {longer}")
        if not moved:
            why = (f"{stage.name}: found nothing — all {len(finished)} trials stayed at chance level; "
                   f"they need more epochs to revive the sparse network: try {longer}")
            if self.cfg.sparsity.scope == "layer":
                # Layer-wise pruning leaves the small layers (the classifier) a handful of weights;
                # at 0.995 it left 5 of 6 benchmark seeds at chance, LAMP none (benchmarks/results).
                why += ('; or prune where the weights matter least: --set sparsity.scope="lamp" '
                        "(or a min_density for the smallest layers)")
            return why
        if best.user_attrs.get(START_ATTR):
            return (f"{stage.name}: found nothing better than its start point (trial {best.number}); "
                    f"search longer with {more}, or train each trial longer with {longer}")
        return None


def all_stages(cfg: StudyConfig) -> tuple[Stage, ...]:
    """The stages this config runs: ablations only with ``ablations``, none that a set config key
    skips (``Stage.skipped_by``), and needs only on stages that run."""
    def skipped(stage: Stage) -> bool:
        if stage.skipped_by is None:
            return False
        section, key = stage.skipped_by.split(".")
        return getattr(getattr(cfg, section), key) is not None

    kept = [s for s in STAGES if (cfg.ablations or not s.ablation) and not skipped(s)]
    names = {s.name for s in kept}
    return tuple(dataclasses.replace(s, needs=tuple(n for n in s.needs if n in names)) for s in kept)
