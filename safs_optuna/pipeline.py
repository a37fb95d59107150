"""The SAFS pipeline as Optuna studies in one storage, run by any number of workers.

Stages, each an Optuna study named ``<name>/<stage>`` in the config's storage:

==============  ======  ============================================================
stage           kind    what it does
==============  ======  ============================================================
dense           once    train the dense network (or load the user's checkpoint)
baseline        once    magnitude-prune, fine-tune with ReLU and the default protocol
activations     search  stage 1: one operator tree per site (LAHC), α = β = 1
hpo             search  stage 2: the fine-tuning protocol and learned α/β, stage-1 trees
final           once    the winner of both stages, full fine-tune, test accuracy (SAFS)
hpo-relu        search  ablation: stage 2 alone, all-ReLU with learned α/β
stage1          once    ablation: stage-1 winner with the default protocol
stage2          once    ablation: hpo-relu winner, full fine-tune
==============  ======  ============================================================

"once" stages hold one trial, queued (WAITING) by whoever creates the study; a worker claims it
atomically (WAITING -> RUNNING), so it runs once however many workers start together. "search"
stages run trials until the configured number has finished. Every trial records heartbeats; a
dead worker's trial is failed and re-queued by the storage (see :mod:`safs_optuna.storage`).
Checkpoints go to the artifact store and are linked from their trials. Nothing is kept only in
a worker's memory, so a killed run resumes from the storage.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from . import data as data_mod
from .activation import OperatorTree
from .checkpoint import load_checkpoint, save_checkpoint, set_trees
from .config import HPOSpace, StudyConfig, to_dict
from .models import build_model, make_searchable, sites
from .pruners import DivergencePruner
from .report import ResultRow, activation_curves, activation_svg, markdown_table, paper_row
from .samplers import LAHCSampler
from .samplers.seeded import PositionSeededSampler, position_seed
from .space import ActivationSpace
from .sparsity import magnitude_prune, sparsity_report
from .storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, make_artifact_store, make_storage, redact
from .training import Diverged, FitResult, HParams, evaluate, fit

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
POLL_SECONDS = 2.0


class PipelineError(RuntimeError):
    """A stage cannot go on; the message says which and why."""


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: a study, its kind and the stages it needs first."""

    name: str
    kind: str  # "once" or "search"
    needs: tuple[str, ...] = ()
    ablation: bool = False


# Order is priority: a free worker takes the first stage with work it can claim, so the
# critical path (dense -> activations -> hpo -> final) goes first and ablations fill waits.
STAGES: tuple[Stage, ...] = (
    Stage("dense", "once"),
    Stage("baseline", "once", ("dense",)),
    Stage("activations", "search", ("dense",)),
    Stage("hpo", "search", ("activations",)),
    Stage("final", "once", ("hpo",)),
    Stage("hpo-relu", "search", ("dense",), ablation=True),
    Stage("stage1", "once", ("activations",), ablation=True),
    Stage("stage2", "once", ("hpo-relu",), ablation=True),
)
COLUMN_STAGES = ("dense", "baseline", "stage1", "stage2", "final")
# What may change between runs of one study without invalidating what is stored.
RUNTIME_KEYS = ("storage", "artifacts", "device", "threads", "path")


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

    @property
    def done(self) -> bool:
        return self.exists and self.finished >= self.budget and (
            self.stage.kind == "search" or self.best_trial is not None
        )


class _Heartbeat:
    """Record heartbeats for a claimed trial, as ``study.optimize`` does for its own trials."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        interval = self._storage.get_heartbeat_interval() or 60
        while True:
            self._storage.record_heartbeat(self._trial_id)
            if self._stop.wait(interval):
                return

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=ExperimentalWarning)


def hparams_from_params(params: Mapping[str, Any], base: HParams) -> tuple[HParams, bool]:
    """The fine-tuning protocol and the learn-scale flag of a stage-2 trial's params."""
    hp = dataclasses.replace(
        base,
        optimizer=params.get("optimizer", base.optimizer),
        lr=params.get("lr", base.lr),
        momentum=params.get("momentum", base.momentum),
        weight_decay=params.get("weight_decay", base.weight_decay),
        schedule=params.get("schedule", base.schedule),
        # Nesterov is an SGD option: keep the protocol's only where the trial is SGD too.
        nesterov=base.nesterov and params.get("optimizer", base.optimizer) == "sgd",
    )
    return hp, bool(params.get("learn_scale", False))


def suggest_hparams(trial: optuna.Trial, space: HPOSpace, base: HParams,
                    learn_scale: bool | None = None) -> tuple[HParams, bool]:
    """Stage 2's search space; momentum is a parameter of SGD only (readable in the dashboard)."""
    params: dict[str, Any] = {"optimizer": trial.suggest_categorical("optimizer", list(space.optimizers))}
    params["lr"] = trial.suggest_float("lr", *space.lr, log=True)
    if params["optimizer"] == "sgd":
        params["momentum"] = trial.suggest_float("momentum", *space.momentum)
    params["weight_decay"] = trial.suggest_float("weight_decay", *space.weight_decay, log=True)
    params["schedule"] = trial.suggest_categorical("schedule", list(space.schedules))
    if learn_scale is None:
        params["learn_scale"] = trial.suggest_categorical("learn_scale", list(space.learn_scale))
    else:
        params["learn_scale"] = learn_scale
    return hparams_from_params(params, base)


class Pipeline:
    """One worker's view of a SAFS study: its storage, data, sparse model and stages.

    Example:

        .. code::

            cfg = safs_optuna.config.load_config("studies/quickstart.toml")
            Pipeline(cfg).work()          # joins the study; returns when every stage is done
            print(Pipeline(cfg).table())
    """

    def __init__(self, cfg: StudyConfig, worker: int = 0, log: Callable[[str], None] | None = None,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD) -> None:
        _quiet_optuna()
        self.cfg = cfg
        self.worker = worker
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.grace_period = grace_period
        self.storage = make_storage(cfg.storage, heartbeat_interval=heartbeat_interval,
                                    grace_period=grace_period)
        self.artifacts = make_artifact_store(cfg.artifacts)
        self.stages = tuple(s for s in STAGES if cfg.ablations or not s.ablation)
        self._studies: dict[str, optuna.Study] = {}
        self._splits: data_mod.Splits | None = None
        self._subsets: dict[float, data_mod.Splits] = {}
        self._sparse: nn.Module | None = None
        self._space: ActivationSpace | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="safs-optuna-")

    # ----------------------------------------------------------------- studies
    def log(self, msg: str) -> None:
        self._log(f"[{self.cfg.name} w{self.worker}] {msg}")

    def study_name(self, stage: str) -> str:
        return f"{self.cfg.name}/{stage}"

    def budget(self, stage: Stage) -> int:
        if stage.kind == "once":
            return 1
        return self.cfg.activations.trials if stage.name == "activations" else self.cfg.hpo.trials

    @property
    def space(self) -> ActivationSpace:
        if self._space is None:
            a = self.cfg.activations
            base = ActivationSpace.preset(a.preset)
            if a.unary or a.binary:
                base = ActivationSpace(a.unary or base.unary, a.binary or base.binary, name="custom")
            self._space = base
        return self._space

    def _sampler(self, stage: Stage) -> optuna.samplers.BaseSampler:
        # Each study draws its own numbers: hpo and hpo-relu must not propose in lockstep.
        seed = position_seed(self.cfg.seed, STAGES.index(stage))
        if stage.kind == "once":
            return optuna.samplers.RandomSampler(seed=seed)
        if stage.name == "activations":
            kind, n = self.cfg.activations.sampler, self.cfg.activations.trials
        else:
            kind, n = self.cfg.hpo.sampler, self.cfg.hpo.trials
        if kind == "lahc":
            key = self.space.canonical_key if stage.name == "activations" else None
            return LAHCSampler(history_length=self.cfg.activations.history, seed=seed, canonical_key=key)
        if kind == "random":
            return PositionSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
        startup = max(3, min(10, n // 3))
        return PositionSeededSampler(
            lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=startup, multivariate=True,
                                                 group=True, constant_liar=True), seed)

    def _pruner(self, stage: Stage) -> optuna.pruners.BasePruner:
        if stage.kind == "once":
            return optuna.pruners.NopPruner()
        kind = self.cfg.activations.pruner if stage.name == "activations" else self.cfg.hpo.pruner
        epochs = self.cfg.activations.epochs if stage.name == "activations" else self.cfg.hpo.epochs
        inner_name = kind.split("+")[-1]
        inner: optuna.pruners.BasePruner | None = {
            "none": None,
            "divergence": None,
            "median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
            "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs)),
        }[inner_name]
        if kind.startswith("divergence"):
            return DivergencePruner(inner)
        return inner or optuna.pruners.NopPruner()

    def _config_fingerprint(self) -> dict[str, Any]:
        d = to_dict(self.cfg)
        for key in RUNTIME_KEYS:
            d.pop(key, None)
        # Budgets may grow on resume ("run 10 more trials"); everything else defines the study.
        for section in ("activations", "hpo"):
            d.get(section, {}).pop("trials", None)
        return json.loads(json.dumps(d, default=str))

    def study(self, stage: Stage) -> optuna.Study:
        """The stage's study, created (with its queued trial for "once" stages) if missing."""
        if stage.name in self._studies:
            return self._studies[stage.name]
        name = self.study_name(stage.name)
        kwargs = dict(storage=self.storage, study_name=name, sampler=self._sampler(stage),
                      pruner=self._pruner(stage))
        try:
            study = optuna.create_study(direction="maximize", **kwargs)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(**kwargs)
            stored = study.user_attrs.get("config")
            if stored is not None and stored != self._config_fingerprint():
                raise PipelineError(self._config_diff(name, stored))
        else:
            # Only the creator queues the one trial: creating a study is atomic in any RDB,
            # so a "once" stage is queued exactly once however many workers start together.
            study.set_user_attr("config", self._config_fingerprint())
            study.set_user_attr("stage", stage.name)
            study.set_metric_names(["validation accuracy %"])  # named in the dashboard's plots
            if stage.kind == "once":
                study.enqueue_trial({})
            elif stage.name in ("hpo", "hpo-relu"):
                self._enqueue_default_protocol(study, relu=stage.name == "hpo-relu")
        self._studies[stage.name] = study
        return study

    def _enqueue_default_protocol(self, study: optuna.Study, relu: bool) -> None:
        """Start stage 2 from the default protocol, as stage 1 starts from all-ReLU: the search
        then only reports a protocol that beat the baseline's at the search fidelity."""
        space, p = self.cfg.hpo.space, self.cfg.protocol
        if p.optimizer not in space.optimizers or p.schedule not in space.schedules:
            return  # the default protocol is outside the configured space; nothing to seed
        clip = lambda v, lo_hi: min(max(v, lo_hi[0]), lo_hi[1])  # noqa: E731
        params: dict[str, Any] = {"optimizer": p.optimizer, "lr": clip(p.lr, space.lr),
                                  "weight_decay": clip(p.weight_decay, space.weight_decay),
                                  "schedule": p.schedule}
        if p.optimizer == "sgd":
            params["momentum"] = clip(p.momentum, space.momentum)
        if not relu and False in space.learn_scale:
            params["learn_scale"] = False
        study.enqueue_trial(params)

    def _config_diff(self, name: str, stored: Mapping[str, Any]) -> str:
        now = self._config_fingerprint()
        diffs = []
        for section in sorted(set(stored) | set(now)):
            a, b = stored.get(section), now.get(section)
            if isinstance(a, dict) and isinstance(b, dict):
                diffs += [f"{section}.{k}: stored {a.get(k)!r}, config {b.get(k)!r}"
                          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            elif a != b:
                diffs.append(f"{section}: stored {a!r}, config {b!r}")
        return (f"study {name!r} in {redact(self.cfg.storage)} was made with a different config "
                f"({'; '.join(diffs)}). Use another name, or delete the database to start over.")

    def prepare_studies(self, rearm: bool = True) -> None:
        """Create every stage's study; with ``rearm``, re-queue "once" stages whose only trials
        failed (an earlier run crashed or was stopped), so that this run retries them."""
        for stage in self.stages:
            study = self.study(stage)
            if rearm and stage.kind == "once":
                states = [t.state for t in study.get_trials(deepcopy=False)]
                if states and all(s == TrialState.FAIL for s in states):
                    study.enqueue_trial({})

    def settle(self) -> None:
        """Wait until trials left RUNNING by an earlier run are either alive (their heartbeat
        goes on) or failed and re-queued — so a resumed run re-evaluates a killed trial first,
        as the run that never stopped did, instead of drawing a new one beside it."""
        running = {t._trial_id for study in self._studies.values()
                   for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        if not running:
            return
        self.log(f"{len(running)} trial(s) were running before this run; waiting up to "
                 f"{self.grace_period}s to see whether their workers are still alive")
        deadline = time.time() + self.grace_period + 2
        while time.time() < deadline:
            self._fail_stale()
            still = {t._trial_id for study in self._studies.values()
                     for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            if not running & still:
                return
            time.sleep(1.0)

    # ----------------------------------------------------------------- status
    def status(self, stage: Stage | str) -> StageStatus:
        stage = _stage(stage)
        try:
            study = self._studies.get(stage.name) or optuna.load_study(
                study_name=self.study_name(stage.name), storage=self.storage)
        except KeyError:
            return StageStatus(stage, False, 0, 0, 0, 0, self.budget(stage), None, None)
        trials = study.get_trials(deepcopy=False)
        count = lambda *states: sum(t.state in states for t in trials)  # noqa: E731
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: t.value) if complete else None
        return StageStatus(stage, True, count(*FINISHED), count(TrialState.RUNNING),
                           count(TrialState.WAITING), count(TrialState.FAIL), self.budget(stage),
                           best.value if best else None, best)

    def is_done(self, name: str) -> bool:
        return self.status(name).done

    # ----------------------------------------------------------------- the worker loop
    def work(self, poll: float = POLL_SECONDS) -> None:
        """Work on the stages until all are done; waits while other workers hold the rest."""
        for stage in self.stages:
            self.study(stage)
        waited_on: str | None = None
        while True:
            pending = []
            progressed = False
            for stage in self.stages:
                st = self.status(stage)
                if st.done:
                    continue
                pending.append(stage.name)
                # Every stage's needs are enabled whenever it is (ablations need only core stages).
                if not all(self.is_done(n) for n in stage.needs):
                    continue
                if stage.kind == "once" and self._run_once(stage, st):
                    progressed = True
                    break
                if stage.kind == "search" and self._run_search_trial(stage, st):
                    progressed = True
                    break
            if not pending:
                self.log("all stages done")
                return
            if not progressed:
                self._check_stuck(pending)
                if waited_on != ",".join(pending):
                    waited_on = ",".join(pending)
                    self.log(f"waiting for other workers on: {waited_on} (a trial whose worker died "
                             f"is retried after {self.grace_period}s without heartbeat)")
                self._fail_stale()
                time.sleep(poll)

    def _fail_stale(self) -> None:
        for study in self._studies.values():
            optuna.storages.fail_stale_trials(study)

    def _check_stuck(self, pending: list[str]) -> None:
        for stage in self.stages:
            if stage.name not in pending or stage.kind != "once":
                continue
            st = self.status(stage)
            if st.failed and not (st.running or st.waiting):
                failed = [t for t in self.study(stage).get_trials(deepcopy=False) if t.state == TrialState.FAIL]
                why = failed[-1].user_attrs.get("error", "see the worker's log") if failed else ""
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
            self.log(f"{stage.name}: started (trial {trial.number})")
            start = time.time()
            with _Heartbeat(self.storage, trial._trial_id):
                try:
                    value = getattr(self, "_once_" + stage.name.replace("-", "_"))(trial)
                except BaseException as exc:
                    trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                    study.tell(trial, state=TrialState.FAIL)
                    raise
            study.tell(trial, value)
            if stage.name in COLUMN_STAGES and self.is_done("final"):
                self._write_note()
            self.log(f"{stage.name}: done in {time.time() - start:.0f}s — val {value:.2f}%, "
                     f"test {trial.user_attrs.get('test_accuracy', float('nan')):.2f}%")
            return True
        return False

    def _run_search_trial(self, stage: Stage, st: StageStatus) -> bool:
        if not st.waiting and st.finished + st.running >= st.budget:
            return False  # the last trials are running elsewhere
        study = self.study(stage)
        objective = {"activations": self._objective_activations,
                     "hpo": self._objective_hpo,
                     "hpo-relu": self._objective_hpo_relu}[stage.name]
        study.optimize(objective, n_trials=1, gc_after_trial=False)
        return True

    # ----------------------------------------------------------------- data and models
    @property
    def splits(self) -> data_mod.Splits:
        if self._splits is None:
            self._splits = load_splits(self.cfg)
        return self._splits

    def _search_splits(self, fraction: float) -> data_mod.Splits:
        if fraction >= 1.0:
            return self.splits
        if fraction not in self._subsets:  # the same subset for every trial: made once per worker
            self._subsets[fraction] = self.splits.search_subset(fraction, seed=self.cfg.seed)
        return self._subsets[fraction]

    @property
    def arch(self) -> dict[str, Any]:
        s = self.splits
        return {"name": self.cfg.model.name, "num_classes": s.num_classes,
                "in_channels": s.in_channels, "image_size": s.image_size}

    def _checkpoint_of(self, stage_name: str) -> Path:
        """Download (once per worker) the checkpoint that a finished "once" stage stored."""
        dest = Path(self._tmp.name) / f"{stage_name}.pt"
        if not dest.exists():
            st = self.status(stage_name)
            if st.best_trial is None:
                raise PipelineError(f"stage {stage_name!r} has no finished trial yet")
            artifact_id = st.best_trial.user_attrs["checkpoint"]
            optuna.artifacts.download_artifact(artifact_store=self.artifacts, artifact_id=artifact_id,
                                               file_path=str(dest))
        return dest

    @property
    def sparse_model(self) -> nn.Module:
        """The dense weights magnitude-pruned: the start of every fine-tune (a fresh copy each)."""
        if self._sparse is None:
            model, _ = load_checkpoint(self._checkpoint_of("dense"))
            sp = self.cfg.sparsity
            magnitude_prune(model, sp.ratio, scope=sp.scope, skip=sp.skip)
            self._sparse = model
        return self._sparse

    def _fresh(self, trees: Mapping[str, OperatorTree] | None = None, learn_scale: bool = False) -> nn.Module:
        model = copy.deepcopy(self.sparse_model)
        set_trees(model, trees or {}, learn_scale=learn_scale)
        return model

    def _relu_trees(self) -> dict[str, OperatorTree]:
        return {site: OperatorTree.unary("relu") for site in sites(self.sparse_model)}

    def _best_params(self, stage_name: str) -> dict[str, Any] | None:
        st = self.status(stage_name)
        return dict(st.best_trial.params) if st.best_trial else None

    def _stage1_trees(self) -> dict[str, OperatorTree]:
        params = self._best_params("activations")
        if params is None:
            self.log("activations: no trial completed (all pruned); keeping ReLU")
            return self._relu_trees()
        trees = self._relu_trees()
        trees.update(self.space.decode(params))
        return trees

    def _progress(self, stage: str, trial: optuna.Trial | None, epochs: int) -> Callable[[Any], None]:
        label = f"{stage} #{trial.number}" if trial is not None else stage

        def on_epoch(stats: Any) -> None:
            self.log(f"{label} epoch {stats.epoch + 1}/{epochs} loss {stats.train_loss:.3f} "
                     f"val {stats.val_accuracy:.2f}% ({stats.seconds:.1f}s)")
        return on_epoch

    def _fit(self, model: nn.Module, splits: data_mod.Splits, hp: HParams, epochs: int,
             stage: str, trial: optuna.Trial | None) -> Any:
        return fit(model, splits, hp, epochs, trial=trial, device=self.cfg.device, seed=self.cfg.seed,
                   progress=False, on_epoch=self._progress(stage, trial, epochs))

    def _record(self, trial: optuna.Trial, model: nn.Module, extra: Mapping[str, Any] | None = None) -> None:
        formulas = {site: model.get_submodule(site).tree.formula for site in sites(model)}
        trial.set_user_attr("formulas", formulas)
        trial.set_user_attr("sparsity", round(100 * sparsity_report(model).ratio, 3))
        trial.set_user_attr("worker", self.worker)
        for k, v in (extra or {}).items():
            trial.set_user_attr(k, v)

    def _store(self, trial: optuna.Trial, model: nn.Module, filename: str, learn_scale: bool) -> None:
        path = Path(self._tmp.name) / "upload" / str(trial.number) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, model, self.arch, learn_scale=learn_scale)
        artifact_id = optuna.artifacts.upload_artifact(artifact_store=self.artifacts, file_path=str(path),
                                                       study_or_trial=trial)
        trial.set_user_attr("checkpoint", artifact_id)

    def _finish_once(self, trial: optuna.Trial, model: nn.Module, result: Any, filename: str,
                     learn_scale: bool, hp: HParams, epochs: int) -> float:
        test = evaluate(model, self.splits.test, device=self.cfg.device)
        self._record(trial, model, {"test_accuracy": round(test.accuracy, 4),
                                    "val_accuracy": round(result.best_val_accuracy, 4),
                                    "best_epoch": result.best_epoch, "epochs": epochs,
                                    "hparams": dataclasses.asdict(hp), "learn_scale": learn_scale})
        self._store(trial, model.cpu(), filename, learn_scale)
        return result.best_val_accuracy

    # ----------------------------------------------------------------- "once" stages
    def _once_dense(self, trial: optuna.Trial) -> float:
        torch.manual_seed(self.cfg.seed)  # the initial weights too are a function of the seed
        model = build_model(**self.arch)
        hp = self.cfg.protocol.hparams()
        if self.cfg.dense.checkpoint:
            self._load_user_weights(model, self.cfg.dense.checkpoint)
            make_searchable(model)
            val = evaluate(model, self.splits.val, device=self.cfg.device).accuracy
            result = FitResult(best_val_accuracy=val, best_epoch=0, history=[])
            epochs = 0
        else:
            make_searchable(model)
            epochs = self.cfg.dense.epochs
            result = self._fit(model, self.splits, hp, epochs, "dense", trial=None)
        return self._finish_once(trial, model, result, "dense.pt", False, hp, epochs)

    def _load_user_weights(self, model: nn.Module, path: str) -> None:
        """The user's dense weights: a state_dict, or a dict holding one under "state_dict"."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors come in many types
            raise PipelineError(f"[dense] checkpoint {path}: cannot be read as a torch state_dict ({exc})") from exc
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise PipelineError(f"[dense] checkpoint {path} does not fit model {self.cfg.model.name!r} "
                                f"({self.arch}): {exc}") from exc

    def _finetune_once(self, trial: optuna.Trial, stage: str, trees: Mapping[str, OperatorTree],
                       hp: HParams, learn_scale: bool, filename: str) -> float:
        model = self._fresh(trees, learn_scale)
        epochs = self.cfg.final.epochs
        try:
            result = self._fit(model, self.splits, hp, epochs, stage, trial=None)
        except Diverged as exc:
            raise PipelineError(f"{stage}: fine-tuning diverged ({exc})") from exc
        return self._finish_once(trial, model, result, filename, learn_scale, hp, epochs)

    def _once_baseline(self, trial: optuna.Trial) -> float:
        return self._finetune_once(trial, "baseline", self._relu_trees(), self.cfg.protocol.hparams(),
                                   False, "baseline.pt")

    def _once_stage1(self, trial: optuna.Trial) -> float:
        return self._finetune_once(trial, "stage1", self._stage1_trees(), self.cfg.protocol.hparams(),
                                   False, "stage1.pt")

    def _winner_hparams(self, stage_name: str) -> tuple[HParams, bool]:
        params = self._best_params(stage_name)
        base = self.cfg.protocol.hparams()
        if params is None:
            self.log(f"{stage_name}: no trial completed (all pruned); keeping the default protocol")
            return base, stage_name == "hpo-relu"
        hp, learn = hparams_from_params(params, base)
        return hp, (True if stage_name == "hpo-relu" else learn)

    def _once_stage2(self, trial: optuna.Trial) -> float:
        hp, learn = self._winner_hparams("hpo-relu")
        return self._finetune_once(trial, "stage2", self._relu_trees(), hp, learn, "stage2.pt")

    def _once_final(self, trial: optuna.Trial) -> float:
        hp, learn = self._winner_hparams("hpo")
        return self._finetune_once(trial, "final", self._stage1_trees(), hp, learn, "final.pt")

    # ----------------------------------------------------------------- search objectives
    def _objective_activations(self, trial: optuna.Trial) -> float:
        model = self._fresh()
        trees = self.space.suggest(trial, sites(model))
        set_trees(model, trees)
        self._record(trial, model)
        a = self.cfg.activations
        return self._search_fit(trial, model, "activations", self.cfg.protocol.hparams(), a.epochs, a.fraction)

    def _objective_hpo(self, trial: optuna.Trial, relu: bool = False) -> float:
        stage = "hpo-relu" if relu else "hpo"
        hp, learn = suggest_hparams(trial, self.cfg.hpo.space, self.cfg.protocol.hparams(),
                                    learn_scale=True if relu else None)
        model = self._fresh(self._relu_trees() if relu else self._stage1_trees(), learn_scale=learn)
        self._record(trial, model)
        return self._search_fit(trial, model, stage, hp, self.cfg.hpo.epochs, self.cfg.hpo.fraction)

    def _objective_hpo_relu(self, trial: optuna.Trial) -> float:
        return self._objective_hpo(trial, relu=True)

    def _search_fit(self, trial: optuna.Trial, model: nn.Module, stage: str, hp: HParams,
                    epochs: int, fraction: float) -> float:
        try:
            result = self._fit(model, self._search_splits(fraction), hp, epochs, stage, trial)
        except Diverged as exc:
            trial.set_user_attr("pruned_reason", f"diverged: {exc}")
            self.log(f"{stage} #{trial.number} pruned: diverged ({exc})")
            raise optuna.TrialPruned(str(exc)) from exc
        except optuna.TrialPruned:
            reason = trial.study._storage.get_trial(trial._trial_id).user_attrs.get("pruned_reason", "by the pruner")
            self.log(f"{stage} #{trial.number} pruned: {reason}")
            raise
        best = self.status(stage).best_value
        shown = max(result.best_val_accuracy, best) if best is not None else result.best_val_accuracy
        self.log(f"{stage} #{trial.number} done: val {result.best_val_accuracy:.2f}% (best so far {shown:.2f}%)")
        return result.best_val_accuracy

    # ----------------------------------------------------------------- results
    def rows(self) -> list[ResultRow]:
        """This study's row of test accuracies, then the paper's row for comparison."""
        values = []
        for name in COLUMN_STAGES:
            stage = next((s for s in self.stages if s.name == name), None)
            st = self.status(stage) if stage else None
            values.append(st.best_trial.user_attrs.get("test_accuracy") if st and st.best_trial else None)
        rows = [ResultRow(f"{self.cfg.name} (measured)", tuple(values))]
        paper = paper_row(self.cfg.model.name, self.cfg.data.name)
        return rows + ([paper] if paper else [])

    def table(self) -> str:
        return markdown_table(self.rows())

    def _write_note(self) -> None:
        """The final study's dashboard note: the results table and the learned activations.

        Rewritten whenever a column of the table finishes after the final stage (the ablations
        usually do), so the note ends up with every column."""
        import optuna_dashboard

        study = self.study(_stage("final"))
        model, _ = load_checkpoint(self._checkpoint_of("final"))
        acts = {site: model.get_submodule(site) for site in sites(model)}
        shown = {site: _describe(a) for site, a in acts.items()}
        plots = optuna.artifacts.get_all_artifact_meta(study)
        if plots:
            artifact_id = plots[0].artifact_id
        else:
            path = Path(self._tmp.name) / "activations.svg"
            path.write_text(activation_svg(activation_curves(acts), {s: f"{s}: {d}" for s, d in shown.items()}))
            artifact_id = optuna.artifacts.upload_artifact(artifact_store=self.artifacts, file_path=str(path),
                                                           study_or_trial=study, mimetype="image/svg+xml")
        lines = [f"# SAFS result: {self.cfg.name}", "",
                 f"{self.cfg.model.name} on {self.cfg.data.name}, sparsity {self.cfg.sparsity.ratio:g} "
                 f"({self.cfg.sparsity.scope}); test accuracy %.", "", self.table(), "",
                 "## Learned activations", "", "| site | activation |", "|---|---|"]
        lines += [f"| `{site}` | `{d}` |" for site, d in shown.items()]
        lines += ["", f"![learned activations](/artifacts/{study._study_id}/{artifact_id})", ""]
        optuna_dashboard.save_note(study, "\n".join(lines))


def _describe(act: nn.Module) -> str:
    """``srs(x)``, or with learned scales ``0.93 · srs(x) at x = 1.2·x``."""
    alpha, beta = act.alpha.item(), act.beta.item()
    if alpha == 1.0 and beta == 1.0:
        return act.tree.formula
    return f"{beta:.3g} · {act.tree.formula} at x = {alpha:.3g}·x"


def _stage(stage: Stage | str) -> Stage:
    return stage if isinstance(stage, Stage) else next(s for s in STAGES if s.name == stage)


def load_splits(cfg: StudyConfig) -> data_mod.Splits:
    """The config's dataset, split into train / val / test with the study's seed."""
    d = cfg.data
    return data_mod.load(d.name, root=d.root, val_size=d.val_size, seed=cfg.seed, download=d.download)


def default_threads(workers: int) -> int:
    """Torch threads per worker when the config says 0: the cores split evenly."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def set_threads(threads: int) -> None:
    torch.set_num_threads(max(1, threads))
    logging.getLogger("safs_optuna").debug("torch threads: %d", threads)

