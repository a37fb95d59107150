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
``torch.jit.trace`` (exporters get the plain forward formulas; only the training path of SRS looks
at its data, to skip the gradient masks of clamps that no element reached).

Speed: an activation runs over every element of a feature map, forward and backward, so on a CPU
each extra elementwise pass shows in the train step (``benchmarks/speed.py``). The operators
are therefore written with the cheap kernels of eager PyTorch: exp2 (for exp, where it is the
faster kernel), log, sigmoid and arithmetic instead of expm1, log1p, tanh, softplus, sinh, asinh
and torch.where (5-20x slower per element on CPU); clamps are ``F.hardtanh``, whose backward is
one fused kernel where ``torch.clamp``'s builds masks; and operators whose autograd graph has
many nodes are ``torch.autograd.Function`` with an analytic backward. They compute the same functions as the textbook formulas up to float32
rounding (absolute differences of about 1e-7 near 0, where e.g. exp(x) - 1 replaces expm1(x);
relative differences below 1e-6 where exp is computed as exp2).
At the exact bound of a saturating clamp the gradient is 0 (hardtanh) rather than the inner
slope; elsewhere gradients are the analytic ones. The Functions are first-order: a second
derivative through them raises (they are ``once_differentiable``).

``acon``, ``srs``, ``tanhsoft1`` and ``mix`` have learnable parameters: their :attr:`Operator.factory`
builds a fresh module (with its own parameters) for every use; the others are plain functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

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
# exp(x) = exp2(x · log2 e): see _exp.
_LOG2_E = 1.4426950408889634
_EXP2_IS_FAST = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


# --- fast building blocks ----------------------------------------------------------------------

_aten = torch.ops.aten


def _clamp(x: Tensor, low: float, high: float) -> Tensor:
    """torch.clamp's values; its backward is hardtanh's single kernel instead of mask + where."""
    return F.hardtanh(x, low, high)


def _custom(function: type[torch.autograd.Function], plain: Callable[..., Tensor], *args: Any) -> Tensor:
    """``function.apply(*args)`` when a gradient is wanted, else ``plain(*args)`` (the same values).

    The plain path keeps inference cheap (nothing saved for a backward) and gives exporters
    (``torch.export``, ``torch.jit.trace``) ordinary ATen ops instead of a Python function. It may
    work in place on its own intermediates, so it is never the path that autograd differentiates.
    """
    exporting = torch.compiler.is_exporting() or torch.jit.is_tracing()
    wanted = any(isinstance(a, Tensor) and a.requires_grad for a in args)
    if exporting or not (torch.is_grad_enabled() and wanted):
        return plain(*args)
    return function.apply(*args)


def _exp(x: Tensor) -> Tensor:
    """exp(x) as exp2(x · log2 e) where that kernel is the fast one, else torch.exp.

    On x86 CPUs PyTorch vectorizes exp2 (AVX2, AVX512) but sends float exp to the math library,
    about 3x slower per element; on CUDA both are one instruction. The rounding of x · log2 e
    adds a relative error below 1e-6 for |x| <= 10 (4e-6 at the clamp of 60 SRS uses).
    """
    if x.device.type != "cpu" or _EXP2_IS_FAST:
        return torch.exp2(x * _LOG2_E)
    return torch.exp(x)


def _exp_(x: Tensor) -> Tensor:
    """:func:`_exp` in place on ``x`` (a buffer of the caller's own)."""
    if x.device.type != "cpu" or _EXP2_IS_FAST:
        return x.mul_(_LOG2_E).exp2_()
    return x.exp_()


def _log_sigmoid_abs(s: Tensor) -> Tensor:
    """log σ(|x|) = -log(1 + exp(-|x|)) from s = σ(x): the smooth part of softplus and logsigmoid."""
    # σ(|x|) = max(σ(x), 1 - σ(x)) lies in [0.5, 1], so its log is safe; log of it rather than
    # log1p(exp(-|x|)): log1p is one of the slow kernels.
    # max(s, 1 - s) = 0.5 + |s - 0.5|, in place on one buffer: every fresh feature-map-sized
    # tensor costs page faults on CPU.
    return (s - 0.5).abs_().add_(0.5).log_()


# Each Function below computes its value with a module-level helper (``_<name>_value``, or
# ``_<name>_parts`` when the backward needs intermediates too); ``_custom``'s plain path calls the
# same helper, so both paths give the same values.


def _tanh_value(x: Tensor) -> Tensor:
    # tanh(x) = 2σ(2x) - 1: sigmoid is one of the fastest CPU kernels, torch.tanh one of the slowest.
    return (x * 2.0).sigmoid_().mul_(2.0).sub_(1.0)


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = _tanh_value(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return _aten.tanh_backward(g, y)


def _softplus_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """(softplus(x), σ(x)); softplus(x) = relu(x) - log σ(|x|) and softplus' = σ."""
    s = torch.sigmoid(x)
    return torch.relu(x).sub_(_log_sigmoid_abs(s)), s


class _Softplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, s = _softplus_parts(x)
        ctx.save_for_backward(s)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return g * s


def _logsigmoid_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """(log σ(x), σ(x)); log σ(x) = min(x, 0) + log σ(|x|) and its slope is 1 - σ(x)."""
    s = torch.sigmoid(x)
    return torch.clamp(x, max=0.0).add_(_log_sigmoid_abs(s)), s


class _LogSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, s = _logsigmoid_parts(x)
        ctx.save_for_backward(s)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return torch.addcmul(g, g, s, value=-1.0)  # g (1 - σ(x))


def _elu_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """(relu(x), exp(min(x, 0))); elu(x) = relu(x) + exp(min(x, 0)) - 1, and elu'(x) = exp(min(x, 0))."""
    negative = torch.clamp(x, max=0.0)
    return x - negative, _exp(negative)


def _elu_value(x: Tensor) -> Tensor:
    positive, e = _elu_parts(x)
    return positive.add_(e).sub_(1.0)


class _ELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        positive, e = _elu_parts(x)
        ctx.save_for_backward(e)
        return positive.add_(e).sub_(1.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (e,) = ctx.saved_tensors
        return g * e


# F.selu's constants (Klambauer et al. 2017).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu_value(x: Tensor) -> Tensor:
    positive, e = _elu_parts(x)
    return positive.add_(e, alpha=_SELU_ALPHA).sub_(_SELU_ALPHA).mul_(_SELU_SCALE)


class _SELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _selu_value(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        # The kernel F.selu's own backward uses.
        return _aten.elu_backward(g, _SELU_ALPHA, _SELU_SCALE, 1.0, False, x)


def _mish_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """(tanh(softplus(x)), exp(x)) without tanh or softplus: with e = exp(x), n = e(e + 2),
    tanh(log(1 + e)) = n / (n + 2). Beyond x = 20 the ratio is 1 in float32, so x is capped there."""
    e = _exp_(torch.clamp(x, max=20.0))
    n = (e + 2.0).mul_(e)
    return n / (n + 2.0), e


def _mish_value(x: Tensor) -> Tensor:
    return _mish_parts(x)[0].mul_(x)


class _Mish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        t, e = _mish_parts(x)
        ctx.save_for_backward(x, t, e)
        return x * t

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, t, e = ctx.saved_tensors
        # mish' = t + x σ(x) (1 - t²), σ(x) = e / (1 + e).
        slope = _aten.tanh_backward(x * e / (e + 1.0), t).add_(t)
        return slope.mul_(g)


def _symlog_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    d = torch.abs(x).add_(1.0)
    return torch.copysign(torch.log(d), x), d


class _Symlog(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, d = _symlog_parts(x)
        ctx.save_for_backward(d)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        return g / d  # 1 / (1 + |x|): the slope 1 at 0, from both sides


def _symexp_parts(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    a = torch.abs(x)
    e = _exp_(_clamp(a, -1.0, _EXP_CLAMP))
    return torch.copysign(e - 1.0, x), a, e


class _Symexp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, a, e = _symexp_parts(x)
        ctx.save_for_backward(a, e)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        a, e = ctx.saved_tensors
        return _aten.hardtanh_backward(g * e, a, -1.0, _EXP_CLAMP)  # exp(|x|), 0 once saturated


def _exp_pair(x: Tensor) -> tuple[Tensor, Tensor]:
    """(exp(c), exp(-c)) for c = x clamped to [-10, 10]: sinh and cosh without their slow kernels."""
    e = _exp_(_clamp(x, -_EXP_CLAMP, _EXP_CLAMP))
    return e, torch.reciprocal(e)


class _Sinh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        e, r = _exp_pair(x)
        ctx.save_for_backward(x, e, r)
        return (e - r).mul_(0.5)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, e, r = ctx.saved_tensors
        return _aten.hardtanh_backward((e + r).mul_(0.5).mul_(g), x, -_EXP_CLAMP, _EXP_CLAMP)


class _Cosh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        e, r = _exp_pair(x)
        ctx.save_for_backward(x, e, r)
        return (e + r).mul_(0.5)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, e, r = ctx.saved_tensors
        return _aten.hardtanh_backward((e - r).mul_(0.5).mul_(g), x, -_EXP_CLAMP, _EXP_CLAMP)


def _asinh_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    a = torch.abs(x)
    h = torch.hypot(a, torch.ones((), dtype=x.dtype, device=x.device))  # sqrt(x² + 1), no overflow
    return torch.copysign(torch.log(h + a), x), h


class _Asinh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, h = _asinh_parts(x)
        ctx.save_for_backward(h)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (h,) = ctx.saved_tensors
        return g / h


# sinc's safe branch: |x| is raised to at least this, where sin(x)/x = 1 in float32 already
# (1 - x²/6 rounds to 1) and the true slope, -x/3, is below 4e-7.
_SINC_EPS = 1e-6


def _sinc_parts(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    a = torch.abs(x).clamp_min_(_SINC_EPS)
    xs = torch.copysign(a, x)
    return torch.sin(xs).div_(xs), xs, a


class _Sinc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, xs, a = _sinc_parts(x)
        ctx.save_for_backward(y, xs, a)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        y, xs, a = ctx.saved_tensors
        slope = torch.cos(xs).sub_(y).div_(xs)  # (cos x - sinc x) / x
        return _aten.threshold_backward(slope.mul_(g), a, _SINC_EPS)  # 0 inside the safe branch


def _softsign_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    r = torch.reciprocal(torch.abs(x).add_(1.0))
    return x * r, r


class _Softsign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, r = _softsign_parts(x)
        ctx.save_for_backward(r)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (r,) = ctx.saved_tensors
        return g * r * r  # 1 / (1 + |x|)²


def _sqrt_abs_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sqrt(torch.abs(x).add_(_SQRT_EPS))
    return s - math.sqrt(_SQRT_EPS), s


class _SqrtAbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, s = _sqrt_abs_parts(x)
        ctx.save_for_backward(x, s)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        return torch.sign(x).mul_(g).div_(s).mul_(0.5)  # sign(x) / (2 sqrt(|x| + eps)), 0 at 0


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
    return torch.square(_clamp(x, -_SQUARE_CLAMP, _SQUARE_CLAMP))


def cube(x: Tensor) -> Tensor:
    """x³, saturating at |x| = 1e2."""
    return torch.pow(_clamp(x, -_CUBE_CLAMP, _CUBE_CLAMP), 3)


def sqrt_abs(x: Tensor) -> Tensor:
    """sqrt(|x|), smoothed at 0 so that its gradient is finite."""
    return _custom(_SqrtAbs, lambda t: _sqrt_abs_parts(t)[0], x)


def exp(x: Tensor) -> Tensor:
    """exp(x), saturating at x = 10."""
    return _exp(_clamp(x, -math.inf, _EXP_CLAMP))


def sinh(x: Tensor) -> Tensor:
    """sinh(x), saturating at |x| = 10."""
    return _custom(_Sinh, _sinh_value, x)


def _sinh_value(x: Tensor) -> Tensor:
    e, r = _exp_pair(x)
    return (e - r).mul_(0.5)


def cosh(x: Tensor) -> Tensor:
    """cosh(x), saturating at |x| = 10."""
    return _custom(_Cosh, _cosh_value, x)


def _cosh_value(x: Tensor) -> Tensor:
    e, r = _exp_pair(x)
    return (e + r).mul_(0.5)


def tanh(x: Tensor) -> Tensor:
    """tanh(x)."""
    return _custom(_Tanh, _tanh_value, x)


def softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x))."""
    return _custom(_Softplus, lambda t: _softplus_parts(t)[0], x)


def logsigmoid(x: Tensor) -> Tensor:
    """log σ(x)."""
    return _custom(_LogSigmoid, lambda t: _logsigmoid_parts(t)[0], x)


def elu(x: Tensor) -> Tensor:
    """x if x > 0 else exp(x) - 1."""
    return _custom(_ELU, _elu_value, x)


def selu(x: Tensor) -> Tensor:
    """Scaled ELU (F.selu's constants)."""
    return _custom(_SELU, _selu_value, x)


def mish(x: Tensor) -> Tensor:
    """x · tanh(softplus(x))."""
    return _custom(_Mish, _mish_value, x)


def softsign(x: Tensor) -> Tensor:
    """x / (1 + |x|)."""
    return _custom(_Softsign, lambda t: _softsign_parts(t)[0], x)


def asinh(x: Tensor) -> Tensor:
    """asinh(x) = sign(x) · log(|x| + sqrt(x² + 1))."""
    return _custom(_Asinh, lambda t: _asinh_parts(t)[0], x)


def sinc(x: Tensor) -> Tensor:
    """sin(x) / x, with sinc(0) = 1 (the unnormalised sinc of activation search)."""
    return _custom(_Sinc, lambda t: _sinc_parts(t)[0], x)


def max0(x: Tensor) -> Tensor:
    """max(x, 0) — the same function (and gradient) as relu."""
    return torch.relu(x)


def min0(x: Tensor) -> Tensor:
    """min(x, 0)."""
    # Gradient 1 below 0 and 0 from 0 on, as -relu(-x) has.
    return _clamp(x, -math.inf, 0.0)


def gauss(x: Tensor) -> Tensor:
    """exp(-x²)."""
    # No clamp needed: x² overflows to inf only beyond |x| ~ 1.8e19, where exp(-inf) = 0 and the
    # gradient -2x·0 = 0 stay finite.
    return _exp(torch.square(x).neg_())


def symlog(x: Tensor) -> Tensor:
    """sign(x) · log(1 + |x|)."""
    return _custom(_Symlog, lambda t: _symlog_parts(t)[0], x)


def symexp(x: Tensor) -> Tensor:
    """sign(x) · (exp(|x|) - 1), saturating at |x| = 10."""
    return _custom(_Symexp, lambda t: _symexp_parts(t)[0], x)


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
    return elu(x) * torch.sigmoid(x)


def leaky_relu(x: Tensor) -> Tensor:
    """max(x, 0.01·x)."""
    return F.leaky_relu(x, 0.01)


# --- binary functions --------------------------------------------------------------------------


class _Extremum(torch.autograd.Function):
    """torch.maximum (``largest``) or torch.minimum with its own gradient rule (ties split the
    gradient evenly) in cheap kernels."""

    @staticmethod
    def forward(ctx, a, b, largest):
        ctx.save_for_backward(a, b)
        ctx.largest = largest
        return _plain_extremum(a, b, largest)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        # share of a: 1 where a wins, 1/2 on ties, 0 where b wins.
        ga = torch.addcmul(g, g, torch.sign(a - b) if ctx.largest else torch.sign(b - a)).mul_(0.5)
        return ga, g - ga, None


def _plain_extremum(a: Tensor, b: Tensor, largest: bool) -> Tensor:
    return torch.maximum(a, b) if largest else torch.minimum(a, b)


class _SafeDiv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        r = torch.reciprocal(torch.abs(b).add_(1.0))
        y = a * r
        ctx.save_for_backward(b, y, r)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        b, y, r = ctx.saved_tensors
        ga = g * r
        # d/db a / (1 + |b|) = -sign(b) · y / (1 + |b|); sign(0) = 0 as abs's gradient at 0.
        gb = torch.sign(b).neg_().mul_(ga).mul_(y)
        return ga, gb


def _safe_div_value(a: Tensor, b: Tensor) -> Tensor:
    return a / (torch.abs(b) + 1.0)


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
    return _custom(_Extremum, _plain_extremum, a, b, True)


def minimum(a: Tensor, b: Tensor) -> Tensor:
    """min(a, b)."""
    return _custom(_Extremum, _plain_extremum, a, b, False)


def left(a: Tensor, b: Tensor) -> Tensor:
    """a (ignores b)."""
    return a


def sigmoid_gate(a: Tensor, b: Tensor) -> Tensor:
    """σ(a) · b."""
    return torch.sigmoid(a) * b


def safe_div(a: Tensor, b: Tensor) -> Tensor:
    """a / (1 + |b|): a division that cannot divide by zero."""
    return _custom(_SafeDiv, _safe_div_value, a, b)


# --- operators with learnable parameters -------------------------------------------------------
# Their Functions take the parameters as 0-dim tensors and return one gradient per parameter:
# a dot product over the elements, where autograd would build, reduce and free a full-size
# product per parameter.


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Sum of a·b over all elements, as a 0-dim tensor."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _acon_parts(x: Tensor, p1: Tensor, p2: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    u = x * (p1 - p2)
    z = u * beta
    s = torch.sigmoid(z)
    return (x * p2).addcmul_(u, s), u, z, s


class _ACON(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p1, p2, beta):
        y, u, z, s = _acon_parts(x, p1, p2, beta)
        ctx.save_for_backward(x, p1, p2, u, z, s)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, p1, p2, u, z, s = ctx.saved_tensors
        # y = u σ(βu) + p2 x with u = (p1 - p2) x: dy/du = silu'(βu), dy/dβ = u² σ'(βu).
        h = _aten.silu_backward(g, z)
        gx = (g * p2).addcmul_(h, p1 - p2)
        gp1 = _dot(h, x)
        gp2 = _dot(g, x) - gp1
        gbeta = _dot(_aten.sigmoid_backward(g, s).mul_(u), u)
        return gx, gp1, gp2, gbeta


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
        return _custom(_ACON, lambda *a: _acon_parts(*a)[0], x, self.p1, self.p2, self.beta)


def _srs_guard(p: Tensor) -> Tensor:
    """|p| kept >= eps: SRS divides by its parameters."""
    return torch.clamp(torch.abs(p), min=_SRS_EPS)


def _srs_core(x: Tensor, a: Tensor | float, b: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
    """(y, e, r) of SRS for the guarded parameters a, b (0-dim tensors, or Python floats of the
    same values): y = x / max(x/a + e, eps), e = exp(min(-x/b, 60)), r = 1 / max(x/a + e, eps)."""
    # den = x/a + e as a division, not a product with a reciprocal: where x/a and e nearly cancel
    # (small a), the rounding of den decides y, so it is kept the textbook one.
    # In place where a buffer is not needed again: every fresh feature-map-sized tensor is a pass
    # over memory, and the backward keeps only y, e and r (the clamps show in e and r).
    e = _exp_(torch.div(x, b).neg_().clamp_max_(_SRS_EXP_CLAMP))
    r = torch.div(x, a).add_(e).clamp_min_(_SRS_EPS).reciprocal_()
    return x * r, e, r


def _srs_value(x: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """SRS of the raw parameters, in tensor ops only (what exporters see)."""
    return _srs_core(x, _srs_guard(alpha), _srs_guard(beta))[0]


_SRS_EPS_OF: dict[torch.dtype, float] = {}
_SRS_BOUNDS: dict[tuple[torch.dtype, str], tuple[float, float]] = {}


def _srs_eps(dtype: torch.dtype) -> float:
    """_SRS_EPS as a value of ``dtype``: the float guards of _SRS then equal _srs_guard's."""
    if dtype not in _SRS_EPS_OF:
        _SRS_EPS_OF[dtype] = torch.tensor(_SRS_EPS, dtype=dtype).item()
    return _SRS_EPS_OF[dtype]


def _srs_bounds(t: Tensor) -> tuple[float, float]:
    """e and r where SRS's clamps hold them, computed as _srs_core computes them for tensors like
    ``t`` (once per dtype and device type): e >= the first means -x/b reached 60, r >= the second
    means den fell to eps."""
    key = (t.dtype, t.device.type)
    if key not in _SRS_BOUNDS:
        e = _exp_(torch.tensor(_SRS_EXP_CLAMP, dtype=t.dtype, device=t.device))
        r = torch.tensor(_SRS_EPS, dtype=t.dtype, device=t.device).reciprocal_()
        _SRS_BOUNDS[key] = (e.item(), r.item())  # exact: values of the dtype
    return _SRS_BOUNDS[key]


class _SRS(torch.autograd.Function):
    """SRS of the raw parameters; their guards are inside, so they add no autograd nodes."""

    @staticmethod
    def forward(ctx, x, alpha, beta):
        # The parameters as Python numbers: the guards and the scalar factors of the backward are
        # then arithmetic instead of a dozen dispatched ops on 0-dim tensors per call (a fixed
        # cost that showed on LeNet-5's small fully connected activations).
        eps = _srs_eps(alpha.dtype)
        alpha_f, beta_f = alpha.item(), beta.item()
        a, b = max(abs(alpha_f), eps), max(abs(beta_f), eps)
        y, e, r = _srs_core(x, a, b)
        ctx.save_for_backward(y, e, r)
        # d|p|-guard / dp: sign(p) while |p| >= eps (the clamp passes it), else 0.
        ctx.scalars = (a, b, math.copysign(1.0, alpha_f) if abs(alpha_f) >= eps else 0.0,
                       math.copysign(1.0, beta_f) if abs(beta_f) >= eps else 0.0)
        # Which clamps are active anywhere (two reductions): the backward skips the mask passes
        # of inactive ones, which is every call while α, β stay near their initial values.
        e_bound, r_bound = _srs_bounds(x)
        ctx.exp_clamped = bool(e.max() >= e_bound)
        ctx.den_clamped = bool(r.max() >= r_bound)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        y, e, r = ctx.saved_tensors
        a, b, slope_alpha, slope_beta = ctx.scalars
        # y = x / D, D = max(den, eps), den = x/a + e, e = exp(min(-x/b, 60)):
        # dy/dx = r (1 - y dD/dx), dD/dx = 1/a - e/b; dy/da = y² / a², dy/db = -y² e / b²,
        # each 0 where a clamp is active (e's part where -x/b >= 60, all of D's where den <= eps).
        e_bound, r_bound = _srs_bounds(y)
        if ctx.exp_clamped:
            e = e * (e < e_bound)
        gy = g * y
        if ctx.den_clamped:  # D is the constant eps there: dy/dx = r, and nothing reaches a or b
            gy.mul_(r < r_bound)
        galpha = _dot(gy, y) * (slope_alpha / (a * a)) if ctx.needs_input_grad[1] else None
        ge = gy * e
        gbeta = _dot(ge, y) * (-slope_beta / (b * b)) if ctx.needs_input_grad[2] else None
        # r (g - g y dD/dx) = r (g + g y e/b - g y/a), in the buffer of g y e.
        gx = ge.mul_(1.0 / b).add_(gy, alpha=-1.0 / a).add_(g).mul_(r)
        return gx, galpha, gbeta


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
        return _custom(_SRS, _srs_value, x, self.alpha, self.beta)


def _tanhsoft1_parts(x: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(tanh(αx)·softplus(x), tanh(αx), softplus(x), σ(x))."""
    t = (x * (alpha * 2.0)).sigmoid_().mul_(2.0).sub_(1.0)  # tanh(αx), as _tanh_value
    sp, s = _softplus_parts(x)
    return t * sp, t, sp, s


class _TanhSoft1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        y, t, sp, s = _tanhsoft1_parts(x, alpha)
        # y = tanh(αx) softplus(x): dy/dx = α (1 - t²) sp + t σ(x) and dy/dα = x (1 - t²) sp.
        # The backward keeps the two products, not their three factors: one buffer less to hold
        # until the backward, and fewer passes in it.
        ctx.save_for_backward(x, alpha, _aten.tanh_backward(sp, t), s.mul_(t))
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, alpha, slope_in, ts = ctx.saved_tensors  # (1 - t²) sp, t σ(x)
        q = g * slope_in
        galpha = _dot(q, x) if ctx.needs_input_grad[1] else None
        return q.mul_(alpha).addcmul_(g, ts), galpha


class TanhSoft1(nn.Module):
    """TanhSoft-1 (Biswas et al. 2021): tanh(α·x) · softplus(x), learnable α.

    Initialised as the SAFS code does (α = 1.0).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x: Tensor) -> Tensor:
        return _custom(_TanhSoft1, lambda *a: _tanhsoft1_parts(*a)[0], x, self.alpha)


class _Mix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, beta):
        ctx.save_for_backward(a, b, beta)
        return _mix_value(a, b, beta)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        a, b, beta = ctx.saved_tensors
        ga = g * beta
        gbeta = (_dot(g, a) - _dot(g, b)) if ctx.needs_input_grad[2] else None
        return ga, g - ga, gbeta


class Mix(nn.Module):
    """Learnable mix β·a + (1 - β)·b, β initialised to 0.5 (the plain average)."""

    def __init__(self, beta: float = 0.5) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return _custom(_Mix, _mix_value, a, b, self.beta)


def _mix_value(a: Tensor, b: Tensor, beta: Tensor) -> Tensor:
    return torch.lerp(b, a, beta)  # b + β(a - b)


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
    _unary("elu", elu, "x if x > 0 else exp(x) - 1"),
    _unary("tanh", tanh, "tanh(x)"),
    _unary("softplus", softplus, "log(1 + exp(x))"),
    _unary("logsigmoid", logsigmoid, "log σ(x)"),
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
    _unary("asinh", asinh, "asinh(x)"),
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
    _unary("mish", mish, "x · tanh(softplus(x))"),
    _unary("selu", selu, "scaled ELU (self-normalising)"),
    _unary("softsign", softsign, "x / (1 + |x|)"),
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
