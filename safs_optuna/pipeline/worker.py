"""The worker loop: claim the most urgent trial with work, run it with heartbeats, repeat.

Nothing is kept only in a worker's memory (checkpoints go to the artifact store, linked from
their trials; a search stage's fidelity is recorded on its study), so a killed run resumes from
the storage.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence

import optuna
import torch
from optuna.trial import TrialState

from ..allocator import retain_freed_memory
from ..config import StudyConfig
from ..optuna_private import UpdateFinishedTrialError, claimed_trial, heartbeat_interval, record_heartbeat, trial_id
from ..storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, MAX_RETRY, make_storage
from ..training import UserFitError
from .bodies import BODIES, BeyondBudget
from .cores import CorePool
from .fidelity import START_ATTR, known_epochs
from .logs import WorkerLog, shown
from .resources import Resources
from .results import safs_stage, write_note
from .stages import Kind, Stage
from .status import StageStatus, StatusReader
from .studies import PipelineError, Studies, all_stages, quiet_optuna
from .usercode import UserCode

__all__ = ["MAX_FIT_ERRORS", "POLL_SECONDS", "Pipeline", "work_all"]

POLL_SECONDS = 0.5
"""How often a worker with nothing to do looks for work again: the most a stage waits after its
inputs are done before a waiting worker starts it (a look is a few queries: about 30 ms)."""
STALE_CHECK_SECONDS = 2.0
"""How often a waiting worker looks for the trials of dead workers (at most: a quarter of the grace
period that makes a trial stale, when that is shorter)."""
MAX_FIT_ERRORS = 3
"""Failed trials of a user's training loop after which a search stage stops, if none finished."""
DUPLICATE_ATTR = "duplicate_of"
"""User attr of a once-stage trial left unrun (FAIL) because trial N of the stage already ran."""



def _hide_beyond_budget(record: logging.LogRecord) -> bool:
    """Drop Optuna's "Trial N failed" line for a trial failed unrun beyond the budget."""
    return BeyondBudget.__name__ not in record.getMessage()

class _Heartbeat:
    """Record heartbeats for a claimed trial, as ``study.optimize`` does for its own trials."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial: int) -> None:
        self._db, self._trial = storage, trial
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        interval = heartbeat_interval(self._db) or 60
        while True:
            try:
                record_heartbeat(self._db, self._trial)
            except Exception:  # noqa: BLE001 - tried again next beat; the trial's own storage
                pass  # calls raise a lasting failure (a damaged file) with one clear message
            if self._stop.wait(interval):
                return

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Pipeline:
    """One worker's view of a SAFS study: its storage, data, sparse model and stages.

    Attributes:
        cfg: The study config.
        stages: The stages this config runs.
        studies: The stages' studies (:class:`~.studies.Studies`): creation and status.
        res: The data, models and checkpoints this worker loads once (:class:`~.resources.Resources`).
        log: This worker's log (:class:`~.logs.WorkerLog`; ``log.worker`` is its number).
        cores: Threads lent by idle workers on this machine, while :func:`work_all` runs.

    Example:

        .. code::

            cfg = safs_optuna.config.load_config("studies/quickstart.toml")
            work_all([Pipeline(cfg)])     # joins the study; returns when every stage is done
            print(safs_optuna.pipeline.results_table([Pipeline(cfg)]))
    """

    def __init__(self, cfg: StudyConfig, worker: int = 0, log: Callable[[str], None] | None = None,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD,
                 create: bool = True, code: UserCode | None = None) -> None:
        quiet_optuna()
        self.cfg = cfg
        self.log = WorkerLog(cfg.name, worker, log)
        self.stages = all_stages(cfg)
        storage = make_storage(cfg.storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                               create=create, retry_seconds=cfg.storage_retry_seconds)
        # The resources read the stages' results on their own, so they never call back into the studies.
        self.res = Resources(cfg, UserCode.from_config(cfg, code), StatusReader(cfg, storage))
        self.studies = Studies(cfg, self.stages, storage, self.res, grace_period)
        self._announced: set[str] = set()
        self.cores: CorePool | None = None  # set by work_all: threads lent by idle workers

    def step(self) -> tuple[list[str], bool]:
        """Run at most one trial of the most urgent stage with work: (pending stages, progressed)."""
        pending = []
        for stage in self.stages:
            st = self.studies.status(stage)
            if st.done:
                self._announce(st)
                continue
            pending.append(stage.name)
            # Every stage's needs are enabled whenever it is (ablations need only core stages).
            if not all(self.studies.status(n).done for n in stage.needs):
                continue
            if self.studies.requeue_if_superseded(stage):
                self.log(f"{stage.name}: its inputs changed ({self.studies.inputs(stage)}); running it again")
                st = self.studies.status(stage)
            if stage.kind == Kind.ONCE and self._run_once(stage, st):
                return pending, True
            if stage.kind == Kind.SEARCH and self._run_search_trial(stage, st):
                return pending, True
        return pending, False

    def rerun(self, name: str) -> None:
        """Queue a "once" stage to run again (e.g. its checkpoint was lost); its earlier trials
        stay in the study, and the new trial's result is the stage's from then on."""
        stage = next((s for s in self.stages if s.name == name and s.kind == Kind.ONCE), None)
        if stage is None:
            valid = ", ".join(s.name for s in self.stages if s.kind == Kind.ONCE)
            raise PipelineError(f"--rerun {name!r}: not a stage that runs once; valid: {valid}")
        st = self.studies.status(stage)
        if not (st.waiting or st.running):
            self.studies.study(stage).enqueue_trial({})
        self.log(f"{name}: queued to run again")

    def _announce(self, st: StageStatus) -> None:
        """Say once per worker that a finished search found nothing, naming the knob."""
        if st.found_nothing and st.stage.name not in self._announced:
            self._announced.add(st.stage.name)
            self.log(f"WARNING {st.found_nothing}")

    def check_stuck(self, pending: list[str]) -> None:
        """Re-queue a "once" stage whose worker died between failing and re-queueing its trial;
        raise :class:`PipelineError` for one that failed for good (its error, or too many deaths)."""
        for stage in self.stages:
            if stage.name not in pending or stage.kind != Kind.ONCE:
                continue
            st = self.studies.status(stage)
            if st.failed and not (st.done or st.running or st.waiting):
                study = self.studies.study(stage)
                failed = [t for t in study.get_trials(deepcopy=False)
                          if t.state == TrialState.FAIL and DUPLICATE_ATTR not in t.user_attrs]
                error = failed[-1].user_attrs.get("error") if failed else None
                if failed and error is None and len(failed) <= MAX_RETRY:
                    # Its worker died (no error recorded) between failing the trial and
                    # re-queueing it, as Optuna's stale-trial check does in two steps.
                    self.log(f"{stage.name}: the trial of a worker that died was not re-queued; "
                             "re-queued it")
                    self.studies.requeue(study, failed[-1])
                    continue
                why = error or (f"its worker died {len(failed)} times (killed, or out of memory?); "
                                "see the worker's log")
                raise PipelineError(f"stage {stage.name!r} failed: {why}. Fix the cause and run "
                                    f"`safs-optuna run` again; it retries the stage.")

    # ----------------------------------------------------------------- claiming trials
    def _run_once(self, stage: Stage, st: StageStatus) -> bool:
        """Claim the stage's queued trial (WAITING -> RUNNING, atomic) and run its body."""
        if not st.waiting:
            return False
        study, storage = self.studies.study(stage), self.studies.storage
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if not storage.set_trial_state_values(trial_id(frozen), state=TrialState.RUNNING):
                    continue
            except UpdateFinishedTrialError:
                continue
            trial = claimed_trial(study, trial_id(frozen))
            other = self.studies.requeued_twice(study, frozen)
            if other is not None:
                # Two workers re-queued the stage after the same failure: train it once.
                trial.set_user_attr(DUPLICATE_ATTR, other.number)
                study.tell(trial, state=TrialState.FAIL)
                continue
            self.log(f"{stage.name}: started (trial {trial.number})")
            if self.cores is not None:  # a trial starts: take back lent threads, borrow idle ones
                self.cores.refresh(force=True)
            start = time.time()
            with _Heartbeat(storage, trial_id(trial)):
                try:
                    value = BODIES[stage.body](self, stage, trial)
                except BaseException as exc:
                    trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                    study.tell(trial, state=TrialState.FAIL)
                    raise
            study.tell(trial, value)
            if stage.column and self.studies.status(safs_stage(self.stages)).done:
                write_note(self, plot=stage.column == "SAFS")
            self.log(f"{stage.name}: done in {time.time() - start:.0f}s — val {shown(self.cfg.training, value)}, "
                     f"test {trial.user_attrs.get('test_accuracy', float('nan')):.2f}%")
            return True
        return False

    def _run_search_trial(self, stage: Stage, st: StageStatus) -> bool:
        """Run one trial of a search stage (Optuna's ``optimize`` claims it), if any is left."""
        if not st.waiting and st.spent + st.running >= st.budget:
            return False  # the last trials are running elsewhere
        study = self.studies.study(stage)
        if known_epochs(self.cfg, stage, study)[0] is None and not self._start_waiting(study):
            return False  # "auto" epochs: the start trial, running elsewhere, measures them first
        # A trial failed unrun beyond the budget is no failure to show: Optuna's own line for it goes,
        # and its lines for every other failure (a user loop's error, a Ctrl-C) stay.
        logger = optuna.logging.get_logger("optuna")
        logger.addFilter(_hide_beyond_budget)
        try:
            study.optimize(functools.partial(BODIES[stage.body], self, stage), n_trials=1, gc_after_trial=False,
                           catch=(UserFitError, BeyondBudget))
        finally:
            logger.removeFilter(_hide_beyond_budget)
        self._check_fit_errors(stage)
        return True

    def _check_fit_errors(self, stage: Stage) -> None:
        """A user loop that fails a trial fails that trial (it counts against the budget, as a
        retry would fail again); one that failed ``MAX_FIT_ERRORS`` trials, or the whole budget,
        with none finished stops the stage."""
        st = self.studies.status(stage)
        if st.errored and not st.finished and st.errored >= min(MAX_FIT_ERRORS, st.budget):
            raise PipelineError(f"stage {stage.name!r}: the training loop failed in {st.errored} trials and "
                                f"none finished; the last, {st.last_error}. Fix it and run the same command "
                                "again: the search goes on")

    @staticmethod
    def _start_waiting(study: optuna.Study) -> bool:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return any(t.user_attrs.get(START_ATTR) for t in waiting)


def work_all(pipelines: Sequence[Pipeline], poll: float = POLL_SECONDS) -> None:
    """Work on every pipeline's stages (e.g. one per seed) until all are done, earliest first;
    waits while other workers hold the rest.

    Sets this process's malloc to keep freed tensor memory (:func:`retain_freed_memory`): a
    trial's training steps then reuse it instead of page-faulting on fresh memory. While it waits,
    its torch threads are lent to the workers of the same studies on this machine that have work
    (:class:`~safs_optuna.pipeline.cores.CorePool`); while it works, it borrows theirs.
    """
    retain_freed_memory()
    for pipe in pipelines:
        for stage in pipe.stages:
            pipe.studies.study(stage)
    key = "\n".join(sorted(f"{p.cfg.storage}\t{p.cfg.name}" for p in pipelines))
    cores = CorePool(key, torch.get_num_threads(), enabled=all(p.cfg.lend_threads for p in pipelines))
    for pipe in pipelines:
        pipe.cores = cores
    try:
        _work_all(pipelines, poll, cores)
    finally:
        cores.close()
        for pipe in pipelines:
            pipe.cores = None


def _work_all(pipelines: Sequence[Pipeline], poll: float, cores: CorePool) -> None:
    waited_on: str | None = None
    checked = 0.0  # when the last look for dead workers' trials was
    check_every = max(poll, min(STALE_CHECK_SECONDS, pipelines[0].studies.grace_period / 4))
    while True:
        pending: list[str] = []
        progressed = False
        for pipe in pipelines:
            p, progressed = pipe.step()
            pending += [f"{pipe.cfg.name}/{name}" for name in p]
            if progressed:
                break
        if progressed:
            continue
        if not pending:
            for pipe in pipelines:
                pipe.log("all stages done")
            return
        cores.idle()
        if time.monotonic() - checked >= check_every:
            checked = time.monotonic()
            for pipe in pipelines:
                pipe.check_stuck([p.rsplit("/", 1)[1] for p in pending if p.rsplit("/", 1)[0] == pipe.cfg.name])
            for pipe in pipelines:
                pipe.studies.fail_stale()
        if waited_on != ",".join(pending):
            waited_on = ",".join(pending)
            pipelines[0].log(f"waiting for other workers on: {waited_on} (a trial whose worker died "
                             f"is retried after {pipelines[0].studies.grace_period}s without heartbeat)")
        time.sleep(poll)
