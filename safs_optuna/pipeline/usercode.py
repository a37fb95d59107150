"""The user's own code that a study runs: model factory, data, training loop, test metric.

Each comes either from the config, as an import path that is resolved here (the config file's
folder first, then ``sys.path``), or as a Python object given to :func:`safs_optuna.run`. Only
this process's config or call decides what is imported: the config stored in the database is
compared with it (:mod:`.studies`), never imported, so whoever can write to the database cannot
make a worker run code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..config import StudyConfig
from ..models import build_model
from ..sources import SourceError, call_accepting, is_import_path, resolve

__all__ = ["NetworkBuilder", "UserCode", "describe"]


@dataclass(frozen=True)
class UserCode:
    """What of the pipeline is the user's: ``None`` where the built-in part is used.

    Attributes:
        model: Returns the network (plain activations): called with ``num_classes``,
            ``in_channels``, ``image_size`` where it accepts them, and ``[model.kwargs]``. An
            ``nn.Module`` given as it is serves as the template every build copies.
        data: Returns :class:`~safs_optuna.data.Splits` or ``(train, val, test)``; or is one.
        fit: The training loop (:data:`safs_optuna.training.FitFunction`).
        evaluate: ``evaluate(model, dataset) -> float``, the test metric.
    """

    model: Any = None
    data: Any = None
    fit: Callable[..., Any] | None = None
    evaluate: Callable[..., float] | None = None

    @classmethod
    def from_config(cls, cfg: StudyConfig, given: UserCode | None = None) -> UserCode:
        """``given`` completed with the config's ``[training]`` import paths, resolved.

        The config's model and data import paths are resolved where they are built
        (:func:`safs_optuna.models.build_model`, :func:`safs_optuna.data.load`).

        Raises:
            SourceError: A path cannot be imported (one line naming it and where it looked).
        """
        given = given or cls()
        folder = str(cfg.path.parent) if cfg.path is not None else None

        def pick(obj: Any, path: str | None, what: str) -> Any:
            if obj is not None:
                return obj
            return resolve(path, folder, what) if path is not None and is_import_path(path) else None

        return cls(
            model=given.model,
            data=given.data,
            fit=pick(given.fit, cfg.training.fit, "[training] fit"),
            evaluate=pick(given.evaluate, cfg.training.evaluate, "[training] evaluate"),
        )

    def model_factory(self) -> Callable[..., Any] | None:
        """The model as a factory (a module given as it is is deep-copied on every call)."""
        if isinstance(self.model, nn.Module):
            template = self.model
            return lambda **_: copy.deepcopy(template)
        return self.model


@dataclass(frozen=True)
class NetworkBuilder:
    """``builder()`` is a new network from the config's model source (the user's model, else a
    built-in or import-path name), with plain activations.

    Attributes:
        cfg: The study config (``[model]``, and the folder import paths are found from).
        code: The user's code (its model, if given).
        arch: What the data asks of the network: ``num_classes``, ``in_channels``, ``image_size``.
    """

    cfg: StudyConfig
    code: UserCode
    arch: Mapping[str, Any]

    def __call__(self) -> nn.Module:
        model_cfg = self.cfg.model
        arch = {k: v for k, v in self.arch.items() if k not in ("name", "kwargs")}
        factory = self.code.model_factory()
        if factory is not None:
            model = call_accepting(factory, arch, dict(model_cfg.kwargs), f"[model] name {model_cfg.name!r}")
            if not isinstance(model, nn.Module):
                raise SourceError(f"[model] name {model_cfg.name!r} returned {type(model).__name__}, "
                                  "not a torch.nn.Module")
            return model
        folder = str(self.cfg.path.parent) if self.cfg.path is not None else None
        return build_model(model_cfg.name, **arch, kwargs=model_cfg.kwargs, search_dir=folder)


def describe(obj: Any) -> str:
    """How an object given from Python is named in the stored config: ``module:qualname``, so that
    a study run with another function (or a changed one under another name) is told apart."""
    if isinstance(obj, nn.Module) or not hasattr(obj, "__qualname__"):
        module, name = type(obj).__module__, type(obj).__qualname__
    else:
        module, name = getattr(obj, "__module__", None) or "__main__", obj.__qualname__
    return f"{module}:{name.replace('<', '').replace('>', '')}"
