"""The activation search space: which operator trees a site may hold, as Optuna parameters."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import optuna
from torch import nn

from .activation import OperatorTree
from .models import set_trees
from .operators import BINARY, UNARY, get_binary, get_unary

__all__ = ["ActivationSpace"]

# The paper's 13 unary candidates (SAFS, Loni et al. 2023, table of operators), in its order.
SAFS_UNARY: tuple[str, ...] = (
    "relu6", "hardswish", "swish", "tanhsoft1", "acon", "gelu", "srs",
    "elu", "tanh", "softplus", "logsigmoid", "symlog", "symexp",
)

# A small space for CPU budgets, picked by measurement (benchmarks/rank_operators.py, results in
# benchmarks/results/rank_operators.md): LeNet-5 at sparsity 0.99, every operator fine-tuned
# from the same sparse weights. Unary: relu (the start point), x (the identity operand of
# b(x, u) trees) and the eight best, all 26-29 % validation accuracy where relu reached 16 % and
# twelve others stayed at chance. Binary: left (unary trees) and the three best b(x, u*).
COMPACT_UNARY: tuple[str, ...] = (
    "relu", "x", "tanhsoft1", "neg", "srs", "elu", "acon", "hardtanh", "selu", "erf",
)
COMPACT_BINARY: tuple[str, ...] = ("left", "max", "add", "mix")

_PARTS = ("binary", "left", "right")


def _front(names: Iterable[str], first: str) -> tuple[str, ...]:
    """``names`` without duplicates, in order, with ``first`` moved to the front when present."""
    unique = tuple(dict.fromkeys(names))
    return ((first,) + tuple(n for n in unique if n != first)) if first in unique else unique


class ActivationSpace:
    """Operator trees ``binary(left(x), right(x))`` per activation site, as Optuna categorical params.

    Every site gets the parameters ``<site>.left`` (a unary operator), ``<site>.binary`` when the space
    has more than one binary operator, and ``<site>.right`` when some binary is not ``left``; all are
    ``suggest_categorical`` over plain strings, so they read well in optuna-dashboard. The search
    space stays the same for every trial (``right`` is suggested even when the binary is ``left``,
    where it does not matter); :meth:`canonical_key` merges such equivalent configurations.

    ``relu`` is put first among the unary choices and ``left`` first among the binaries when present,
    so that "all sites ReLU" — the dense network's own activation and the first trial of the LAHC
    sampler — is a point of every preset.

    Presets (:meth:`preset`):

    - ``"safs"``: the paper's space: binary fixed to ``left``, unary over its 13 candidates (relu6,
      hardswish, swish, tanhsoft1, acon, gelu, srs, elu, tanh, softplus, logsigmoid, symlog, symexp)
      plus ``relu``. The paper starts from ReLU without listing it among the candidates; including it
      makes the start point a valid configuration.
    - ``"core"``: every registered unary and binary operator.
    - ``"compact"``: binaries left, max, add and mix and ten unaries (relu, x, tanhsoft1, neg, srs,
      elu, acon, hardtanh, selu, erf), the best of every operator fine-tuned from the same sparse
      LeNet-5 (``benchmarks/results/rank_operators.md``); meant for CPU budgets.

    Args:
        unary: Names of unary operators (see :data:`safs_optuna.operators.UNARY`).
        binary: Names of binary operators (see :data:`safs_optuna.operators.BINARY`).
        name: A label for reports.

    Example:
        .. code-block:: python

            import optuna
            import safs_optuna as so

            model = so.make_searchable(so.build_model("lenet5"))
            space = so.ActivationSpace.preset("compact")

            def objective(trial):
                trees = space.suggest(trial, so.sites(model))
                space.apply(model, trees)
                ...
    """

    PRESETS: ClassVar[tuple[str, ...]] = ("safs", "core", "compact")

    def __init__(self, unary: Sequence[str], binary: Sequence[str] = ("left",), name: str = "custom") -> None:
        if isinstance(unary, str) or isinstance(binary, str):
            raise TypeError("unary and binary must be sequences of operator names, not a single string")
        for op in unary:
            get_unary(op)  # ValueError naming the bad name and listing the valid ones
        for op in binary:
            get_binary(op)
        if not unary or not binary:
            raise ValueError("an activation space needs at least one unary and one binary operator")
        self.unary: tuple[str, ...] = _front(unary, "relu")
        self.binary: tuple[str, ...] = _front(binary, "left")
        self.name = name

    @classmethod
    def preset(cls, name: str) -> "ActivationSpace":
        """The named preset space: ``"safs"``, ``"core"`` or ``"compact"`` (see the class docstring)."""
        if name == "safs":
            return cls(("relu",) + SAFS_UNARY, ("left",), name)
        if name == "core":
            return cls(tuple(UNARY), tuple(BINARY), name)
        if name == "compact":
            return cls(COMPACT_UNARY, COMPACT_BINARY, name)
        raise ValueError(f"unknown activation space preset {name!r}; valid: {', '.join(cls.PRESETS)}")

    @property
    def has_binary_param(self) -> bool:
        """Whether sites get a ``<site>.binary`` parameter (more than one binary operator)."""
        return len(self.binary) > 1

    @property
    def has_right_param(self) -> bool:
        """Whether sites get a ``<site>.right`` parameter (some binary is not ``left``)."""
        return any(b != "left" for b in self.binary)

    def param_names(self, site: str) -> list[str]:
        """The Optuna parameter names of ``site`` in this space."""
        parts = (["binary"] if self.has_binary_param else []) + ["left"]
        return [f"{site}.{p}" for p in parts + (["right"] if self.has_right_param else [])]

    def suggest(self, trial: optuna.Trial, sites: Sequence[str]) -> dict[str, OperatorTree]:
        """Suggest one operator tree per site through ``trial.suggest_categorical``."""
        trees: dict[str, OperatorTree] = {}
        for site in sites:
            binary = self.binary[0]
            if self.has_binary_param:
                binary = trial.suggest_categorical(f"{site}.binary", self.binary)
            left = trial.suggest_categorical(f"{site}.left", self.unary)
            right = "x"
            if self.has_right_param:
                right = trial.suggest_categorical(f"{site}.right", self.unary)
            trees[site] = OperatorTree(binary, left, right)
        return trees

    def _split(self, params: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Params grouped by site (sites are the prefixes of ``*.left`` params) and the other params."""
        site_names = {k[: -len(".left")] for k in params if k.endswith(".left")}
        by_site: dict[str, dict[str, Any]] = {}
        others: dict[str, Any] = {}
        for key, value in params.items():
            site, _, part = key.rpartition(".")
            if part in _PARTS and site in site_names:
                by_site.setdefault(site, {})[part] = value
            else:
                others[key] = value
        return by_site, others

    def _check(self, site: str, part: str, value: Any) -> str:
        choices = self.binary if part == "binary" else self.unary
        if value not in choices:
            raise ValueError(
                f"{site}.{part} = {value!r} is not in activation space {self.name!r}; "
                f"valid: {', '.join(choices)}"
            )
        return value

    def decode(self, params: Mapping[str, Any]) -> dict[str, OperatorTree]:
        """Rebuild the trees of every site found in ``params`` (e.g. ``trial.params``).

        Params that are not activation params (such as hyperparameters) are ignored.
        """
        by_site, _ = self._split(params)
        trees: dict[str, OperatorTree] = {}
        for site, parts in by_site.items():
            binary = self._check(site, "binary", parts.get("binary", self.binary[0]))
            left = self._check(site, "left", parts["left"])
            right = self._check(site, "right", parts["right"]) if "right" in parts else "x"
            trees[site] = OperatorTree(binary, left, right)
        return trees

    def encode(self, trees: Mapping[str, OperatorTree]) -> dict[str, Any]:
        """The params that :meth:`suggest` would give for ``trees`` (e.g. for ``study.enqueue_trial``).

        For a unary tree in a space with ``right`` params, ``right`` is ``"x"`` when that is a choice,
        else the left operator: any value gives the same activation.
        """
        params: dict[str, Any] = {}
        for site, tree in trees.items():
            if self.has_binary_param:
                params[f"{site}.binary"] = self._check(site, "binary", tree.binary)
            elif tree.binary != self.binary[0]:
                self._check(site, "binary", tree.binary)  # raises unless it is the fixed binary
                if not tree.is_unary:
                    raise ValueError(
                        f"{site}: tree {tree.formula} is not in activation space {self.name!r}; "
                        f"its binary is fixed to {self.binary[0]!r}"
                    )
            params[f"{site}.left"] = self._check(site, "left", tree.left)
            if self.has_right_param:
                right = tree.right
                if tree.is_unary:
                    right = "x" if "x" in self.unary else tree.left
                params[f"{site}.right"] = self._check(site, "right", right)
        return params

    def canonical_key(self, params: Mapping[str, Any]) -> Hashable:
        """A hashable identity of a whole trial configuration: equal for equivalent configurations.

        A tuple of ``(site, tree.key)`` sorted by site, followed by the other params as
        ``(name, value)`` sorted by name, so hyperparameters stay part of the identity.
        """
        _, others = self._split(params)
        trees = sorted((site, tree.key) for site, tree in self.decode(params).items())
        rest = sorted(others.items(), key=lambda item: item[0])
        return tuple(trees) + tuple(rest)

    def apply(self, model: nn.Module, trees: Mapping[str, OperatorTree], learn_scale: bool = False) -> None:
        """Put ``trees[site]`` into every given site of ``model``; see :func:`safs_optuna.models.set_trees`."""
        set_trees(model, trees, learn_scale=learn_scale)

    def __repr__(self) -> str:
        return f"ActivationSpace(name={self.name!r}, unary={list(self.unary)}, binary={list(self.binary)})"

