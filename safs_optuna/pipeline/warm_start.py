"""Warm start: the winners of earlier activation searches, queued first in a new one.

``[activations] warm_start`` lists sources, each queued as one trial right after the start
point (the network's own activations), in the order given:

- the name of a study in the same storage (``"quickstart"`` or ``"quickstart/activations"``):
  the winner of its activation search, read from the formulas its best trial recorded;
- a file of ``site = "formula"`` lines (TOML, ``.toml``) or a ``{"site": "formula"}`` object
  (JSON, ``.json``), relative to the config's folder: what a report printed, or what another
  network learned.

A source may name only some sites: the others keep the network's own activation. A source
whose activations equal the start point's or an earlier source's is not queued again. Queued trials
join the search like any other (LAHC accepts one that scores better than its chain) and count
against ``trials``. A source that cannot be read, names a site the network does not have, or
holds a tree outside the activation space stops the run before any study is created.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..activation import OperatorTree
from ..config import StudyConfig
from ..config.load import tomllib
from ..space import ActivationSpace
from ..storage import sqlite_path

__all__ = ["WARM_START_ATTR", "WarmStartError", "warm_start_params"]

WARM_START_ATTR = "warm_start"  # user attr of a queued trial: the source it came from


class WarmStartError(ValueError):
    """A ``warm_start`` source that cannot be used, in one line naming it."""


def _is_file(source: str) -> bool:
    return source.endswith((".toml", ".json"))


def _from_file(cfg: StudyConfig, source: str) -> dict[str, str]:
    path = Path(source).expanduser()
    if not path.is_absolute() and cfg.path is not None:
        path = Path(cfg.path).parent / path
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except FileNotFoundError:
        raise WarmStartError(f"[activations] warm_start: no file {path}") from None
    except (OSError, ValueError) as exc:  # unreadable, or not TOML/JSON (both errors are ValueErrors)
        raise WarmStartError(f"[activations] warm_start: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise WarmStartError(f"[activations] warm_start: {path} must map each site to a formula "
                             'string, e.g. act1 = "swish(x)"')
    return dict(data)


def _from_study(cfg: StudyConfig, storage: optuna.storages.BaseStorage | str, source: str) -> dict[str, str]:
    name = source if source.endswith("/activations") else f"{source}/activations"
    path = sqlite_path(storage) if isinstance(storage, str) else None
    try:
        if path is not None and not path.exists():  # no database yet (and none made by looking)
            raise KeyError(name)
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        stored = optuna.get_all_study_names(storage) if path is None or path.exists() else []
        names = sorted({n.rsplit("/", 1)[0] for n in stored
                        if n.endswith("/activations") and n != cfg.study_name("activations")})
        raise WarmStartError(f"[activations] warm_start: no study {name!r} in this storage; studies with "
                             f"an activation search: {', '.join(names) or 'none'} (or give a .toml/.json "
                             "file of formulas)") from None
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        raise WarmStartError(f"[activations] warm_start: {name!r} has no finished trial yet")
    formulas = study.best_trial.user_attrs.get("formulas")
    if not isinstance(formulas, dict):
        raise WarmStartError(f"[activations] warm_start: {name!r}'s best trial recorded no formulas")
    return formulas


def warm_start_params(cfg: StudyConfig, storage: optuna.storages.BaseStorage | str, space: ActivationSpace,
                      own: Mapping[str, OperatorTree]) -> list[tuple[str, dict[str, Any]]]:
    """``(source, params)`` per ``[activations] warm_start`` source: the trial to queue.

    Raises:
        WarmStartError: A source that cannot be read or used, in one line.
    """
    out = []
    seen = [{s: t.formula for s, t in own.items()}]  # the start point is queued already
    for source in cfg.activations.warm_start:
        formulas = _from_file(cfg, source) if _is_file(source) else _from_study(cfg, storage, source)
        unknown = sorted(set(formulas) - set(own))
        if unknown:
            raise WarmStartError(f"[activations] warm_start {source!r}: no site {', '.join(map(repr, unknown))} "
                                 f"in this network; its sites: {', '.join(own)}")
        trees = dict(own)
        try:
            trees.update({site: OperatorTree.parse(f) for site, f in formulas.items()})
            params = space.encode(trees)
        except ValueError as exc:
            raise WarmStartError(f"[activations] warm_start {source!r}: {exc}") from None
        same = {s: t.formula for s, t in trees.items()}
        if same not in seen:  # a winner queued twice would be trained twice
            seen.append(same)
            out.append((source, params))
    return out

