"""What a config key may hold, stored once as the metadata of its dataclass field.

A schema dataclass declares each key with :func:`key`::

    trials: int = key(20, "trials of the stage", range=(1, 100_000))

and the loader (:mod:`safs_optuna.config.walker`) enforces the metadata, the reference
(:mod:`safs_optuna.config.reference`) prints it. Registries of other modules (models, operators,
optimizers) are named by import path and imported only when a config is validated or the
reference is written, so that importing the config stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Choices", "Pattern", "Spec", "key", "spec_of"]

SPEC = "safs_optuna.spec"
"""The metadata entry of a schema field that holds its :class:`Spec`."""


@dataclass(frozen=True)
class Choices:
    """The valid values of a key (or of each item of an array key).

    Attributes:
        values: The values themselves, or ``"module:NAME"`` of a registry imported on use.
        what: The word for one value in messages ("optimizer", "unary operator").
        forms: Other accepted forms, checked by :mod:`~safs_optuna.config.checks` and listed
            after the values (``"idx:<dir>"``; ``"module:NAME"`` of such a list also works).
    """

    values: tuple[Any, ...] | str
    what: str
    forms: tuple[str, ...] | str = ()

    def valid(self) -> tuple[Any, ...]:
        """The values, importing their registry when they are named by import path."""
        return _load(self.values)

    def shown(self) -> list[str]:
        """The values and forms as listed in messages and the reference."""
        from .errors import show  # booleans as TOML writes them

        return [v if isinstance(v, str) else show(v) for v in (*self.valid(), *_load(self.forms))]


@dataclass(frozen=True)
class Pattern:
    """A string key that must match ``regex``; ``valid`` says what matches, ``problem`` is the
    message for a value that does not (formatted with ``value``)."""

    regex: str
    valid: str
    problem: str


@dataclass(frozen=True)
class Spec:
    """The rules of one key; every attribute but ``doc`` is optional.

    Attributes:
        doc: One line: what the key means.
        range: ``(low, high)`` of a number, or of each number of an array or table.
        closed: Which ends of ``range`` are included: ``"[]"``, ``"[)"``, ``"(]"`` or ``"()"``.
        note: Said after a value out of ``range`` (what the bounds mean).
        choices: The valid values (of each item, for arrays).
        words: Strings a number key also takes (``"auto"``).
        distinct: An array of at least one value, none twice.
        pair: ``"log"`` or ``"linear"``: a ``[low, high]`` search range, low < high (and
            low > 0 on a log scale); ``range`` then bounds both ends.
        pattern: A string key's shape.
        path: ``"any"``: a path resolved against the config's folder; ``"file"``: one that
            must be an existing file.
        computed: How the reference shows a default computed when the config is loaded.
        keys: The specs of the keys of a section stored in one dataclass field (the
            ``[protocol]`` keys are the fields of :class:`~safs_optuna.training.HParams`).
    """

    doc: str
    range: tuple[float, float] | None = None
    closed: str = "[]"
    note: str = ""
    choices: Choices | None = None
    words: tuple[str, ...] = ()
    distinct: bool = False
    pair: str = ""
    pattern: Pattern | None = None
    path: str = ""
    computed: str = ""
    keys: Mapping[str, "Spec"] | None = None


def key(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = dataclasses.MISSING,
        **rules: Any) -> Any:
    """A schema field: its default (or ``factory``) and the :class:`Spec` built from ``doc`` and
    ``rules``."""
    metadata = {SPEC: Spec(doc, **rules)}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def spec_of(field: dataclasses.Field) -> Spec | None:
    """The :class:`Spec` of a schema field; ``None`` for fields that are no config key."""
    return field.metadata.get(SPEC)


def _load(values: tuple[Any, ...] | str) -> tuple[Any, ...]:
    if isinstance(values, str):
        module, _, name = values.partition(":")
        found: Any = importlib.import_module(module)
        for part in name.split("."):  # "module:Class.ATTR" names a class attribute
            found = getattr(found, part)
        return tuple(found)
    return tuple(values)
