"""The worker loop and the stage bodies: one worker's view of a SAFS study.

Nothing is kept only in a worker's memory (checkpoints go to the artifact store, linked from
their trials; a search stage's fidelity is recorded on its study), so a killed run resumes from
the storage.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from ..activation import OperatorTree
from ..allocator import retain_freed_memory
from ..checkpoint import CheckpointError, save_checkpoint
from ..config import StudyConfig
from ..models import make_searchable, sites
from ..pruners import REASON_ATTR, DivergencePruner, IncumbentPruner
from ..ranking import chance_band, trial_score
from ..report import ResultRow, dashboard_note, markdown_table, paper_row
from ..samplers import LAHCSampler
from ..samplers.seeded import PositionSeededSampler, position_seed
from ..sparsity import cubic_sparsity, sparsity_report
from ..storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, MAX_RETRY, staging
from ..training import (DivergedError, EpochStats, FitResult, HParams, UserFitError, evaluate, fit, fit_with,
                        majority_accuracy)
from .cores import CorePool
from .protocols import default_protocol_params, hparams_from_params, suggest_hparams
from .resources import Resources
from .stages import COLUMN_STAGES, Stage, stage as stage_of
from .usercode import UserCode
from .studies import INPUTS_ATTR, PROGRESS_ATTR, START_ATTR, PipelineError, StageStatus, Studies, all_stages

__all__ = ["Pipeline", "work_all", "POLL_SECONDS", "AUTO_FLOOR"]

POLL_SECONDS = 0.5
"""How often a worker with nothing to do looks for work again: the most a stage waits after its
inputs are done before a waiting worker starts it (a look is a few queries: about 30 ms)."""
STALE_CHECK_SECONDS = 2.0
"""How often a waiting worker looks for the trials of dead workers (at most: a quarter of the grace
period that makes a trial stale, when that is shorter)."""
AUTO_FLOOR = 2
"""Fewest epochs per candidate that ``epochs = "auto"`` chooses."""
MAX_FIT_ERRORS = 3
"""Failed trials of a user's training loop after which a search stage stops, if none finished."""
DUPLICATE_ATTR = "duplicate_of"
"""User attr of a once-stage trial left unrun (FAIL) because trial N of the stage already ran."""


class _Heartbeat:
    """Record heartbeats for a claimed trial, as ``study.optimize`` does for its own trials."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        interval = self._storage.get_heartbeat_interval() or 60
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
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


def auto_epochs(history: Sequence[float], band: float, ceiling: int) -> tuple[int | None, str]:
    """``epochs = "auto"``: how long candidates train, from the start trial's accuracies so far.

    The start point is the network's own activation, the one a candidate must beat. Candidates
    train until the epoch in which the start point left the chance band, plus one: long enough
    for a candidate that revives sooner than the start point to be ahead of it, and to see who is
    ahead once both have revived. At least ``AUTO_FLOOR`` epochs, at most ``ceiling`` (a full
    fine-tune). Returns ``(None, "")`` while that is not yet known, i.e. while the start point is
    at chance and below the ceiling.
    """
    move = next((e for e, a in enumerate(history) if a > band), None)
    if move is not None:
        epochs = min(ceiling, max(AUTO_FLOOR, move + 2))
        return epochs, (f"auto: the start point left chance level in epoch {move + 1}; candidates "
                        f"train {move + 1} + 1 epochs (floor {AUTO_FLOOR}, ceiling {ceiling})")
    if len(history) >= ceiling:
        return ceiling, (f"auto: the start point stayed at chance level for {ceiling} epochs; candidates "
                         f"train the ceiling, {ceiling} (the full fine-tune's epochs)")
    return None, ""


class Pipeline:
    """One worker's view of a SAFS study: its storage, data, sparse model and stages.

    Example:

        .. code::

            cfg = safs_optuna.config.load_config("studies/quickstart.toml")
            Pipeline(cfg).work()          # joins the study; returns when every stage is done
            print(Pipeline(cfg).table())
    """

    def __init__(self, cfg: StudyConfig, worker: int = 0, log: Callable[[str], None] | None = None,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD,
                 create: bool = True, code: UserCode | None = None) -> None:
        self.cfg = cfg
        self.worker = worker
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stages = all_stages(cfg)
        self.studies = Studies(cfg, self.stages, self._sampler, self._pruner, self._start_params,
                               heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                               create=create)
        self.res = Resources(cfg, lambda name: self.status(name).best_trial, UserCode.from_config(cfg, code))
        self._announced: set[str] = set()
        self.cores: CorePool | None = None  # set by work_all: threads lent by idle workers

    # ----------------------------------------------------------------- plumbing
    @property
    def storage(self) -> optuna.storages.BaseStorage:
        return self.studies.storage

    @property
    def splits(self) -> Any:
        return self.res.splits

    @property
    def space(self) -> Any:
        return self.res.space

    def log(self, msg: str) -> None:
        self._log(f"[{self.cfg.name} w{self.worker}] {msg}")

    def study(self, stage: Stage | str) -> optuna.Study:
        return self.studies.study(stage)

    def status(self, stage: Stage | str) -> StageStatus:
        return self.studies.status(stage)

    def is_done(self, name: str) -> bool:
        return self.status(name).done

    def prepare_studies(self, rearm: bool = True) -> None:
        self.studies.prepare(rearm)

    def settle(self) -> None:
        self.studies.settle(self.log)

    @property
    def sparse_model(self) -> nn.Module:
        return self.res.sparse_model

    def _checkpoint_of(self, stage_name: str) -> Path:
        return self.res.checkpoint_of(stage_name)

    def _sampler(self, stage: Stage) -> optuna.samplers.BaseSampler:
        # Each study draws its own numbers: hpo and hpo-relu must not propose in lockstep.
        seed = position_seed(self.cfg.seed, stage.seed)
        if stage.kind == "once":
            return optuna.samplers.RandomSampler(seed=seed)
        section = getattr(self.cfg, stage.section)
        if section.sampler == "lahc":
            key = self.space.canonical_key if stage.searches == "trees" else None
            return LAHCSampler(history_length=self.cfg.activations.history, seed=seed, canonical_key=key,
                               score=trial_score, variant=self.cfg.activations.lahc)
        if section.sampler == "random":
            return PositionSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
        startup = max(3, min(10, section.trials // 3))
        return PositionSeededSampler(
            lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=startup, multivariate=True,
                                                 group=True, constant_liar=True), seed)

    def _pruner(self, stage: Stage) -> optuna.pruners.BasePruner:
        if stage.kind == "once":
            return optuna.pruners.NopPruner()
        section = getattr(self.cfg, stage.section)
        kind = section.pruner
        configured = self.studies.configured_epochs(stage)
        max_epochs = configured if configured != "auto" else self.cfg.final.epochs
        inner_name = kind.split("+")[-1]
        inner: optuna.pruners.BasePruner | None = {
            "none": None,
            "divergence": None,
            "incumbent": IncumbentPruner(),
            "median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
            "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs)),
        }[inner_name]
        if kind.startswith("divergence"):
            return DivergencePruner(inner)
        return inner or optuna.pruners.NopPruner()

    def _start_params(self, stage: Stage) -> dict[str, Any] | None:
        """A search stage's first trial: the network's own activations, or the default protocol."""
        if stage.searches == "trees":
            try:
                return self.space.encode(self.res.own_trees())
            except ValueError:  # the own activation is not in the space: the sampler starts
                return None
        return default_protocol_params(self.cfg.hpo.space, self.cfg.protocol, stage.learn_scale)

    # ----------------------------------------------------------------- the worker loop
    def work(self, poll: float = POLL_SECONDS) -> None:
        """Work on the stages until all are done; waits while other workers hold the rest."""
        work_all([self], poll)

    def step(self) -> tuple[list[str], bool]:
        """Run at most one trial of the most urgent stage with work: (pending stages, progressed)."""
        pending = []
        for stage in self.stages:
            st = self.status(stage)
            if st.done:
                self._announce(st)
                continue
            pending.append(stage.name)
            # Every stage's needs are enabled whenever it is (ablations need only core stages).
            if not all(self.is_done(n) for n in stage.needs):
                continue
            if self.studies.requeue_if_superseded(stage):
                self.log(f"{stage.name}: its inputs changed ({self.studies.inputs(stage)}); running it again")
                st = self.status(stage)
            if stage.kind == "once" and self._run_once(stage, st):
                return pending, True
            if stage.kind == "search" and self._run_search_trial(stage, st):
                return pending, True
        return pending, False

    def rerun(self, name: str) -> None:
        """Queue a "once" stage to run again (e.g. its checkpoint was lost); its earlier trials
        stay in the study, and the new trial's result is the stage's from then on."""
        stage = next((s for s in self.stages if s.name == name and s.kind == "once"), None)
        if stage is None:
            valid = ", ".join(s.name for s in self.stages if s.kind == "once")
            raise PipelineError(f"--rerun {name!r}: not a stage that runs once; valid: {valid}")
        st = self.status(stage)
        if not (st.waiting or st.running):
            self.study(stage).enqueue_trial({})
        self.log(f"{name}: queued to run again")

    def _announce(self, st: StageStatus) -> None:
        """Say once per worker that a finished search found nothing, naming the knob."""
        if st.found_nothing and st.stage.name not in self._announced:
            self._announced.add(st.stage.name)
            self.log(f"WARNING {st.found_nothing}")

    def fail_stale(self) -> None:
        self.studies.fail_stale()

    def check_stuck(self, pending: list[str]) -> None:
        for stage in self.stages:
            if stage.name not in pending or stage.kind != "once":
                continue
            st = self.status(stage)
            if st.failed and not (st.done or st.running or st.waiting):
                study = self.study(stage)
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

    def _run_once(self, stage: Stage, st: StageStatus) -> bool:
        if not st.waiting:
            return False
        study = self.study(stage)
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if not self.storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            trial = optuna.Trial(study, frozen._trial_id)
            other = self.studies.requeued_twice(study, frozen)
            if other is not None:
                # Two workers re-queued the stage after the same failure: train it once.
                trial.set_user_attr(DUPLICATE_ATTR, other.number)
                study.tell(trial, state=TrialState.FAIL)
                continue
            self.log(f"{stage.name}: started (trial {trial.number})")
            self._working()
            start = time.time()
            body = {"dense": self._train_dense, "sparsify": self._sparsify, "finetune": self._finetune}[stage.body]
            with _Heartbeat(self.storage, trial._trial_id):
                try:
                    value = body(stage, trial)
                except BaseException as exc:
                    trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                    study.tell(trial, state=TrialState.FAIL)
                    raise
            study.tell(trial, value)
            if stage.column and self.is_done(self._safs_stage().name):
                self._write_note(plot=stage.column == "SAFS")
            self.log(f"{stage.name}: done in {time.time() - start:.0f}s — val {self._shown(value)}, "
                     f"test {trial.user_attrs.get('test_accuracy', float('nan')):.2f}%")
            return True
        return False

    def _run_search_trial(self, stage: Stage, st: StageStatus) -> bool:
        if not st.waiting and st.spent + st.running >= st.budget:
            return False  # the last trials are running elsewhere
        if self.studies.fidelity(stage)[0] is None and not self._start_waiting(stage):
            return False  # "auto" epochs: the start trial, running elsewhere, measures them first
        study = self.study(stage)
        study.optimize(lambda trial: self._search(stage, trial), n_trials=1, gc_after_trial=False,
                       catch=(UserFitError,))
        self._check_fit_errors(stage)
        return True

    def _check_fit_errors(self, stage: Stage) -> None:
        """A user loop that fails a trial fails that trial (it counts against the budget, as a
        retry would fail again); one that failed ``MAX_FIT_ERRORS`` trials, or the whole budget,
        with none finished stops the stage."""
        st = self.status(stage)
        if st.errored and not st.finished and st.errored >= min(MAX_FIT_ERRORS, st.budget):
            raise PipelineError(f"stage {stage.name!r}: the training loop failed in {st.errored} trials and "
                                f"none finished; the last, {st.last_error}. Fix it and run the same command "
                                "again: the search goes on")

    def _start_waiting(self, stage: Stage) -> bool:
        waiting = self.study(stage).get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return any(t.user_attrs.get(START_ATTR) for t in waiting)

    # ----------------------------------------------------------------- what stages use
    def own_trees(self) -> dict[str, OperatorTree]:
        return self.res.own_trees()

    def _winner(self, stage_name: str) -> FrozenTrial | None:
        return self.status(stage_name).best_trial

    def _trees(self, stage: Stage) -> dict[str, OperatorTree]:
        trees = self.own_trees()
        if stage.trees_from is None:
            return trees
        best = self._winner(stage.trees_from)
        if best is None:
            self.log(f"{stage.trees_from}: no trial completed (all pruned); keeping the network's own activations")
            return trees
        trees.update(self.space.decode(best.params))
        return trees

    def _protocol(self, stage: Stage) -> tuple[HParams, bool]:
        base = self.cfg.protocol.hparams()
        fixed = stage.learn_scale
        if stage.protocol_from is None:
            return base, bool(fixed)
        best = self._winner(stage.protocol_from)
        if best is None:
            self.log(f"{stage.protocol_from}: no trial completed (all pruned); keeping the default protocol")
            return base, True if fixed is None else fixed
        hp, learn = hparams_from_params(best.params, base)
        return hp, learn if fixed is None else fixed

    def _fit(self, model: nn.Module, splits: Any, hp: HParams, epochs: int, label: str,
             trial: optuna.Trial | None, until: Callable[[Sequence[EpochStats]], bool] | None = None
             ) -> FitResult:
        training = self.cfg.training
        user_fit = self.res.code.fit

        def on_epoch(stats: EpochStats) -> None:
            if user_fit is None:
                self.log(f"{label} epoch {stats.epoch + 1}/{epochs} loss {stats.train_loss:.3f} "
                         f"val {stats.val_accuracy:.2f}% ({stats.seconds:.1f}s)")
            else:
                self.log(f"{label} epoch {stats.epoch + 1}/{epochs} {training.metric} {stats.val_accuracy:.4g} "
                         f"val loss {stats.val_loss:.4g} ({stats.seconds:.1f}s)")
        if user_fit is not None:
            return fit_with(user_fit, model, splits, hp, epochs, trial, device=self.cfg.device, seed=self.cfg.seed,
                            maximize=training.direction == "maximize", accuracy=training.is_accuracy,
                            on_epoch=on_epoch, until=until)
        return fit(model, splits, hp, epochs, trial=trial, device=self.cfg.device, seed=self.cfg.seed,
                   progress=False, on_epoch=on_epoch, until=until, on_batch=self._working_on,
                   loader_workers=self.cfg.data.loader_workers)

    def _working(self) -> None:
        """A trial starts here: take back this worker's lent threads, borrow idle workers'."""
        if self.cores is not None:
            self.cores.refresh(force=True)

    def _working_on(self) -> None:
        """Between training steps: follow the lent threads (a clock read but every 0.25 s)."""
        if self.cores is not None:
            self.cores.refresh()

    def _record(self, trial: optuna.Trial, model: nn.Module, extra: Mapping[str, Any] | None = None) -> None:
        formulas = {site: model.get_submodule(site).tree.formula for site in sites(model)}
        trial.set_user_attr("formulas", formulas)
        trial.set_user_attr("sparsity", round(100 * sparsity_report(model).ratio, 3))
        trial.set_user_attr("worker", self.worker)
        for k, v in (extra or {}).items():
            trial.set_user_attr(k, v)

    def _store(self, trial: optuna.Trial, model: nn.Module, filename: str, learn_scale: bool) -> None:
        path = Path(self.res.tmp.name) / "upload" / str(trial.number) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with staging(self.res.artifacts, filename, path.parent):
            save_checkpoint(path, model, self.res.arch, learn_scale=learn_scale)
        artifact_id = optuna.artifacts.upload_artifact(artifact_store=self.res.artifacts, file_path=str(path),
                                                       study_or_trial=trial)
        trial.set_user_attr("checkpoint", artifact_id)

    def _shown(self, value: float) -> str:
        """A validation value as the log shows it: accuracy in percent, a user metric by name."""
        training = self.cfg.training
        return f"{value:.2f}%" if training.is_accuracy else f"{training.metric} {value:.4g}"

    def _test_score(self, model: nn.Module) -> float:
        """The model's test metric: the user's ``[training] evaluate``, else top-1 accuracy."""
        if self.res.code.evaluate is not None:
            model.to(self.cfg.device).eval()
            try:
                with torch.no_grad():
                    return float(self.res.code.evaluate(model, self.splits.test))
            except Exception as exc:  # noqa: BLE001 - the user's function may raise anything
                raise PipelineError(f"[training] evaluate raised {type(exc).__name__}: {exc}") from None
        return evaluate(model, self.splits.test, device=self.cfg.device,
                        loader_workers=self.cfg.data.loader_workers).accuracy

    def _finish_once(self, stage: Stage, trial: optuna.Trial, model: nn.Module, result: FitResult,
                     learn_scale: bool, hp: HParams, epochs: int) -> float:
        test = self._test_score(model)
        layers = sparsity_report(model).layers
        self._record(trial, model, {"test_accuracy": round(test, 4),
                                    "layer_density": {x.name: [x.total, round(100 * (1 - x.ratio), 3)]
                                                      for x in layers},
                                    "val_accuracy": round(result.best_val_accuracy, 4),
                                    "best_epoch": result.best_epoch, "epochs": epochs,
                                    "hparams": dataclasses.asdict(hp), "learn_scale": learn_scale})
        self._store(trial, model.cpu(), f"{stage.name}.pt", learn_scale)
        return result.best_val_accuracy

    # ----------------------------------------------------------------- stage bodies
    def _train_dense(self, stage: Stage, trial: optuna.Trial) -> float:
        torch.manual_seed(self.cfg.seed)  # the initial weights too are a function of the seed
        model = self.res.build()
        hp = self.cfg.protocol.hparams()
        if self.cfg.dense.checkpoint:
            self._load_user_weights(model, self.cfg.dense.checkpoint)
            make_searchable(model)
            val = self._val_score(model)
            result = FitResult(best_val_accuracy=val, best_epoch=0, history=[])
            epochs = 0
        else:
            make_searchable(model)
            epochs = self.cfg.dense.epochs
            result = self._fit(model, self.splits, hp, epochs, stage.name, trial=None)
        return self._finish_once(stage, trial, model, result, False, hp, epochs)

    def _val_score(self, model: nn.Module) -> float:
        """Validation accuracy of a model that is not trained here (loaded or just pruned)."""
        return evaluate(model, self.splits.val, device=self.cfg.device,
                        loader_workers=self.cfg.data.loader_workers).accuracy

    def _load_user_weights(self, model: nn.Module, path: str) -> None:
        from ..checkpoint import load_dense_weights

        try:
            load_dense_weights(model, path, name=self.cfg.model.name)
        except CheckpointError as exc:
            raise PipelineError(str(exc)) from None

    def _sparsify(self, stage: Stage, trial: optuna.Trial) -> float:
        """The dense network at the config's sparsity, stored for every later stage: pruned in one
        shot, or gradually over ``[sparsity] gradual_epochs`` (see :meth:`_prune_gradually`)."""
        hp = self.cfg.protocol.hparams()
        epochs = self.cfg.sparsity.gradual_epochs
        progress: str | None = None
        if self.cfg.sparsity.checkpoint:  # the user pruned it: their masks, exactly
            model = self.res.pruned_model()
            val = self._val_score(model)
        elif epochs:
            model, val, progress = self._prune_gradually(stage, trial, hp, epochs)
        else:
            model = self.res.dense_model()
            self.res.prune(model, self.cfg.sparsity.ratio)
            val = self._val_score(model)
        value = self._finish_once(stage, trial, model, FitResult(val, max(0, epochs - 1), []), False, hp, epochs)
        self.res.drop_progress(progress)  # only now: the stage's checkpoint replaces it
        return value

    def _prune_gradually(self, stage: Stage, trial: optuna.Trial, hp: HParams, epochs: int
                         ) -> tuple[nn.Module, float, str | None]:
        """Gradual magnitude pruning (Zhu & Gupta 2017): before epoch ``e`` the sparsity rises to
        ``cubic_sparsity(e + 1, epochs)``, then one epoch of the default protocol; the last epoch
        ends at the config's ratio. After each epoch the model is stored with the epoch count, so
        a worker killed on the way is resumed from its last finished epoch. Returns the model, its
        validation accuracy after the last epoch and the artifact id of the last progress file."""
        model, done, schedule, previous = self._gradual_start(stage)
        for epoch in range(done, epochs):
            ratio = cubic_sparsity(epoch + 1, epochs, final=self.cfg.sparsity.ratio)
            self.res.prune(model, ratio)
            stats = self._gradual_epoch(stage, model, hp, epoch, epochs)
            schedule.append([round(100 * sparsity_report(model).ratio, 3), round(stats.val_accuracy, 4)])
            checkpoint = self.res.save_progress(model, epoch + 1)
            trial.set_user_attr(PROGRESS_ATTR, {"epoch": epoch + 1, "checkpoint": checkpoint,
                                                "schedule": schedule})
            self.res.drop_progress(previous)  # only now: the attr names the newer file
            previous = checkpoint
        trial.set_user_attr("schedule", schedule)
        return model, schedule[-1][1], previous

    def _gradual_start(self, stage: Stage) -> tuple[nn.Module, int, list[list[float]], str | None]:
        """Where gradual pruning starts: the last epoch stored by an earlier try of the stage
        (its model, epochs done, per-epoch record, progress file), else the dense network."""
        found = self.studies.progress(stage)
        if found is not None:
            number, progress = found
            try:
                model, done = self.res.load_progress(progress["checkpoint"])
            except CheckpointError as exc:
                self.log(f"{stage.name}: the progress stored by trial {number} cannot be used ({exc}); "
                         "starting gradual pruning over")
            else:
                epochs = self.cfg.sparsity.gradual_epochs
                self.log(f"{stage.name}: resuming gradual pruning at epoch {done + 1}/{epochs} "
                         f"(epochs 1-{done} done by trial {number})")
                return model, done, list(progress["schedule"])[:done], progress["checkpoint"]
        return self.res.dense_model(), 0, [], None

    def _gradual_epoch(self, stage: Stage, model: nn.Module, hp: HParams, epoch: int, epochs: int
                       ) -> EpochStats:
        """One epoch of gradual pruning's fine-tuning: a fresh optimizer, as the masks just grew;
        seeded by the epoch, so a resumed run trains exactly as one that never stopped."""
        sparsity = sparsity_report(model).ratio

        def on_epoch(stats: EpochStats) -> None:
            self.log(f"{stage.name} epoch {epoch + 1}/{epochs} sparsity {100 * sparsity:.2f}% loss "
                     f"{stats.train_loss:.3f} val {stats.val_accuracy:.2f}% ({stats.seconds:.1f}s)")
        try:
            result = fit(model, self.splits, hp, 1, device=self.cfg.device,
                         seed=position_seed(self.cfg.seed, epoch), progress=False, on_epoch=on_epoch,
                         on_batch=self._working_on)
        except DivergedError as exc:
            raise PipelineError(f"{stage.name}: fine-tuning diverged in epoch {epoch + 1} ({exc})") from exc
        return result.history[-1]

    def _finetune(self, stage: Stage, trial: optuna.Trial) -> float:
        trial.set_user_attr(INPUTS_ATTR, self.studies.inputs(stage))
        hp, learn = self._protocol(stage)
        model = self.res.fresh(self._trees(stage), learn)
        epochs = self.cfg.final.epochs
        try:
            result = self._fit(model, self.splits, hp, epochs, stage.name, trial=None)
        except DivergedError as exc:
            raise PipelineError(f"{stage.name}: fine-tuning diverged ({exc})") from exc
        return self._finish_once(stage, trial, model, result, learn, hp, epochs)

    def _search(self, stage: Stage, trial: optuna.Trial) -> float:
        """One search trial: draw what the stage searches, fine-tune briefly, score on val."""
        self._working()
        if stage.searches == "trees":
            model = self.res.fresh({})  # the sparse model already holds the network's own activations
            trees = self.space.suggest(trial, sites(model))
            self.space.apply(model, trees)
            hp = self.cfg.protocol.hparams()
        else:
            hp, learn = suggest_hparams(trial, self.cfg.hpo.space, self.cfg.protocol.hparams(),
                                        learn_scale=stage.learn_scale)
            model = self.res.fresh(self._trees(stage), learn_scale=learn)
        trial.set_user_attr(INPUTS_ATTR, self.studies.inputs(stage))
        self._record(trial, model)
        section = getattr(self.cfg, stage.section)
        epochs, until = self._trial_epochs(stage, trial)
        label = f"{stage.name} #{trial.number}"
        try:
            result = self._fit(model, self.res.search_splits(section.fraction), hp, epochs, label, trial, until)
        except DivergedError as exc:
            trial.set_user_attr(REASON_ATTR, f"diverged: {exc}")
            self.log(f"{label} pruned: diverged ({exc})")
            raise optuna.TrialPruned(str(exc)) from exc
        except UserFitError as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            self.log(f"{label} failed: {exc}")
            raise
        except optuna.TrialPruned:
            reason = self.storage.get_trial(trial._trial_id).user_attrs.get(REASON_ATTR, "by the pruner")
            self.log(f"{label} pruned: {reason}")
            raise
        if until is not None:
            self._record_auto_epochs(stage, trial, result)
        best = self.status(stage).best_value
        better = max if self.cfg.training.direction == "maximize" else min
        shown = better(result.best_val_accuracy, best) if best is not None else result.best_val_accuracy
        self.log(f"{label} done: val {self._shown(result.best_val_accuracy)} (best so far {self._shown(shown)})")
        return result.best_val_accuracy

    def _trial_epochs(self, stage: Stage, trial: optuna.Trial
                      ) -> tuple[int, Callable[[Sequence[EpochStats]], bool] | None]:
        """Epochs of a search trial; with ``"auto"``, the start trial measures them as it trains."""
        epochs, _ = self.studies.fidelity(stage)
        if epochs is not None:
            return epochs, None
        ceiling = self.cfg.final.epochs
        if not trial.user_attrs.get(START_ATTR):
            # Claimed beside a running start trial (a rare race): wait for its measurement.
            self.log(f"{stage.name} #{trial.number}: waiting for the start trial to measure the epochs")
            while epochs is None:
                time.sleep(POLL_SECONDS)
                epochs, _ = self.studies.fidelity(stage)
            return epochs, None
        band = self._chance_band(stage)

        def until(history: Sequence[EpochStats]) -> bool:
            known, _ = auto_epochs([h.val_accuracy for h in history], band, ceiling)
            return known is not None and len(history) >= known
        return ceiling, until

    def _chance_band(self, stage: Stage) -> float:
        """Top of the chance band of the validation split that the stage's trials are scored on."""
        val = self.res.search_splits(getattr(self.cfg, stage.section).fraction).val
        return chance_band(majority_accuracy(val), len(val))

    def _record_auto_epochs(self, stage: Stage, trial: optuna.Trial, result: FitResult) -> None:
        epochs, reason = auto_epochs([h.val_accuracy for h in result.history], self._chance_band(stage),
                                     self.cfg.final.epochs)
        if epochs is None:  # cannot happen: fit ran to the ceiling or until epochs were known
            epochs, reason = len(result.history), "auto: the start trial's epochs"
        self.studies.record_fidelity(stage, epochs, reason)
        self.log(f"{stage.name}: {epochs} epochs per candidate ({reason})")

    # ----------------------------------------------------------------- results
    def _safs_stage(self) -> Stage:
        return next(s for s in self.stages if s.column == "SAFS")

    def column_trials(self) -> dict[str, FrozenTrial | None]:
        """The finished trial behind each report column, by column name."""
        out: dict[str, FrozenTrial | None] = {}
        for s in self.stages:
            if s.column:
                out[s.column] = self.status(s).best_trial
        return out

    def row(self) -> ResultRow:
        """This study's test accuracies, one per report column."""
        from ..report import COLUMNS

        trials = self.column_trials()
        values = tuple((trials.get(c).user_attrs.get("test_accuracy") if trials.get(c) else None)
                       for c in COLUMNS)
        return ResultRow(f"{self.cfg.name} (measured)", values)

    def rows(self) -> list[ResultRow]:
        """This study's row of test accuracies, then the paper's row for comparison."""
        paper = paper_row(self.cfg.model.name, self.cfg.data.name)
        return [self.row()] + ([paper] if paper else [])

    def table(self) -> str:
        return markdown_table(self.rows())

    def view_lines(self) -> list[str]:
        """The live view of this study: one line per stage (see :mod:`safs_optuna.progress`)."""
        from ..progress import render

        rows = []
        for stage in self.stages:
            st = self.status(stage)
            end = st.ended if st.done else time.time()
            rows.append((stage.name, st, end - st.started if st.started is not None else None))
        return render(rows, header=f"{self.cfg.name}:")

    def density_table(self) -> str:
        """The sparse network's weights and density per layer, from the trial of the stage that
        sparsified it (the baseline's in a study stored before that stage existed: the masks
        are the same)."""
        sparsify = next(s for s in self.stages if s.body == "sparsify")
        best = self.status(sparsify).best_trial or self.column_trials().get("magnitude pruning")
        layers = best.user_attrs.get("layer_density") if best is not None else None
        if not layers:
            return ""
        sp = self.cfg.sparsity
        floors = "".join(f", {glob} keeps ≥ {100 * d:g} %" for glob, d in sp.min_density.items())
        gradual = f", gradual over {sp.gradual_epochs} epochs" if sp.gradual_epochs else ""
        head = f"Density per layer after sparsity {sp.ratio:g} ({sp.scope}{floors}{gradual}):"
        if sp.checkpoint:  # the user's masks: their own sparsity, measured
            head = (f"Density per layer of the pruned checkpoint {Path(sp.checkpoint).name} "
                    f"(sparsity {best.user_attrs.get('sparsity', float('nan')):.2f} %, measured):")
        lines = [head, "",
                 "| layer | weights | kept % |", "|---|---|---|"]
        lines += [f"| `{name}` | {total} | {kept:.2f} |" for name, (total, kept) in layers.items()]
        return "\n".join(lines)

    def warnings(self) -> list[str]:
        """One line per finished search stage that found nothing."""
        return [st.found_nothing for st in (self.status(s) for s in self.stages) if st.found_nothing]

    def _write_note(self, plot: bool = False) -> None:
        """The SAFS stage's dashboard note: the results table, warnings and learned activations.

        Rewritten whenever a column of the table finishes after the final stage (the ablations
        usually do), so the note ends up with every column. Only the worker that finished the
        SAFS stage (``plot``) uploads the activation plot, so two workers never upload it twice;
        a note due before that plot exists is left to that worker, which writes it next."""
        import optuna_dashboard

        study = self.study(self._safs_stage())
        if not plot and not optuna.artifacts.get_all_artifact_meta(study):
            return
        model, _ = self.res.load(self._safs_stage().name)
        acts = {site: model.get_submodule(site) for site in sites(model)}
        existing = optuna.artifacts.get_all_artifact_meta(study)
        table = self.table() + "\n\n" + self.density_table()
        note, svg = dashboard_note(self.cfg, table, self.warnings(), acts,
                                   existing[0].artifact_id if existing else None, study._study_id)
        if svg is not None:
            path = Path(self.res.tmp.name) / "activations.svg"
            with staging(self.res.artifacts, path.name, path.parent):
                path.write_text(svg)
            artifact_id = optuna.artifacts.upload_artifact(artifact_store=self.res.artifacts, file_path=str(path),
                                                           study_or_trial=study, mimetype="image/svg+xml")
            note, _ = dashboard_note(self.cfg, table, self.warnings(), acts, artifact_id, study._study_id)
        optuna_dashboard.save_note(study, note)


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
            pipe.study(stage)
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
                pipe.fail_stale()
        if waited_on != ",".join(pending):
            waited_on = ",".join(pending)
            pipelines[0].log(f"waiting for other workers on: {waited_on} (a trial whose worker died "
                             f"is retried after {pipelines[0].studies.grace_period}s without heartbeat)")
        time.sleep(poll)
