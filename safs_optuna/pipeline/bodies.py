"""What a stage's trial does, one function per :class:`~.stages.Body`, picked by the stage table.

Each body takes the worker's :class:`~.worker.Pipeline` (its config, data, studies and log), the
stage and the claimed trial, and returns the trial's value. "once" bodies store their model in
the artifact store, linked from the trial, so every later stage and worker finds it there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
from torch import nn

from ..activation import OperatorTree
from ..checkpoint import CheckpointError, load_dense_weights, save_checkpoint
from ..models import make_searchable, sites
from ..optuna_private import trial_id
from ..pruners import REASON_ATTR
from ..sparsity import sparsity_report
from ..storage import staging
from ..training import DivergedError, EpochStats, FitResult, HParams, UserFitError, evaluate, fit, fit_with
from .compute import TRAIN_IMAGES_ATTR, TRAINED_EPOCHS_ATTR, searched_epochs
from .features import record_features
from .fidelity import record_auto_epochs, trial_epochs
from .gradual import prune_gradually
from .logs import epoch_line, shown
from .protocols import hparams_from_params, suggest_hparams
from .stages import Body, Epochs, Searches, Stage
from .status import BEYOND_BUDGET_ATTR, INPUTS_ATTR
from .studies import PipelineError

if TYPE_CHECKING:
    from .worker import Pipeline

__all__ = ["BODIES", "BeyondBudget", "protocol", "train_dense", "finetune", "search", "sparsify", "trees"]


# ----------------------------------------------------------------- what the bodies share
class BeyondBudget(Exception):
    """A search trial asked for after other workers took the budget's last places: failed unrun."""


def trees(pipe: Pipeline, stage: Stage) -> dict[str, OperatorTree]:
    """The activation at every site that ``stage`` trains with (``Stage.trees_from``)."""
    out = pipe.res.own_trees()
    if stage.trees_from is None:
        return out
    best = pipe.studies.status(stage.trees_from).best_trial
    if best is None:
        pipe.log(f"{stage.trees_from}: no trial completed (all pruned); keeping the network's own activations")
        return out
    out.update(pipe.res.space.decode(best.params))
    return out


def protocol(pipe: Pipeline, stage: Stage) -> tuple[HParams, bool]:
    """The fine-tuning protocol ``stage`` trains with and whether α/β are learned
    (``Stage.protocol_from``, ``Stage.learn_scale``)."""
    base = pipe.cfg.protocol.hparams()
    fixed = stage.learn_scale
    if stage.protocol_from is None:
        return base, bool(fixed)
    best = pipe.studies.status(stage.protocol_from).best_trial
    if best is None:
        pipe.log(f"{stage.protocol_from}: no trial completed (all pruned); keeping the default protocol")
        return base, True if fixed is None else fixed
    hp, learn = hparams_from_params(best.params, base)
    return hp, learn if fixed is None else fixed


def _working(pipe: Pipeline) -> None:
    """A trial starts here: take back this worker's lent threads, borrow idle workers'."""
    if pipe.cores is not None:
        pipe.cores.refresh(force=True)


def _fit(pipe: Pipeline, model: nn.Module, splits: Any, hp: HParams, epochs: int, label: str,
         trial: optuna.Trial | None, until: Callable[[Sequence[EpochStats]], bool] | None = None) -> FitResult:
    """Fine-tune ``model`` with the user's loop if there is one, else the built-in :func:`fit`."""
    cfg, training, user_fit = pipe.cfg, pipe.cfg.training, pipe.res.code.fit
    on_epoch = epoch_line(pipe.log, label, epochs, training, user_fit is not None)
    if user_fit is not None:
        return fit_with(user_fit, model, splits, hp, epochs, trial, device=cfg.device, seed=cfg.seed,
                        maximize=training.direction == "maximize", accuracy=training.is_accuracy,
                        on_epoch=on_epoch, until=until)
    # Between training steps, follow the threads idle workers lend (a clock read but every 0.25 s).
    on_batch = pipe.cores.refresh if pipe.cores is not None else None
    return fit(model, splits, hp, epochs, trial=trial, device=cfg.device, seed=cfg.seed, progress=False,
               on_epoch=on_epoch, until=until, on_batch=on_batch, loader_workers=cfg.data.loader_workers)


def _record(pipe: Pipeline, trial: optuna.Trial, model: nn.Module, extra: Mapping[str, Any] | None = None) -> None:
    formulas = {site: model.get_submodule(site).tree.formula for site in sites(model)}
    trial.set_user_attr("formulas", formulas)
    trial.set_user_attr("sparsity", round(100 * sparsity_report(model).ratio, 3))
    trial.set_user_attr("worker", pipe.log.worker)
    for k, v in (extra or {}).items():
        trial.set_user_attr(k, v)


def store(pipe: Pipeline, trial: optuna.Trial, model: nn.Module, filename: str, learn_scale: bool) -> None:
    """Upload ``model`` as the trial's checkpoint artifact, named by the ``checkpoint`` user attr."""
    res = pipe.res
    path = Path(res.tmp.name) / "upload" / str(trial.number) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    with staging(res.artifacts, filename, path.parent):
        save_checkpoint(path, model, res.arch, learn_scale=learn_scale)
    artifact_id = optuna.artifacts.upload_artifact(artifact_store=res.artifacts, file_path=str(path),
                                                   study_or_trial=trial)
    trial.set_user_attr("checkpoint", artifact_id)


def _test_score(pipe: Pipeline, model: nn.Module) -> float:
    """The model's test metric: the user's ``[training] evaluate``, else top-1 accuracy."""
    cfg, res = pipe.cfg, pipe.res
    if res.code.evaluate is not None:
        model.to(cfg.device).eval()
        try:
            with torch.no_grad():
                return float(res.code.evaluate(model, res.splits.test))
        except Exception as exc:  # noqa: BLE001 - the user's function may raise anything
            raise PipelineError(f"[training] evaluate raised {type(exc).__name__}: {exc}") from None
    return evaluate(model, res.splits.test, device=cfg.device, loader_workers=cfg.data.loader_workers).accuracy


def _val_score(pipe: Pipeline, model: nn.Module) -> float:
    """Validation accuracy of a model that is not trained here (loaded or just pruned)."""
    return evaluate(model, pipe.res.splits.val, device=pipe.cfg.device,
                    loader_workers=pipe.cfg.data.loader_workers).accuracy


def _finish_once(pipe: Pipeline, stage: Stage, trial: optuna.Trial, model: nn.Module, result: FitResult,
                 learn_scale: bool, hp: HParams, epochs: int, trained: int | None = None) -> float:
    """Record a "once" trial's results (test score, density per layer, protocol, the epochs it
    trained: ``trained``, else its fit's), store its model."""
    trial.set_user_attr(TRAINED_EPOCHS_ATTR, len(result.history) if trained is None else trained)
    trial.set_user_attr(TRAIN_IMAGES_ATTR, len(pipe.res.splits.train))
    test = _test_score(pipe, model)
    layers = sparsity_report(model).layers
    _record(pipe, trial, model, {"test_accuracy": round(test, 4),
                                 "layer_density": {x.name: [x.total, round(100 * (1 - x.ratio), 3)] for x in layers},
                                 "val_accuracy": round(result.best_val_accuracy, 4),
                                 "best_epoch": result.best_epoch, "epochs": epochs,
                                 "hparams": dataclasses.asdict(hp), "learn_scale": learn_scale})
    store(pipe, trial, model.cpu(), f"{stage.name}.pt", learn_scale)
    return result.best_val_accuracy


# ----------------------------------------------------------------- the bodies
def train_dense(pipe: Pipeline, stage: Stage, trial: optuna.Trial) -> float:
    """The dense network: trained for ``[dense] epochs``, or the user's ``[dense] checkpoint``."""
    cfg = pipe.cfg
    torch.manual_seed(cfg.seed)  # the initial weights too are a function of the seed
    model = pipe.res.build()
    hp = cfg.protocol.hparams()
    if cfg.dense.checkpoint:
        try:
            load_dense_weights(model, cfg.dense.checkpoint, name=cfg.model.name)
        except CheckpointError as exc:
            raise PipelineError(str(exc)) from None
        make_searchable(model)
        result = FitResult(best_val_accuracy=_val_score(pipe, model), best_epoch=0, history=[])
        epochs = 0
    else:
        make_searchable(model)
        epochs = cfg.dense.epochs
        result = _fit(pipe, model, pipe.res.splits, hp, epochs, stage.name, trial=None)
    return _finish_once(pipe, stage, trial, model, result, False, hp, epochs)


def sparsify(pipe: Pipeline, stage: Stage, trial: optuna.Trial) -> float:
    """The dense network at the config's sparsity, stored for every later stage: pruned in one
    shot, or gradually over ``[sparsity] gradual_epochs`` (:func:`.gradual.prune_gradually`)."""
    cfg, res = pipe.cfg, pipe.res
    hp = cfg.protocol.hparams()
    epochs = cfg.sparsity.gradual_epochs
    progress: str | None = None
    if cfg.sparsity.checkpoint:  # the user pruned it: their masks, exactly
        model = res.pruned_model()
        val = _val_score(pipe, model)
    elif epochs:
        model, val, progress = prune_gradually(pipe, stage, trial, hp, epochs)
    else:
        model = res.dense_model()
        res.prune(model, cfg.sparsity.ratio)
        val = _val_score(pipe, model)
    trained = 0 if cfg.sparsity.checkpoint else epochs  # gradual pruning's epochs; one shot trains none
    value = _finish_once(pipe, stage, trial, model, FitResult(val, max(0, epochs - 1), []), False, hp, epochs,
                         trained=trained)
    res.drop_progress(progress)  # only now: the stage's checkpoint replaces it
    return value


def finetune(pipe: Pipeline, stage: Stage, trial: optuna.Trial) -> float:
    """A full fine-tune of the sparse network with the stage's activations and protocol."""
    trial.set_user_attr(INPUTS_ATTR, pipe.studies.inputs(stage))
    hp, learn = protocol(pipe, stage)
    model = pipe.res.fresh(trees(pipe, stage), learn)
    epochs = (pipe.cfg.final.epochs if stage.epochs == Epochs.FINAL
              else searched_epochs(pipe, stage, len(pipe.res.splits.train)))
    try:
        result = _fit(pipe, model, pipe.res.splits, hp, epochs, stage.name, trial=None)
    except DivergedError as exc:
        raise PipelineError(f"{stage.name}: fine-tuning diverged ({exc})") from exc
    return _finish_once(pipe, stage, trial, model, result, learn, hp, epochs)


def search(pipe: Pipeline, stage: Stage, trial: optuna.Trial) -> float:
    """One search trial: draw what the stage searches, fine-tune briefly, score on val."""
    cfg, res = pipe.cfg, pipe.res
    budget = pipe.studies.budget(stage)
    if pipe.studies.places_before(pipe.studies.study(stage), stage, trial.number) >= budget:
        # Workers that ask at the same moment can all see a place left; the storage's trial
        # numbers decide who gets the last ones, and this trial is not run.
        trial.set_user_attr(BEYOND_BUDGET_ATTR, f"the stage's {budget} trials were taken by other workers")
        raise BeyondBudget(f"{stage.name} #{trial.number}: the budget of {budget} trials was taken")
    _working(pipe)
    if stage.searches == Searches.TREES:
        model = res.fresh({})  # the sparse model already holds the network's own activations
        res.space.apply(model, res.space.suggest(trial, sites(model)))
        hp = cfg.protocol.hparams()
    else:
        hp, learn = suggest_hparams(trial, cfg.hpo.space, cfg.protocol.hparams(), learn_scale=stage.learn_scale)
        model = res.fresh(trees(pipe, stage), learn_scale=learn)
    trial.set_user_attr(INPUTS_ATTR, pipe.studies.inputs(stage))
    _record(pipe, trial, model)
    label = f"{stage.name} #{trial.number}"
    if stage.searches == Searches.TREES:
        record_features(pipe, trial, model, label)
    splits = res.search_splits(getattr(cfg, stage.section).fraction)
    trial.set_user_attr(TRAIN_IMAGES_ATTR, len(splits.train))
    study = pipe.studies.study(stage)
    epochs, until = trial_epochs(cfg, stage, study, trial, splits.val, pipe.log)
    try:
        result = _fit(pipe, model, splits, hp, epochs, label, trial, until)
    except DivergedError as exc:
        trial.set_user_attr(REASON_ATTR, f"diverged: {exc}")
        pipe.log(f"{label} pruned: diverged ({exc})")
        raise optuna.TrialPruned(str(exc)) from exc
    except UserFitError as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        pipe.log(f"{label} failed: {exc}")
        raise
    except optuna.TrialPruned:
        # The pruner wrote its reason through the storage: the trial object does not have it.
        reason = pipe.studies.storage.get_trial(trial_id(trial)).user_attrs.get(REASON_ATTR, "by the pruner")
        pipe.log(f"{label} pruned: {reason}")
        raise
    if until is not None:
        record_auto_epochs(cfg, stage, study, result, splits.val, pipe.log)
    best = pipe.studies.status(stage).best_value
    better = max if cfg.training.direction == "maximize" else min
    value = result.best_val_accuracy
    so_far = better(value, best) if best is not None else value
    pipe.log(f"{label} done: val {shown(cfg.training, value)} (best so far {shown(cfg.training, so_far)})")
    return value


BODIES: dict[Body, Callable[[Pipeline, Stage, optuna.Trial], float]] = {
    Body.DENSE: train_dense,
    Body.SPARSIFY: sparsify,
    Body.FINETUNE: finetune,
    Body.SEARCH: search,
}
"""The function that runs a trial of a stage, by the stage's ``body``."""
