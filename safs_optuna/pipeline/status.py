"""Where each stage stands, read from the storage: trials by state, the winner, the epochs, and
whether a finished search found anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import FINAL, StudyConfig
from ..ranking import left_chance, trial_score
from .fidelity import FIDELITY_ATTR, FIDELITY_WHY_ATTR, START_ATTR, configured_epochs
from .stages import Kind, Stage, stage as stage_of

__all__ = ["BEYOND_BUDGET_ATTR", "FINISHED", "INPUTS_ATTR", "START_ATTR", "StageStatus", "StatusReader", "places_before"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
INPUTS_ATTR = "inputs"  # user attr: the upstream winners a trial ran with, {stage: trial number}
BEYOND_BUDGET_ATTR = "beyond_budget"  # user attr of a search trial asked for after the budget was taken
USER_FIT_ERROR = "UserFitError"  # how the "error" attr of a trial the user's loop failed begins


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
        if self.stage.kind == Kind.ONCE:  # a queued or running re-run is not done yet
            return self.exists and self.best_trial is not None and not (self.waiting or self.running)
        return self.exists and self.spent >= self.budget


def places_before(trials: Sequence[FrozenTrial], number: int, inputs: Any = None) -> int:
    """Places of a search stage's budget held by the trials numbered below ``number``: running,
    waiting, finished with the current upstream winners ``inputs``, or failed by the user's loop.

    Trial numbers are handed out atomically by the storage, so the first ``budget`` such trials
    run and a trial whose count reaches the budget is beyond it: workers that asked at the same
    moment all saw a place left, and the numbers decide who gets the last ones.
    """
    def holds(t: FrozenTrial) -> bool:
        if not t.state.is_finished():
            return True
        if t.user_attrs.get(INPUTS_ATTR, inputs) != inputs:
            return False
        return t.state in FINISHED or str(t.user_attrs.get("error", "")).startswith(USER_FIT_ERROR)

    return sum(1 for t in trials if t.number < number and holds(t))


def failures(trials: list[FrozenTrial]) -> int:
    """Failed trials, less those failed unrun because the budget was taken (nothing went wrong)."""
    return sum(1 for t in trials if t.state == TrialState.FAIL and BEYOND_BUDGET_ATTR not in t.user_attrs)


class StatusReader:
    """Reads where the stages of one config stand in ``storage``; writes nothing.

    Args:
        cfg: The validated config.
        storage: The storage its studies are in.
    """

    def __init__(self, cfg: StudyConfig, storage: optuna.storages.BaseStorage) -> None:
        self.cfg = cfg
        self.storage = storage
        # Studies this process opened to run (see Studies.study); others are loaded to be read.
        self._studies: dict[str, optuna.Study] = {}

    def budget(self, stage: Stage) -> int:
        """Trials the stage runs: the configured number for a search, one for a "once" stage."""
        return getattr(self.cfg, stage.section).trials if stage.kind == Kind.SEARCH else 1

    def places_before(self, study: optuna.Study, stage: Stage, number: int) -> int:
        """Places of ``stage``'s budget held by its trials numbered below ``number`` (see
        :func:`places_before`)."""
        return places_before(study.get_trials(deepcopy=False), number, self.inputs(stage))

    def status(self, stage: Stage | str) -> StageStatus:
        """Where ``stage`` stands now (a fresh read of the storage)."""
        stage = stage_of(stage)
        try:
            study = self._studies.get(stage.name) or optuna.load_study(
                study_name=self.cfg.study_name(stage.name), storage=self.storage)
        except KeyError:  # not created yet: the configured epochs are known, "auto" ones are not
            configured = configured_epochs(self.cfg, stage) if stage.kind == Kind.SEARCH else None
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
        if stage.kind == Kind.ONCE:  # run again (--rerun, new inputs): the latest run is the result
            best = max(complete, key=lambda t: t.number) if complete else None
        else:
            best = max(complete, key=lambda t: (trial_score(t), -t.number)) if complete else None
        starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start]
        ends = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete]
        st = StageStatus(stage, True, count(*FINISHED), count(TrialState.RUNNING),
                         count(TrialState.WAITING), failures(trials), self.budget(stage),
                         best.value if best else None, best, min(starts, default=None), max(ends, default=None))
        st.superseded = superseded
        failed = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("error")]
        if failed:
            st.last_error = f"trial {failed[-1].number}: {failed[-1].user_attrs['error']}"
        if stage.kind == Kind.SEARCH:
            st.errored = sum(1 for t in failed if str(t.user_attrs["error"]).startswith(USER_FIT_ERROR))
            configured = configured_epochs(self.cfg, stage)
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
