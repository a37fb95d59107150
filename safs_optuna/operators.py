"""Unary and binary operator registries for operator-tree activations.

An activation is a tree ``binary(unary1(x), unary2(x))`` (see :mod:`safs_optuna.activation`);
this module holds the operators it is built from, by name:

- :data:`UNARY` — the SAFS paper's 13 candidates (relu6, hardswish, swish, tanhsoft1, acon, gelu,
  srs, elu, tanh, softplus, logsigmoid, symlog, symexp), ``relu``, the classic operators of
  activation-function search (Ramachandran, Zoph & Le 2017: ``x neg abs square cube sqrt_abs exp
  sin cos sinh cosh asinh atan sinc max0 min0 sigmoid erf gauss``), the constants ``zero`` and
  ``one``, and a few more common activations (mish, selu, softsign, leaky_relu, hardtanh,
  hardsigmoid, elish).
- :data:`BINARY` — ``add sub mul max min left sigmoid_gate safe_div mix``; ``left(a, b) = a`` turns a
  tree into a unary-only activation.

Every operator is numerically guarded: for any finite float32 input in [-1e4, 1e4] its output
and its gradient are finite. Fast-growing operators saturate (their input is clamped, so the
gradient is zero beyond the bound, as for a saturating unit), removable singularities use a
safe branch, and denominators are kept away from zero. All operators are plain torch tensor ops
without data-dependent Python control flow, so models survive ``torch.export.export`` and
``torch.jit.trace``.

``acon``, ``srs``, ``tanhsoft1`` and ``mix`` have learnable parameters: their :attr:`Operator.factory`
builds a fresh module (with its own parameters) for every use; the others are plain functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Operator",
    "UNARY",
    "BINARY",
    "get_unary",
    "get_binary",
    "ACON",
    "SRS",
    "TanhSoft1",
    "Mix",
    "UnaryFunction",
    "BinaryFunction",
]

# exp-family inputs are clamped to [-10, 10]: outputs stay within e^10 ~ 2.2e4, finite even in
# float16 (max 65504), so mixed precision cannot turn them into inf either.
_EXP_CLAMP = 10.0
# Polynomials saturate where their output reaches 1e6, far beyond the pre-activations of a
# trained network but small enough that a binary product of two stays finite in float32.
_SQUARE_CLAMP = 1e3
_CUBE_CLAMP = 1e2
# sqrt has an infinite slope at 0; sqrt(|x| + eps) - sqrt(eps) keeps f(0) = 0 and bounds the
# slope by 1 / (2 sqrt(eps)) = 50, while differing from sqrt(|x|) by less than 0.01.
_SQRT_EPS = 1e-4
# SRS's exp(-x/beta) grows without bound for x -> -inf; past e^60 the quotient is ~0 anyway.
_SRS_EXP_CLAMP = 60.0
# Keeps the learnable parameters of SRS off zero (they divide) and its denominator positive, even
# after training moves them to values where x/alpha + exp(-x/beta) could reach zero.
_SRS_EPS = 1e-3


# --- unary functions ---------------------------------------------------------------------------
# Module-level named functions (no lambdas) so that modules holding them pickle and deepcopy.


def identity(x: Tensor) -> Tensor:
    """x."""
    return x


def neg(x: Tensor) -> Tensor:
    """-x."""
    return -x


def square(x: Tensor) -> Tensor:
    """x², saturating at |x| = 1e3."""
    return torch.square(torch.clamp(x, -_SQUARE_CLAMP, _SQUARE_CLAMP))


def cube(x: Tensor) -> Tensor:
    """x³, saturating at |x| = 1e2."""
    return torch.pow(torch.clamp(x, -_CUBE_CLAMP, _CUBE_CLAMP), 3)


def sqrt_abs(x: Tensor) -> Tensor:
    """sqrt(|x|), smoothed at 0 so that its gradient is finite."""
    return torch.sqrt(torch.abs(x) + _SQRT_EPS) - math.sqrt(_SQRT_EPS)


def exp(x: Tensor) -> Tensor:
    """exp(x), saturating at x = 10."""
    return torch.exp(torch.clamp(x, max=_EXP_CLAMP))


def sinh(x: Tensor) -> Tensor:
    """sinh(x), saturating at |x| = 10."""
    return torch.sinh(torch.clamp(x, -_EXP_CLAMP, _EXP_CLAMP))


def cosh(x: Tensor) -> Tensor:
    """cosh(x), saturating at |x| = 10."""
    return torch.cosh(torch.clamp(x, -_EXP_CLAMP, _EXP_CLAMP))


def sinc(x: Tensor) -> Tensor:
    """sin(x) / x, with sinc(0) = 1 (the unnormalised sinc of activation search)."""
    # torch.sinc is sin(pi x) / (pi x) and handles x = 0 in both output and gradient.
    return torch.sinc(x / math.pi)


def max0(x: Tensor) -> Tensor:
    """max(x, 0) — the same function (and gradient) as relu."""
    return torch.relu(x)


def min0(x: Tensor) -> Tensor:
    """min(x, 0)."""
    return -torch.relu(-x)


def gauss(x: Tensor) -> Tensor:
    """exp(-x²)."""
    # Clamping changes nothing visible (exp(-100) ~ 4e-44) but keeps x² finite for any input.
    return torch.exp(-torch.square(torch.clamp(x, -_EXP_CLAMP, _EXP_CLAMP)))


def symlog(x: Tensor) -> Tensor:
    """sign(x) · log(1 + |x|)."""
    # where() instead of sign(x) * ...: sign and abs have a zero gradient at 0, which would give
    # the slope 0 at x = 0 instead of the true 1.
    magnitude = torch.log1p(torch.where(x >= 0, x, -x))
    return torch.where(x >= 0, magnitude, -magnitude)


def symexp(x: Tensor) -> Tensor:
    """sign(x) · (exp(|x|) - 1), saturating at |x| = 10."""
    magnitude = torch.expm1(torch.clamp(torch.where(x >= 0, x, -x), max=_EXP_CLAMP))
    return torch.where(x >= 0, magnitude, -magnitude)


def zero(x: Tensor) -> Tensor:
    """0."""
    # x * 0 rather than zeros_like: the result stays in the autograd graph (gradient 0), and a NaN
    # input still shows as NaN, so divergence is detected instead of hidden.
    return x * 0.0


def one(x: Tensor) -> Tensor:
    """1."""
    return x * 0.0 + 1.0


def elish(x: Tensor) -> Tensor:
    """ELiSH: x·σ(x) for x >= 0, (exp(x) - 1)·σ(x) for x < 0 (Basirat & Roth 2018)."""
    # elu(x) is x for x > 0 and exp(x) - 1 otherwise, so one product covers both branches.
    return F.elu(x) * torch.sigmoid(x)


def leaky_relu(x: Tensor) -> Tensor:
    """max(x, 0.01·x)."""
    return F.leaky_relu(x, 0.01)


# --- binary functions --------------------------------------------------------------------------


def add(a: Tensor, b: Tensor) -> Tensor:
    """a + b."""
    return a + b


def sub(a: Tensor, b: Tensor) -> Tensor:
    """a - b."""
    return a - b


def mul(a: Tensor, b: Tensor) -> Tensor:
    """a · b."""
    return a * b


def maximum(a: Tensor, b: Tensor) -> Tensor:
    """max(a, b)."""
    return torch.maximum(a, b)


def minimum(a: Tensor, b: Tensor) -> Tensor:
    """min(a, b)."""
    return torch.minimum(a, b)


def left(a: Tensor, b: Tensor) -> Tensor:
    """a (ignores b)."""
    return a


def sigmoid_gate(a: Tensor, b: Tensor) -> Tensor:
    """σ(a) · b."""
    return torch.sigmoid(a) * b


def safe_div(a: Tensor, b: Tensor) -> Tensor:
    """a / (1 + |b|): a division that cannot divide by zero."""
    return a / (1.0 + torch.abs(b))


# --- operators with learnable parameters -------------------------------------------------------


class ACON(nn.Module):
    """ACON-C (Ma et al. 2021): (p1 - p2)·x·σ(β·(p1 - p2)·x) + p2·x, scalar p1, p2, β.

    Initialised as the SAFS code does (``safs/models/activation.py``: ``alpha``, ``beta`` and
    ``acon_pp`` all 1.0), so it starts as the identity and learns to bend away from it.
    """

    def __init__(self, p1: float = 1.0, p2: float = 1.0, beta: float = 1.0) -> None:
        super().__init__()
        self.p1 = nn.Parameter(torch.tensor(float(p1)))
        self.p2 = nn.Parameter(torch.tensor(float(p2)))
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: Tensor) -> Tensor:
        d = (self.p1 - self.p2) * x
        return d * torch.sigmoid(self.beta * d) + self.p2 * x


class SRS(nn.Module):
    """Soft-Root-Sign (Zhou et al. 2020): x / (x/α + exp(-x/β)), learnable α, β.

    Initialised as the SAFS code does (α = β = 1.0, its shared scale parameters); the SRS paper
    itself suggests other starting values. With α = β = 1 the denominator is at least 1; the
    guards below only matter once training moves α, β (|α|, |β| kept >= 1e-3, denominator >= 1e-3).
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: Tensor) -> Tensor:
        alpha = torch.clamp(torch.abs(self.alpha), min=_SRS_EPS)
        beta = torch.clamp(torch.abs(self.beta), min=_SRS_EPS)
        den = x / alpha + torch.exp(torch.clamp(-x / beta, max=_SRS_EXP_CLAMP))
        return x / torch.clamp(den, min=_SRS_EPS)


class TanhSoft1(nn.Module):
    """TanhSoft-1 (Biswas et al. 2021): tanh(α·x) · softplus(x), learnable α.

    Initialised as the SAFS code does (α = 1.0).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.alpha * x) * F.softplus(x)


class Mix(nn.Module):
    """Learnable mix β·a + (1 - β)·b, β initialised to 0.5 (the plain average)."""

    def __init__(self, beta: float = 0.5) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.beta * a + (1.0 - self.beta) * b


# --- modules for parameter-free operators ------------------------------------------------------


class UnaryFunction(nn.Module):
    """A parameter-free unary operator as a module."""

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.name = name
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class BinaryFunction(nn.Module):
    """A parameter-free binary operator as a module."""

    def __init__(self, name: str, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.name = name
        self.fn = fn

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.fn(a, b)

    def extra_repr(self) -> str:
        return self.name


# --- the registries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Operator:
    """One named operator of the activation search space.

    Args:
        name: Registry name, as used in formulas (``"sin"`` in ``max(x, sin(x))``).
        arity: 1 (unary) or 2 (binary).
        fn: The function, for parameter-free operators.
        factory: Builds a fresh module with its own parameters, for learnable operators.
        commutative: Binary only: ``op(a, b) == op(b, a)``.
        description: The formula in words, for listings.
    """

    name: str
    arity: int
    fn: Callable[..., Tensor] | None
    factory: Callable[[], nn.Module] | None = None
    commutative: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.arity not in (1, 2):
            raise ValueError(f"operator {self.name!r}: arity must be 1 or 2, got {self.arity}")
        if (self.fn is None) == (self.factory is None):
            raise ValueError(f"operator {self.name!r}: give exactly one of fn and factory")
        if self.commutative and self.arity != 2:
            raise ValueError(f"operator {self.name!r}: only binary operators can be commutative")

    @property
    def learnable(self) -> bool:
        """Whether the operator has parameters of its own (built by :attr:`factory`)."""
        return self.factory is not None

    def build(self) -> nn.Module:
        """A module computing the operator: ``forward(x)`` if unary, ``forward(a, b)`` if binary.

        Learnable operators get fresh parameters on every call.
        """
        if self.factory is not None:
            return self.factory()
        assert self.fn is not None
        if self.arity == 1:
            return UnaryFunction(self.name, self.fn)
        return BinaryFunction(self.name, self.fn)


def _unary(name: str, fn: Callable[[Tensor], Tensor], description: str) -> Operator:
    return Operator(name, 1, fn, description=description)


def _learnable_unary(name: str, factory: Callable[[], nn.Module], description: str) -> Operator:
    return Operator(name, 1, None, factory, description=description)


_UNARY_LIST: list[Operator] = [
    # The SAFS paper's 13 candidates, in its order.
    _unary("relu6", F.relu6, "min(max(x, 0), 6)"),
    _unary("hardswish", F.hardswish, "x · relu6(x + 3) / 6"),
    _unary("swish", F.silu, "x · σ(x) (SiLU)"),
    _learnable_unary("tanhsoft1", TanhSoft1, "tanh(α·x) · softplus(x), learnable α"),
    _learnable_unary("acon", ACON, "ACON-C (p1 - p2)·x·σ(β(p1 - p2)x) + p2·x, learnable p1, p2, β"),
    _unary("gelu", F.gelu, "x · Φ(x) (exact, erf form)"),
    _learnable_unary("srs", SRS, "x / (x/α + exp(-x/β)), learnable α, β"),
    _unary("elu", F.elu, "x if x > 0 else exp(x) - 1"),
    _unary("tanh", torch.tanh, "tanh(x)"),
    _unary("softplus", F.softplus, "log(1 + exp(x))"),
    _unary("logsigmoid", F.logsigmoid, "log σ(x)"),
    _unary("symlog", symlog, "sign(x) · log(1 + |x|)"),
    _unary("symexp", symexp, "sign(x) · (exp(|x|) - 1), saturating at |x| = 10"),
    # The dense networks' default.
    _unary("relu", torch.relu, "max(x, 0)"),
    # Classic operators of activation-function search (Ramachandran et al. 2017).
    _unary("x", identity, "x"),
    _unary("neg", neg, "-x"),
    _unary("abs", torch.abs, "|x|"),
    _unary("square", square, "x², saturating at |x| = 1e3"),
    _unary("cube", cube, "x³, saturating at |x| = 1e2"),
    _unary("sqrt_abs", sqrt_abs, "sqrt(|x|), smoothed at 0"),
    _unary("exp", exp, "exp(x), saturating at x = 10"),
    _unary("sin", torch.sin, "sin(x)"),
    _unary("cos", torch.cos, "cos(x)"),
    _unary("sinh", sinh, "sinh(x), saturating at |x| = 10"),
    _unary("cosh", cosh, "cosh(x), saturating at |x| = 10"),
    _unary("asinh", torch.asinh, "asinh(x)"),
    _unary("atan", torch.atan, "atan(x)"),
    _unary("sinc", sinc, "sin(x) / x"),
    _unary("max0", max0, "max(x, 0)"),
    _unary("min0", min0, "min(x, 0)"),
    _unary("sigmoid", torch.sigmoid, "σ(x) = 1 / (1 + exp(-x))"),
    _unary("erf", torch.erf, "erf(x)"),
    _unary("gauss", gauss, "exp(-x²)"),
    _unary("zero", zero, "0"),
    _unary("one", one, "1"),
    # Other common activations.
    _unary("mish", F.mish, "x · tanh(softplus(x))"),
    _unary("selu", F.selu, "scaled ELU (self-normalising)"),
    _unary("softsign", F.softsign, "x / (1 + |x|)"),
    _unary("leaky_relu", leaky_relu, "max(x, 0.01·x)"),
    _unary("hardtanh", F.hardtanh, "clamp(x, -1, 1)"),
    _unary("hardsigmoid", F.hardsigmoid, "relu6(x + 3) / 6"),
    _unary("elish", elish, "x·σ(x) if x >= 0 else (exp(x) - 1)·σ(x)"),
]

_BINARY_LIST: list[Operator] = [
    Operator("add", 2, add, commutative=True, description="a + b"),
    Operator("sub", 2, sub, description="a - b"),
    Operator("mul", 2, mul, commutative=True, description="a · b"),
    Operator("max", 2, maximum, commutative=True, description="max(a, b)"),
    Operator("min", 2, minimum, commutative=True, description="min(a, b)"),
    Operator("left", 2, left, description="a (unary-only activation)"),
    Operator("sigmoid_gate", 2, sigmoid_gate, description="σ(a) · b"),
    Operator("safe_div", 2, safe_div, description="a / (1 + |b|)"),
    Operator("mix", 2, None, Mix, description="β·a + (1 - β)·b, learnable β (init 0.5)"),
]

UNARY: dict[str, Operator] = {op.name: op for op in _UNARY_LIST}
"""Unary operators by name (42)."""

BINARY: dict[str, Operator] = {op.name: op for op in _BINARY_LIST}
"""Binary operators by name (9)."""


def get_unary(name: str) -> Operator:
    """The unary operator ``name``; ValueError naming it and listing the valid names if unknown."""
    try:
        return UNARY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown unary operator {name!r}; valid: {', '.join(sorted(UNARY))}") from None


def get_binary(name: str) -> Operator:
    """The binary operator ``name``; ValueError naming it and listing the valid names if unknown."""
    try:
        return BINARY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown binary operator {name!r}; valid: {', '.join(sorted(BINARY))}") from None
