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
are therefore written with the cheap kernels of eager PyTorch: exp, log, sigmoid and arithmetic
instead of expm1, log1p, softplus, sinh, asinh and torch.where (5-20x slower per element on CPU).
exp and tanh themselves are fast only where MKL runs its vector code for them (Intel CPUs);
elsewhere exp is computed as exp2 and tanh from sigmoid (see ``_MKL_MATH_IS_FAST``). Clamps are
``F.hardtanh``, whose backward is one fused kernel where ``torch.clamp``'s builds masks.

Every operator but ``left`` also gives its *parts*, its value with its slope and the partials of
its parameters (see :mod:`safs_optuna.derivatives`): the operators with several autograd nodes train through them as
one node with an analytic backward, and a tree ``binary(unary(x), unary(x))`` trains as one node
instead of three, keeping fewer feature maps for its backward. They compute the same functions
as the textbook formulas up to float32 rounding (absolute differences of about 1e-7 near 0, where e.g. exp(x) - 1 replaces expm1(x);
relative differences below 1e-6 where exp is computed as exp2, and of a few 1e-7 where tanh is
computed from sigmoid).
At the exact bound of a saturating clamp the gradient is 0 (hardtanh) rather than the inner
slope; elsewhere gradients are the analytic ones. The nodes are first-order: a second
derivative through them raises (they are ``once_differentiable``).

``acon``, ``srs``, ``tanhsoft1`` and ``mix`` have learnable parameters: their :attr:`Operator.factory`
builds a fresh module (with its own parameters) for every use; the others are plain functions.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .derivatives import BinaryParts, UnaryParts, binary_node, unary_node

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


def _cpu_vendor() -> str:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD``, ...), or "" where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return next((v for v in ("GenuineIntel", "AuthenticAMD") if v in platform.processor()), "")


# PyTorch sends float exp and tanh on x86 CPUs to MKL's vector math library where it is built
# with MKL; MKL runs its AVX2/AVX-512 code for them only on Intel CPUs (about one arithmetic pass
# per call), elsewhere a generic path 3-7x slower. Where they are fast they are used as they are;
# elsewhere exp is exp2(x · log2 e) (PyTorch's own vectorized exp2) and tanh is 2σ(2x) - 1.
# The choice is fixed per machine: the two ways differ by float32 rounding only.
_SIMD = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
_MKL_MATH_IS_FAST = _SIMD and torch.backends.mkl.is_available() and _cpu_vendor() == "GenuineIntel"
_EXP_VIA_EXP2 = _SIMD and not _MKL_MATH_IS_FAST


# --- fast building blocks ----------------------------------------------------------------------

_aten = torch.ops.aten


def _clamp(x: Tensor, low: float, high: float) -> Tensor:
    """torch.clamp's values; its backward is hardtanh's single kernel instead of mask + where."""
    return F.hardtanh(x, low, high)


def wants_graph(*args: Any) -> bool:
    """Whether a gradient is wanted through ``args`` and nobody is exporting or tracing.

    Where it is not, operators compute their plain forward: cheap for inference (nothing saved
    for a backward), and ordinary ATen ops for exporters (``torch.export``, ``torch.jit.trace``)
    instead of a Python function. The plain forward may work in place on its own intermediates,
    so it is never the path that autograd differentiates.
    """
    if torch.compiler.is_exporting() or torch.jit.is_tracing() or not torch.is_grad_enabled():
        return False
    return any(isinstance(a, Tensor) and a.requires_grad for a in args)


def _by_parts(parts: UnaryParts, plain: Callable[..., Tensor], x: Tensor, *params: Tensor) -> Tensor:
    """A unary operator given by its derivative parts (see :mod:`safs_optuna.derivatives`): one
    autograd node when a gradient is wanted, else ``plain(x, *params)`` (the same values)."""
    return unary_node(parts, x, *params) if wants_graph(x, *params) else plain(x, *params)


def _binary_by_parts(parts: BinaryParts, plain: Callable[..., Tensor], a: Tensor, b: Tensor,
                     *params: Tensor) -> Tensor:
    """:func:`_by_parts` for a binary operator."""
    return binary_node(parts, a, b, *params) if wants_graph(a, b, *params) else plain(a, b, *params)


def _ones(x: Tensor) -> Tensor:
    """1 broadcast to x's shape without a buffer: the upstream gradient that turns an ATen
    ``*_backward`` kernel into the operator's slope."""
    return torch.ones((), dtype=x.dtype, device=x.device).expand_as(x)


def _exp(x: Tensor) -> Tensor:
    """exp(x), as exp2(x · log2 e) on CPUs where that is the faster kernel (see _EXP_VIA_EXP2).

    The rounding of x · log2 e adds a relative error below 1e-6 for |x| <= 10 (4e-6 at the clamp
    of 60 SRS uses). On CUDA exp is one instruction.
    """
    if _EXP_VIA_EXP2 and x.device.type == "cpu":
        return torch.exp2(x * _LOG2_E)
    return torch.exp(x)


def _exp_(x: Tensor) -> Tensor:
    """:func:`_exp` in place on ``x`` (a buffer of the caller's own)."""
    if _EXP_VIA_EXP2 and x.device.type == "cpu":
        return x.mul_(_LOG2_E).exp2_()
    return x.exp_()


def _tanh_is_fast(x: Tensor) -> bool:
    """Whether torch.tanh is a fast kernel for ``x``: on GPUs, and on CPUs where MKL's is."""
    return _MKL_MATH_IS_FAST or x.device.type != "cpu"


def _tanh_of(x: Tensor, scale: Tensor | float = 1.0) -> Tensor:
    """tanh(scale · x): torch.tanh where it is a fast kernel, else 2σ(2 · scale · x) - 1
    (sigmoid is one of PyTorch's own vectorized kernels)."""
    if _tanh_is_fast(x):
        return torch.tanh(x) if isinstance(scale, float) and scale == 1.0 else torch.mul(x, scale).tanh_()
    return torch.mul(x, scale * 2.0).sigmoid_().mul_(2.0).sub_(1.0)


def _log_sigmoid_abs(s: Tensor) -> Tensor:
    """log σ(|x|) = -log(1 + exp(-|x|)) from s = σ(x): the smooth part of softplus and logsigmoid."""
    # σ(|x|) = max(σ(x), 1 - σ(x)) lies in [0.5, 1], so its log is safe; log of it rather than
    # log1p(exp(-|x|)): log1p is one of the slow kernels.
    # max(s, 1 - s) = 0.5 + |s - 0.5|, in place on one buffer: every fresh feature-map-sized
    # tensor costs page faults on CPU.
    return (s - 0.5).abs_().add_(0.5).log_()


# Each operator's derivative parts (``_<name>_derivatives``) compute its value with a module-level
# helper (``_<name>_value``, or ``_<name>_parts`` when the slope needs intermediates too); the plain
# path of ``_by_parts`` calls the same helper, so both paths give the same values.


def _tanh_value(x: Tensor) -> Tensor:
    return _tanh_of(x)


def _tanh_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y = _tanh_value(x)
    return y, _aten.tanh_backward(_ones(y), y), ()


def _softplus_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """(softplus(x), σ(x)); softplus(x) = relu(x) - log σ(|x|) and softplus' = σ."""
    s = torch.sigmoid(x)
    return torch.relu(x).sub_(_log_sigmoid_abs(s)), s


def _softplus_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y, s = _softplus_parts(x)
    return y, s, ()  # softplus' = σ


def _logsigmoid_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """(log σ(x), σ(x)); log σ(x) = min(x, 0) + log σ(|x|) and its slope is 1 - σ(x)."""
    s = torch.sigmoid(x)
    return torch.clamp(x, max=0.0).add_(_log_sigmoid_abs(s)), s


def _logsigmoid_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y, s = _logsigmoid_parts(x)
    return y, s.neg_().add_(1.0), ()  # 1 - σ(x)


def _elu_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """(relu(x), exp(min(x, 0))); elu(x) = relu(x) + exp(min(x, 0)) - 1, and elu'(x) = exp(min(x, 0))."""
    negative = torch.clamp(x, max=0.0)
    return x - negative, _exp(negative)


def _elu_value(x: Tensor) -> Tensor:
    positive, e = _elu_parts(x)
    return positive.add_(e).sub_(1.0)


def _elu_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    positive, e = _elu_parts(x)
    return positive.add_(e).sub_(1.0), e, ()  # elu'(x) = exp(min(x, 0))


# F.selu's constants (Klambauer et al. 2017).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu_value(x: Tensor) -> Tensor:
    positive, e = _elu_parts(x)
    return positive.add_(e, alpha=_SELU_ALPHA).sub_(_SELU_ALPHA).mul_(_SELU_SCALE)


def _selu_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    # The slope from the kernel F.selu's own backward uses.
    return _selu_value(x), _aten.elu_backward(_ones(x), _SELU_ALPHA, _SELU_SCALE, 1.0, False, x), ()


def _mish_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """(tanh(softplus(x)), σ(x)) without tanh, softplus or exp: with p = σ(x), 1 + e^x = 1/(1 - p),
    so tanh(log(1 + e^x)) = (1 - (1 - p)²) / (1 + (1 - p)²) = n / (2 - n) with n = p(2 - p).
    n is computed from p, which is accurate for x -> -inf, and lies in [0, 1]: no clamp is needed."""
    p = torch.sigmoid(x)
    n = torch.rsub(p, 2.0).mul_(p)
    return n.div_(torch.rsub(n, 2.0)), p


def _mish_value(x: Tensor) -> Tensor:
    return _mish_parts(x)[0].mul_(x)


def _mish_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    t, p = _mish_parts(x)
    y = x * t
    # mish' = t + x σ(x) (1 - t²), in the buffer of σ(x).
    return y, _aten.tanh_backward(p.mul_(x), t).add_(t), ()


def _symlog_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    d = torch.abs(x).add_(1.0)
    return torch.copysign(torch.log(d), x), d


def _symlog_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y, d = _symlog_parts(x)
    return y, d.reciprocal_(), ()  # 1 / (1 + |x|): the slope 1 at 0, from both sides


def _symexp_parts(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    a = torch.abs(x)
    e = _exp_(_clamp(a, -1.0, _EXP_CLAMP))
    return torch.copysign(e - 1.0, x), a, e


def _symexp_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y, a, e = _symexp_parts(x)
    return y, _aten.hardtanh_backward(e, a, -1.0, _EXP_CLAMP), ()  # exp(|x|), 0 once saturated


def _exp_pair(x: Tensor) -> tuple[Tensor, Tensor]:
    """(exp(c), exp(-c)) for c = x clamped to [-10, 10]: sinh and cosh without their slow kernels."""
    e = _exp_(_clamp(x, -_EXP_CLAMP, _EXP_CLAMP))
    return e, torch.reciprocal(e)


def _sinh_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    e, r = _exp_pair(x)
    y = (e - r).mul_(0.5)
    return y, _aten.hardtanh_backward(e.add_(r).mul_(0.5), x, -_EXP_CLAMP, _EXP_CLAMP), ()  # cosh, 0 once saturated


def _cosh_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    e, r = _exp_pair(x)
    y = (e + r).mul_(0.5)
    return y, _aten.hardtanh_backward(e.sub_(r).mul_(0.5), x, -_EXP_CLAMP, _EXP_CLAMP), ()  # sinh, 0 once saturated


def _asinh_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    a = torch.abs(x)
    h = torch.hypot(a, torch.ones((), dtype=x.dtype, device=x.device))  # sqrt(x² + 1), no overflow
    return torch.copysign(torch.log(h + a), x), h


def _asinh_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y, h = _asinh_parts(x)
    return y, h.reciprocal_(), ()  # 1 / sqrt(x² + 1)


# sinc's safe branch: |x| is raised to at least this, where sin(x)/x = 1 in float32 already
# (1 - x²/6 rounds to 1) and the true slope, -x/3, is below 4e-7.
_SINC_EPS = 1e-6


def _sinc_parts(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    a = torch.abs(x).clamp_min_(_SINC_EPS)
    xs = torch.copysign(a, x)
    return torch.sin(xs).div_(xs), xs, a


def _sinc_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y, xs, a = _sinc_parts(x)
    slope = torch.cos(xs).sub_(y).div_(xs)  # (cos x - sinc x) / x
    return y, _aten.threshold_backward(slope, a, _SINC_EPS), ()  # 0 inside the safe branch


def _softsign_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    r = torch.reciprocal(torch.abs(x).add_(1.0))
    return x * r, r


def _softsign_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y, r = _softsign_parts(x)
    return y, r.mul_(r), ()  # 1 / (1 + |x|)²


def _sqrt_abs_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sqrt(torch.abs(x).add_(_SQRT_EPS))
    return s - math.sqrt(_SQRT_EPS), s


def _sqrt_abs_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y, s = _sqrt_abs_parts(x)
    return y, torch.sign(x).div_(s).mul_(0.5), ()  # sign(x) / (2 sqrt(|x| + eps)), 0 at 0


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
    return _by_parts(_sqrt_abs_derivatives, lambda t: _sqrt_abs_parts(t)[0], x)


def exp(x: Tensor) -> Tensor:
    """exp(x), saturating at x = 10."""
    return _exp(_clamp(x, -math.inf, _EXP_CLAMP))


def sinh(x: Tensor) -> Tensor:
    """sinh(x), saturating at |x| = 10."""
    return _by_parts(_sinh_derivatives, _sinh_value, x)


def _sinh_value(x: Tensor) -> Tensor:
    e, r = _exp_pair(x)
    return (e - r).mul_(0.5)


def cosh(x: Tensor) -> Tensor:
    """cosh(x), saturating at |x| = 10."""
    return _by_parts(_cosh_derivatives, _cosh_value, x)


def _cosh_value(x: Tensor) -> Tensor:
    e, r = _exp_pair(x)
    return (e + r).mul_(0.5)


def tanh(x: Tensor) -> Tensor:
    """tanh(x)."""
    if _tanh_is_fast(x):
        return torch.tanh(x)  # one fast kernel each way; the parts would add a pass for the slope
    return _by_parts(_tanh_derivatives, _tanh_value, x)


def softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x))."""
    return _by_parts(_softplus_derivatives, lambda t: _softplus_parts(t)[0], x)


def logsigmoid(x: Tensor) -> Tensor:
    """log σ(x)."""
    return _by_parts(_logsigmoid_derivatives, lambda t: _logsigmoid_parts(t)[0], x)


def elu(x: Tensor) -> Tensor:
    """x if x > 0 else exp(x) - 1."""
    return _by_parts(_elu_derivatives, _elu_value, x)


def selu(x: Tensor) -> Tensor:
    """Scaled ELU (F.selu's constants)."""
    return _by_parts(_selu_derivatives, _selu_value, x)


def mish(x: Tensor) -> Tensor:
    """x · tanh(softplus(x))."""
    return _by_parts(_mish_derivatives, _mish_value, x)


def softsign(x: Tensor) -> Tensor:
    """x / (1 + |x|)."""
    return _by_parts(_softsign_derivatives, lambda t: _softsign_parts(t)[0], x)


def asinh(x: Tensor) -> Tensor:
    """asinh(x) = sign(x) · log(|x| + sqrt(x² + 1))."""
    return _by_parts(_asinh_derivatives, lambda t: _asinh_parts(t)[0], x)


def sinc(x: Tensor) -> Tensor:
    """sin(x) / x, with sinc(0) = 1 (the unnormalised sinc of activation search)."""
    return _by_parts(_sinc_derivatives, lambda t: _sinc_parts(t)[0], x)


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
    return _by_parts(_symlog_derivatives, lambda t: _symlog_parts(t)[0], x)


def symexp(x: Tensor) -> Tensor:
    """sign(x) · (exp(|x|) - 1), saturating at |x| = 10."""
    return _by_parts(_symexp_derivatives, lambda t: _symexp_parts(t)[0], x)


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
    return _by_parts(_elish_derivatives, _elish_value, x)


def _elish_value(x: Tensor) -> Tensor:
    # elu(x) is x for x > 0 and exp(x) - 1 otherwise, so one product covers both branches.
    return _elu_value(x) * torch.sigmoid(x)


def _elish_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    positive, e = _elu_parts(x)
    u = positive.add_(e).sub_(1.0)  # elu(x), as _elu_value
    s = torch.sigmoid(x)
    y = u * s
    # (elu σ)' = elu' σ + elu σ (1 - σ), elu' = exp(min(x, 0)) = e.
    return y, e.mul_(s).add_(_aten.sigmoid_backward(u, s)), ()


# Derivative parts of parameter-free operators whose values are PyTorch's own: an operator tree
# of operators with parts trains as one autograd node (see safs_optuna.derivatives).


def _identity_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return x, 1.0, ()


def _neg_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return -x, -1.0, ()


def _relu_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return torch.relu(x), _aten.threshold_backward(_ones(x), x, 0.0), ()  # 1 where x > 0, as relu's


def _hardtanh_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return F.hardtanh(x), _aten.hardtanh_backward(_ones(x), x, -1.0, 1.0), ()


def _sin_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return torch.sin(x), torch.cos(x), ()


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _erf_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    # erf'(x) = 2/sqrt(pi) exp(-x²), with the fast exp; x² = inf gives exp(-inf) = 0.
    return torch.erf(x), _exp_(torch.square(x).neg_()).mul_(_TWO_OVER_SQRT_PI), ()


def _gelu_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return F.gelu(x), _aten.gelu_backward(torch.ones_like(x), x), ()


def _swish_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return F.silu(x), _aten.silu_backward(_ones(x), x), ()


def _sigmoid_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    s = torch.sigmoid(x)
    return s, _aten.sigmoid_backward(_ones(s), s), ()


def _relu6_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return F.relu6(x), _aten.hardtanh_backward(_ones(x), x, 0.0, 6.0), ()


def _hardswish_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return F.hardswish(x), _aten.hardswish_backward(_ones(x), x), ()


def _hardsigmoid_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return F.hardsigmoid(x), _aten.hardsigmoid_backward(_ones(x), x), ()


def _leaky_relu_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return leaky_relu(x), _aten.leaky_relu_backward(_ones(x), x, _LEAKY_SLOPE, False), ()


def _abs_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return torch.abs(x), torch.sign(x), ()


def _min0_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return min0(x), _aten.hardtanh_backward(_ones(x), x, -math.inf, 0.0), ()


def _exp_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y = exp(x)
    return y, _aten.hardtanh_backward(y, x, -math.inf, _EXP_CLAMP), ()  # exp(x), 0 once saturated


def _square_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    c = _clamp(x, -_SQUARE_CLAMP, _SQUARE_CLAMP)
    y = torch.square(c)
    return y, _aten.hardtanh_backward(c.mul_(2.0), x, -_SQUARE_CLAMP, _SQUARE_CLAMP), ()


def _cube_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    c = _clamp(x, -_CUBE_CLAMP, _CUBE_CLAMP)
    y = torch.pow(c, 3)
    return y, _aten.hardtanh_backward(c.square_().mul_(3.0), x, -_CUBE_CLAMP, _CUBE_CLAMP), ()


def _cos_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return torch.cos(x), torch.sin(x).neg_(), ()


def _atan_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return torch.atan(x), torch.square(x).add_(1.0).reciprocal_(), ()  # 1 / (1 + x²); 0 once x² = inf


def _gauss_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    y = gauss(x)
    return y, (x * y).mul_(-2.0), ()


def _zero_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return zero(x), 0.0, ()


def _one_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    return one(x), 0.0, ()


_LEAKY_SLOPE = 0.01


def leaky_relu(x: Tensor) -> Tensor:
    """max(x, 0.01·x)."""
    return F.leaky_relu(x, _LEAKY_SLOPE)


# --- binary functions --------------------------------------------------------------------------


def _share(a: Tensor, b: Tensor) -> Tensor:
    """The gradient share of the first operand of max(a, b): 1 where a wins, 1/2 on ties, 0
    where b wins (min(a, b) is max's with the operands swapped)."""
    return torch.sub(a, b).sign_().add_(1.0).mul_(0.5)


def _max_derivatives(a: Tensor, b: Tensor, params: tuple, want: tuple) -> tuple:
    w = _share(a, b)
    return torch.maximum(a, b), w, torch.rsub(w, 1.0), ()


def _min_derivatives(a: Tensor, b: Tensor, params: tuple, want: tuple) -> tuple:
    w = _share(b, a)
    return torch.minimum(a, b), w, torch.rsub(w, 1.0), ()


def _safe_div_derivatives(a: Tensor, b: Tensor, params: tuple, want: tuple) -> tuple:
    r = torch.reciprocal(torch.abs(b).add_(1.0))
    y = a * r
    # d/db a / (1 + |b|) = -sign(b) · y / (1 + |b|); sign(0) = 0 as abs's gradient at 0.
    return y, r, torch.sign(b).neg_().mul_(y).mul_(r), ()


def _safe_div_value(a: Tensor, b: Tensor) -> Tensor:
    return a / (torch.abs(b) + 1.0)


def _add_derivatives(a: Tensor, b: Tensor, params: tuple, want: tuple) -> tuple:
    return a + b, 1.0, 1.0, ()


def _sub_derivatives(a: Tensor, b: Tensor, params: tuple, want: tuple) -> tuple:
    return a - b, 1.0, -1.0, ()


def _mul_derivatives(a: Tensor, b: Tensor, params: tuple, want: tuple) -> tuple:
    return a * b, b, a, ()


def _sigmoid_gate_derivatives(a: Tensor, b: Tensor, params: tuple, want: tuple) -> tuple:
    s = torch.sigmoid(a)
    return s * b, _aten.sigmoid_backward(b, s), s, ()  # d/da = b σ(a)(1 - σ(a)), d/db = σ(a)


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
    """max(a, b); ties split the gradient evenly."""
    return _binary_by_parts(_max_derivatives, torch.maximum, a, b)


def minimum(a: Tensor, b: Tensor) -> Tensor:
    """min(a, b); ties split the gradient evenly."""
    return _binary_by_parts(_min_derivatives, torch.minimum, a, b)


def left(a: Tensor, b: Tensor) -> Tensor:
    """a (ignores b)."""
    return a


def sigmoid_gate(a: Tensor, b: Tensor) -> Tensor:
    """σ(a) · b."""
    return torch.sigmoid(a) * b


def safe_div(a: Tensor, b: Tensor) -> Tensor:
    """a / (1 + |b|): a division that cannot divide by zero."""
    return _binary_by_parts(_safe_div_derivatives, _safe_div_value, a, b)


# --- operators with learnable parameters -------------------------------------------------------
# Their parts take the parameters as 0-dim tensors and give one partial per parameter, which the
# backward turns into its gradient with one dot product over the elements, where autograd would
# build, reduce and free a full-size product per parameter.


def _acon_parts(x: Tensor, p1: Tensor, p2: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, c, z, σ(z)) with c = p1 - p2 and z = βcx: y = (p1 - p2)·x·σ(β(p1 - p2)x) + p2·x,
    written x·(p2 + c·σ(z)) so that no buffer holds (p1 - p2)·x."""
    c = p1 - p2
    z = x * (beta * c)
    s = torch.sigmoid(z)
    return (s * c).add_(p2).mul_(x), c, z, s


def _acon_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    p1, p2, beta = params
    y, c, z, s = _acon_parts(x, p1, p2, beta)
    # y = u σ(βu) + p2 x with u = cx: dy/du = silu'(z) = σ(z)(1 + z(1 - σ(z))), one kernel
    # (silu's own backward with an upstream gradient of 1), so dy/dx = p2 + c silu'(z),
    # dy/dp1 = x silu'(z), dy/dp2 = x - dy/dp1 and dy/dβ = u² σ'(z) = c² · x · xσ'(z).
    k = _aten.silu_backward(_ones(x), z)
    d_beta = (_aten.sigmoid_backward(x, s).mul_(x), c * c) if want[2] else None
    x_k = x * k if (want[0] or want[1]) else None
    d_p2 = (torch.sub(x, x_k), 1.0) if want[1] else None
    d_p1 = (x_k, 1.0) if want[0] else None
    return y, k.mul_(c).add_(p2), (d_p1, d_p2, d_beta)


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
        return _by_parts(_acon_derivatives, _acon_value, x, self.p1, self.p2, self.beta)

    parts = staticmethod(_acon_derivatives)


def _acon_value(x: Tensor, p1: Tensor, p2: Tensor, beta: Tensor) -> Tensor:
    return _acon_parts(x, p1, p2, beta)[0]


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
    """_SRS_EPS as a value of ``dtype``: the float guards of _srs_derivatives then equal _srs_guard's."""
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


def _srs_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    """SRS of the raw parameters with its derivatives; their guards are inside, so they add no
    autograd nodes."""
    alpha, beta = params
    # The parameters as Python numbers: the guards and the scalar factors are then arithmetic
    # instead of a dozen dispatched ops on 0-dim tensors per call (a fixed cost that showed on
    # LeNet-5's small fully connected activations).
    eps = _srs_eps(alpha.dtype)
    alpha_f, beta_f = alpha.item(), beta.item()
    a, b = max(abs(alpha_f), eps), max(abs(beta_f), eps)
    y, e, r = _srs_core(x, a, b)
    # y = x / D, D = max(den, eps), den = x/a + e, e = exp(min(-x/b, 60)):
    # dy/dx = r (1 - y dD/dx), dD/dx = 1/a - e/b; dy/da = y² / a², dy/db = -y² e / b²,
    # each 0 where a clamp is active (e's part where -x/b >= 60, all of D's where den <= eps).
    # Which clamps are active anywhere (two reductions): the mask passes are skipped for the
    # inactive ones, which is every call while α, β stay near their initial values.
    e_bound, r_bound = _srs_bounds(x)
    if bool(e.max() >= e_bound):
        e = e * (e < e_bound)
    y_d = y * (r < r_bound) if bool(r.max() >= r_bound) else y  # D is the constant eps there
    # d|p|-guard / dp: sign(p) while |p| >= eps (the clamp passes it), else 0.
    slope_alpha = math.copysign(1.0, alpha_f) if abs(alpha_f) >= eps else 0.0
    slope_beta = math.copysign(1.0, beta_f) if abs(beta_f) >= eps else 0.0
    y2 = y_d * y if (want[0] or want[1]) else None
    d_beta = (y2 * e if want[0] else y2.mul_(e), -slope_beta / (b * b)) if want[1] else None
    d_alpha = (y2, slope_alpha / (a * a)) if want[0] else None
    # r (1 - y dD/dx) = r (1 + y (e/b - 1/a)), in the buffer of e.
    slope = e.mul_(1.0 / b).sub_(1.0 / a).mul_(y_d).add_(1.0).mul_(r)
    return y, slope, (d_alpha, d_beta)


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
        return _by_parts(_srs_derivatives, _srs_value, x, self.alpha, self.beta)

    parts = staticmethod(_srs_derivatives)


def _tanhsoft1_parts(x: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(tanh(αx)·softplus(x), tanh(αx), softplus(x), σ(x))."""
    t = _tanh_of(x, alpha)
    sp, s = _softplus_parts(x)
    return t * sp, t, sp, s


def _tanhsoft1_derivatives(x: Tensor, params: tuple, want: tuple) -> tuple:
    (alpha,) = params
    y, t, sp, s = _tanhsoft1_parts(x, alpha)
    # y = tanh(αx) softplus(x): dy/dx = α (1 - t²) sp + t σ(x) and dy/dα = x (1 - t²) sp.
    slope_in = _aten.tanh_backward(sp, t)
    slope = s.mul_(t).addcmul_(slope_in, alpha)
    return y, slope, ((slope_in.mul_(x), 1.0) if want[0] else None,)


class TanhSoft1(nn.Module):
    """TanhSoft-1 (Biswas et al. 2021): tanh(α·x) · softplus(x), learnable α.

    Initialised as the SAFS code does (α = 1.0).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x: Tensor) -> Tensor:
        return _by_parts(_tanhsoft1_derivatives, _tanhsoft1_value, x, self.alpha)

    parts = staticmethod(_tanhsoft1_derivatives)


def _tanhsoft1_value(x: Tensor, alpha: Tensor) -> Tensor:
    return _tanhsoft1_parts(x, alpha)[0]


def _mix_derivatives(a: Tensor, b: Tensor, params: tuple, want: tuple) -> tuple:
    (beta,) = params
    d_beta = (torch.sub(a, b), 1.0) if want[0] else None
    return _mix_value(a, b, beta), beta, torch.rsub(beta, 1.0), (d_beta,)


class Mix(nn.Module):
    """Learnable mix β·a + (1 - β)·b, β initialised to 0.5 (the plain average)."""

    def __init__(self, beta: float = 0.5) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return _binary_by_parts(_mix_derivatives, _mix_value, a, b, self.beta)

    parts = staticmethod(_mix_derivatives)


def _mix_value(a: Tensor, b: Tensor, beta: Tensor) -> Tensor:
    return torch.lerp(b, a, beta)  # b + β(a - b)


# --- modules for parameter-free operators ------------------------------------------------------


class UnaryFunction(nn.Module):
    """A parameter-free unary operator as a module; ``parts`` its derivatives, where known (see
    :mod:`safs_optuna.derivatives`)."""

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor], parts: UnaryParts | None = None) -> None:
        super().__init__()
        self.name = name
        self.fn = fn
        self.parts = parts

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class BinaryFunction(nn.Module):
    """A parameter-free binary operator as a module; ``parts`` its derivatives, where known."""

    def __init__(self, name: str, fn: Callable[[Tensor, Tensor], Tensor],
                 parts: BinaryParts | None = None) -> None:
        super().__init__()
        self.name = name
        self.fn = fn
        self.parts = parts

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
        parts: The operator's value with its derivatives (see :mod:`safs_optuna.derivatives`),
            for parameter-free operators where they are known: a tree of operators that all
            have them trains as one autograd node. Learnable operators' modules carry their own.
    """

    name: str
    arity: int
    fn: Callable[..., Tensor] | None
    factory: Callable[[], nn.Module] | None = None
    commutative: bool = False
    description: str = ""
    parts: UnaryParts | BinaryParts | None = None

    def __post_init__(self) -> None:
        if self.arity not in (1, 2):
            raise ValueError(f"operator {self.name!r}: arity must be 1 or 2, got {self.arity}")
        if (self.fn is None) == (self.factory is None):
            raise ValueError(f"operator {self.name!r}: give exactly one of fn and factory")
        if self.commutative and self.arity != 2:
            raise ValueError(f"operator {self.name!r}: only binary operators can be commutative")
        if self.parts is not None and self.factory is not None:
            raise ValueError(f"operator {self.name!r}: a learnable operator's module carries its parts")

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
            return UnaryFunction(self.name, self.fn, self.parts)
        return BinaryFunction(self.name, self.fn, self.parts)


def _unary(name: str, fn: Callable[[Tensor], Tensor], description: str,
           parts: UnaryParts | None = None) -> Operator:
    return Operator(name, 1, fn, description=description, parts=parts)


def _learnable_unary(name: str, factory: Callable[[], nn.Module], description: str) -> Operator:
    return Operator(name, 1, None, factory, description=description)


_UNARY_LIST: list[Operator] = [
    # The SAFS paper's 13 candidates, in its order.
    _unary("relu6", F.relu6, "min(max(x, 0), 6)", _relu6_derivatives),
    _unary("hardswish", F.hardswish, "x · relu6(x + 3) / 6", _hardswish_derivatives),
    _unary("swish", F.silu, "x · σ(x) (SiLU)", _swish_derivatives),
    _learnable_unary("tanhsoft1", TanhSoft1, "tanh(α·x) · softplus(x), learnable α"),
    _learnable_unary("acon", ACON, "ACON-C (p1 - p2)·x·σ(β(p1 - p2)x) + p2·x, learnable p1, p2, β"),
    _unary("gelu", F.gelu, "x · Φ(x) (exact, erf form)", _gelu_derivatives),
    _learnable_unary("srs", SRS, "x / (x/α + exp(-x/β)), learnable α, β"),
    _unary("elu", elu, "x if x > 0 else exp(x) - 1", _elu_derivatives),
    _unary("tanh", tanh, "tanh(x)", _tanh_derivatives),
    _unary("softplus", softplus, "log(1 + exp(x))", _softplus_derivatives),
    _unary("logsigmoid", logsigmoid, "log σ(x)", _logsigmoid_derivatives),
    _unary("symlog", symlog, "sign(x) · log(1 + |x|)", _symlog_derivatives),
    _unary("symexp", symexp, "sign(x) · (exp(|x|) - 1), saturating at |x| = 10", _symexp_derivatives),
    # The dense networks' default.
    _unary("relu", torch.relu, "max(x, 0)", _relu_derivatives),
    # Classic operators of activation-function search (Ramachandran et al. 2017).
    _unary("x", identity, "x", _identity_derivatives),
    _unary("neg", neg, "-x", _neg_derivatives),
    _unary("abs", torch.abs, "|x|", _abs_derivatives),
    _unary("square", square, "x², saturating at |x| = 1e3", _square_derivatives),
    _unary("cube", cube, "x³, saturating at |x| = 1e2", _cube_derivatives),
    _unary("sqrt_abs", sqrt_abs, "sqrt(|x|), smoothed at 0", _sqrt_abs_derivatives),
    _unary("exp", exp, "exp(x), saturating at x = 10", _exp_derivatives),
    _unary("sin", torch.sin, "sin(x)", _sin_derivatives),
    _unary("cos", torch.cos, "cos(x)", _cos_derivatives),
    _unary("sinh", sinh, "sinh(x), saturating at |x| = 10", _sinh_derivatives),
    _unary("cosh", cosh, "cosh(x), saturating at |x| = 10", _cosh_derivatives),
    _unary("asinh", asinh, "asinh(x)", _asinh_derivatives),
    _unary("atan", torch.atan, "atan(x)", _atan_derivatives),
    _unary("sinc", sinc, "sin(x) / x", _sinc_derivatives),
    _unary("max0", max0, "max(x, 0)", _relu_derivatives),
    _unary("min0", min0, "min(x, 0)", _min0_derivatives),
    _unary("sigmoid", torch.sigmoid, "σ(x) = 1 / (1 + exp(-x))", _sigmoid_derivatives),
    _unary("erf", torch.erf, "erf(x)", _erf_derivatives),
    _unary("gauss", gauss, "exp(-x²)", _gauss_derivatives),
    _unary("zero", zero, "0", _zero_derivatives),
    _unary("one", one, "1", _one_derivatives),
    # Other common activations.
    _unary("mish", mish, "x · tanh(softplus(x))", _mish_derivatives),
    _unary("selu", selu, "scaled ELU (self-normalising)", _selu_derivatives),
    _unary("softsign", softsign, "x / (1 + |x|)", _softsign_derivatives),
    _unary("leaky_relu", leaky_relu, "max(x, 0.01·x)", _leaky_relu_derivatives),
    _unary("hardtanh", F.hardtanh, "clamp(x, -1, 1)", _hardtanh_derivatives),
    _unary("hardsigmoid", F.hardsigmoid, "relu6(x + 3) / 6", _hardsigmoid_derivatives),
    _unary("elish", elish, "x·σ(x) if x >= 0 else (exp(x) - 1)·σ(x)", _elish_derivatives),
]

_BINARY_LIST: list[Operator] = [
    Operator("add", 2, add, commutative=True, description="a + b", parts=_add_derivatives),
    Operator("sub", 2, sub, description="a - b", parts=_sub_derivatives),
    Operator("mul", 2, mul, commutative=True, description="a · b", parts=_mul_derivatives),
    Operator("max", 2, maximum, commutative=True, description="max(a, b)", parts=_max_derivatives),
    Operator("min", 2, minimum, commutative=True, description="min(a, b)", parts=_min_derivatives),
    Operator("left", 2, left, description="a (unary-only activation)"),
    Operator("sigmoid_gate", 2, sigmoid_gate, description="σ(a) · b", parts=_sigmoid_gate_derivatives),
    Operator("safe_div", 2, safe_div, description="a / (1 + |b|)", parts=_safe_div_derivatives),
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
