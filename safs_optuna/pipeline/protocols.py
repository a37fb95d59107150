"""Stage 2's search space: a trial's fine-tuning protocol and learn-scale flag, drawn or rebuilt."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optuna

from ..config import HPOSpace, ProtocolConfig
from ..training import HParams

__all__ = ["hparams_from_params", "suggest_hparams", "default_protocol_params"]


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


def default_protocol_params(space: HPOSpace, p: ProtocolConfig, learn_scale: bool | None) -> dict[str, Any] | None:
    """The default protocol as stage-2 params (clipped into the space), to start the search from;
    ``None`` when it lies outside the configured choices. ``learn_scale`` None: the space's first."""
    if p.optimizer not in space.optimizers or p.schedule not in space.schedules:
        return None
    clip = lambda v, lo_hi: min(max(v, lo_hi[0]), lo_hi[1])  # noqa: E731
    params: dict[str, Any] = {"optimizer": p.optimizer, "lr": clip(p.lr, space.lr),
                              "weight_decay": clip(p.weight_decay, space.weight_decay),
                              "schedule": p.schedule}
    if p.optimizer == "sgd":
        params["momentum"] = clip(p.momentum, space.momentum)
    if learn_scale is None:
        params["learn_scale"] = space.learn_scale[0]
    return params
