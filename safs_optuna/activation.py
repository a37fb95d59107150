"""Operator-tree activations: the expression (:class:`OperatorTree`) and the module (:class:`TreeActivation`).

An activation is ``binary(left(x), right(x))`` with ``left``/``right`` unary and ``binary`` binary
operators from :mod:`safs_optuna.operators`. Its readable *formula* is ``max(x, sin(x))``; a tree
whose binary is ``left`` is a unary activation and prints as its unary alone (``gelu(x)``, or ``x``
for the identity). The *canonical key* normalises a tree so that equivalent trees compare equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .derivatives import tree_node
from .operators import BINARY, UNARY, get_binary, get_unary, wants_graph

__all__ = ["OperatorTree", "TreeActivation"]

# Unary names computing exactly the same function (and gradient) as another: max0 calls torch.relu.
_ALIASES: dict[str, str] = {"max0": "relu"}

_TOKEN = re.compile(r"[A-Za-z_]\w*|\S")


def _operand(name: str) -> str:
    """Formula of a unary applied to x: ``sin(x)``, or ``x`` for the identity."""
    return "x" if name == "x" else f"{name}(x)"


def _fold(binary: str, left: str, right: str) -> str | None:
    """The unary that ``binary(left(x), right(x))`` always equals, if an identity says so.

    Each rule holds exactly for finite operands, which the guarded operators guarantee, in value
    and in gradient. Rules that drop one of two equal operands apply to parameter-free operators
    only: two copies of a learnable operator have independent parameters, so after training
    ``max(acon(x), acon(x))`` is not ``acon(x)``.
    """
    if left == right and not UNARY[left].learnable:
        if binary in ("max", "min"):
            return left  # max(u, u) = min(u, u) = u
        if binary == "sub":
            return "zero"  # u - u = 0
    if right == "zero":
        if binary in ("add", "sub", "safe_div"):
            return left  # u + 0 = u - 0 = u / (1 + |0|) = u
        if binary in ("mul", "sigmoid_gate"):
            return "zero"  # u·0 = σ(u)·0 = 0
    if left == "zero":
        if binary == "add":
            return right
        if binary in ("mul", "safe_div"):
            return "zero"  # 0·v = 0 / (1 + |v|) = 0
        if binary == "sub" and right == "x":
            return "neg"  # 0 - x = -x
    if binary == "mul" and "one" in (left, right):
        return right if left == "one" else left  # u·1 = u
    return None


def _canonical(binary: str, left: str, right: str) -> tuple[str, str, str]:
    left, right = _ALIASES.get(left, left), _ALIASES.get(right, right)
    if binary != "left":
        folded = _fold(binary, left, right)
        if folded is None:
            if BINARY[binary].commutative and right < left:
                left, right = right, left
            return (binary, left, right)
        left = folded
    # left(u, v) = u whatever v is; "x" stands for the ignored operand.
    return ("left", left, "x")


@dataclass(frozen=True, eq=False)
class OperatorTree:
    """An activation expression ``binary(left(x), right(x))``, immutable and hashable.

    Operator names are checked against :data:`~safs_optuna.operators.UNARY` and
    :data:`~safs_optuna.operators.BINARY`. Equality and hashing use the canonical :attr:`key`, so
    ``max(x, sin(x)) == max(sin(x), x)`` and ``left(u, v) == left(u, w)``.

    Example:

        .. code-block:: python

            from safs_optuna.activation import OperatorTree

            tree = OperatorTree("max", "x", "sin")
            assert tree.formula == "max(x, sin(x))"
            assert OperatorTree.parse("max(sin(x), x)") == tree
            assert OperatorTree.unary("gelu").formula == "gelu(x)"

    Args:
        binary: Name of the binary operator; ``"left"`` makes a unary activation.
        left: Name of the unary operator for the first operand.
        right: Name of the unary operator for the second operand (ignored when ``binary`` is
            ``"left"``).
    """

    binary: str
    left: str
    right: str = "x"

    def __post_init__(self) -> None:
        for field, value in (("binary", self.binary), ("left", self.left), ("right", self.right)):
            if not isinstance(value, str):
                raise TypeError(f"OperatorTree.{field} must be an operator name (str), got {value!r}")
        get_binary(self.binary)
        get_unary(self.left)
        get_unary(self.right)

    @classmethod
    def unary(cls, name: str) -> "OperatorTree":
        """The unary activation ``name(x)``, i.e. ``OperatorTree("left", name, "x")``."""
        return cls("left", name, "x")

    @property
    def is_unary(self) -> bool:
        """Whether the binary is ``left``, so that only the left unary is computed."""
        return self.binary == "left"

    @property
    def formula(self) -> str:
        """Readable form: ``max(x, sin(x))``; a unary tree prints as ``gelu(x)``, the identity as ``x``."""
        if self.is_unary:
            return _operand(self.left)
        return f"{self.binary}({_operand(self.left)}, {_operand(self.right)})"

    @property
    def key(self) -> tuple[str, str, str]:
        """Canonical ``(binary, left, right)``: equal keys mean the trees compute the same function.

        Operands of commutative binaries are sorted, ``left`` trees drop their right operand,
        ``max0`` becomes ``relu`` (same function), and identities with equal operands, ``zero``,
        ``one`` fold to a unary tree (``add(u, zero)``, ``mul(u, one)``, ``max(u, u)`` -> ``u``).
        Trees with different keys may still be equivalent; ``OperatorTree(*tree.key)`` is the
        canonical tree.
        """
        return _canonical(self.binary, self.left, self.right)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OperatorTree):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        return self.formula

    @classmethod
    def parse(cls, formula: str) -> "OperatorTree":
        """The tree whose :attr:`formula` is ``formula`` (whitespace is free).

        Accepts ``x``, ``name(x)`` and ``binary(a, b)`` where each operand is ``x`` or
        ``name(x)``. Raises ValueError naming the formula and the offending token or name.
        """
        if not isinstance(formula, str):
            raise TypeError(f"activation formula must be a str, got {formula!r}")
        return _Parser(formula).parse()


class _Parser:
    """Recursive descent over ``tree := operand | binary '(' operand ',' operand ')'``."""

    def __init__(self, formula: str) -> None:
        self.formula = formula
        self.tokens = [(m.group(), m.start()) for m in _TOKEN.finditer(formula)]
        self.i = 0

    def _error(self, message: str) -> ValueError:
        return ValueError(f"cannot parse activation formula {self.formula!r}: {message}")

    def _unexpected(self, wanted: str) -> ValueError:
        """Error for the current token (or the end) when ``wanted`` was expected."""
        if self.i >= len(self.tokens):
            return self._error(f"unexpected end; expected {wanted}")
        token, pos = self.tokens[self.i]
        return self._error(f"unexpected token {token!r} at position {pos}; expected {wanted}")

    def _peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def _take(self, expected: str) -> str:
        """Consume one token: a name if ``expected`` is "name", else exactly ``expected``."""
        token = self._peek()
        is_name = token is not None and (token[0].isalpha() or token[0] == "_")
        if (expected == "name" and not is_name) or (expected != "name" and token != expected):
            raise self._unexpected("an operator name" if expected == "name" else repr(expected))
        assert token is not None
        self.i += 1
        return token

    def _operand(self) -> str:
        """``x`` or ``name(x)``; returns the unary name (``"x"`` for the identity)."""
        name = self._take("name")
        if name == "x" and self._peek() != "(":
            return "x"
        self._take("(")
        if self._peek() != "x":
            raise self._unexpected(f"x, the only argument of unary {name!r} (trees are binary(u(x), v(x)))")
        self._take("x")
        self._take(")")
        return name

    def parse(self) -> OperatorTree:
        try:
            tree = self._tree()
        except ValueError as err:
            if str(err).startswith("cannot parse"):
                raise
            raise self._error(str(err)) from None  # an unknown operator name
        if self.i < len(self.tokens):
            token, pos = self.tokens[self.i]
            raise self._error(f"unexpected token {token!r} at position {pos}; expected end")
        return tree

    def _tree(self) -> OperatorTree:
        name = self._take("name")
        if name == "x" and self._peek() is None:
            return OperatorTree.unary("x")
        self._take("(")
        first = self._operand()
        if self._peek() == ")":  # name(arg): a unary tree, whose argument must be x
            self._take(")")
            if name in BINARY:
                raise self._error(f"binary operator {name!r} needs two operands: {name}(x, sin(x))")
            if first != "x":
                raise self._error(f"the argument of unary {name!r} must be x, got {_operand(first)!r}")
            return OperatorTree.unary(name)
        if self._peek() != ",":
            raise self._unexpected("',' or ')'")
        self._take(",")
        second = self._operand()
        self._take(")")
        get_binary(name)
        return OperatorTree(name, first, second)


def _scaled(scale: nn.Parameter, x: Tensor) -> Tensor:
    """scale · x; just x where the scale is frozen at exactly 1 on the CPU (every stage-1 candidate).

    The product and its backward are two full passes over the activation, a third of ``relu(x)``'s
    cost in a LeNet-5 train step. The check reads the value on every call (a CPU read, no device
    sync), so a frozen scale that is changed later is used from then on. On other devices, and
    when tracing or compiling, the product stays.
    """
    if (scale.requires_grad or scale.device.type != "cpu" or torch.jit.is_tracing()
            or torch.compiler.is_compiling() or scale.item() != 1.0):
        return scale * x
    return x


class TreeActivation(nn.Module):
    """An activation module computing ``β · tree(α · x)`` for an :class:`OperatorTree`.

    ``forward(x) = beta * binary(left(alpha * x), right(alpha * x))``; for a unary tree the right
    operand is not computed. ``alpha`` and ``beta`` are 0-dim parameters initialised to 1, trainable
    only when ``learn_scale`` (SAFS's stage 2). Learnable operators (acon, srs, tanhsoft1, mix) own
    their parameters, which are always trainable. In training, a binary tree whose three operators
    all know their derivatives (:attr:`Operator.parts <safs_optuna.operators.Operator>`) is one
    autograd node (:mod:`safs_optuna.derivatives`); the values are the same either way.

    Example:

        .. code-block:: python

            import torch
            from safs_optuna.activation import OperatorTree, TreeActivation

            act = TreeActivation(OperatorTree.parse("max(x, sin(x))"))
            y = act(torch.randn(8))
            act.learn_scale = True  # alpha and beta now receive gradients

    Args:
        tree: The operator tree, or its formula.
        learn_scale: Whether ``alpha`` and ``beta`` are trainable.
    """

    def __init__(self, tree: OperatorTree | str, learn_scale: bool = False) -> None:
        super().__init__()
        if isinstance(tree, str):
            tree = OperatorTree.parse(tree)
        if not isinstance(tree, OperatorTree):
            raise TypeError(f"TreeActivation needs an OperatorTree or a formula, got {tree!r}")
        self.tree = tree
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.beta = nn.Parameter(torch.tensor(1.0))
        self.learn_scale = learn_scale
        self.left_op = get_unary(tree.left).build()
        # A unary tree builds nothing for its ignored operand: no dead parameters, no wasted compute.
        self.right_op: nn.Module | None = None if tree.is_unary else get_unary(tree.right).build()
        self.binary_op: nn.Module | None = None if tree.is_unary else get_binary(tree.binary).build()

    @property
    def learn_scale(self) -> bool:
        """Whether ``alpha`` and ``beta`` are trainable; setting it toggles their ``requires_grad``."""
        return self.alpha.requires_grad

    @learn_scale.setter
    def learn_scale(self, value: bool) -> None:
        self.alpha.requires_grad_(bool(value))
        self.beta.requires_grad_(bool(value))

    def forward(self, x: Tensor) -> Tensor:
        u = _scaled(self.alpha, x)
        if self.binary_op is None or self.right_op is None:
            return _scaled(self.beta, self.left_op(u))
        ops = (self.left_op, self.right_op, self.binary_op)
        parts = [getattr(op, "parts", None) for op in ops]
        if all(p is not None for p in parts):
            params = [tuple(op.parameters()) for op in ops]
            if wants_graph(u, *params[0], *params[1], *params[2]):
                # The whole tree as one autograd node: see safs_optuna.derivatives.
                return _scaled(self.beta, tree_node(parts[0], params[0], parts[1], params[1], parts[2], params[2], u))
        return _scaled(self.beta, self.binary_op(self.left_op(u), self.right_op(u)))

    def extra_repr(self) -> str:
        return f"formula={self.tree.formula!r}, learn_scale={self.learn_scale}"
