"""Elementwise operators given by their derivatives: one autograd node per operator tree.

An operator that knows its derivatives exposes them as *parts*: in its forward it returns its
value together with its slope and the partials of its learnable parameters. A whole tree
``binary(left(u), right(u))`` of such operators is then one autograd node whose backward is one
product and one dot per parameter, by the chain rule applied in the forward:

    dy/du = dB/da · left'(u) + dB/db · right'(u)
    dy/dθ = dB/da · d left/dθ   (θ a parameter of left; likewise for right and the binary's own)

Done node by node, the same tree has three nodes, a gradient buffer per operand, the operands'
own backward buffers and the sum of the two paths, and keeps the operands' intermediates for
the backward. As one node it keeps only its slope and its parameter partials: about half the
feature maps for the trees of two costly operators (``benchmarks/speed.py --sections memory``),
which is what bounds the batch size on a GPU. The arithmetic moves to the forward rather than
going away, so on a CPU a train step takes about as long either way.

The parts protocol (all tensors the same shape as the input, ``params`` 0-dim tensors):

* unary ``parts(x, params, want) -> (y, slope, partials)``: ``y`` the value, ``slope`` dy/dx as
  a float or a tensor the caller owns, ``partials`` one entry per parameter: ``None`` where
  ``want`` is false, else ``(p, scale)`` with dy/dθ = p · scale elementwise (``p`` owned by the
  caller, ``scale`` a float or a 0-dim tensor, applied after the sum).
* binary ``parts(a, b, params, want) -> (y, da, db, partials)``: ``da``/``db`` the partials for
  the operands as floats, 0-dim tensors or tensors that may be ``a`` or ``b`` themselves (read,
  never written); ``y`` a new tensor.

Parts never write to their inputs, and ``y`` of a unary may be ``x`` itself only for the identity.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

__all__ = ["UnaryParts", "BinaryParts", "unary_node", "binary_node", "tree_node"]

Scalar = Union[float, Tensor]
Partial = Optional[tuple[Tensor, Scalar]]
UnaryParts = Callable[[Tensor, tuple[Tensor, ...], tuple[bool, ...]], tuple[Tensor, Scalar, tuple[Partial, ...]]]
BinaryParts = Callable[
    [Tensor, Tensor, tuple[Tensor, ...], tuple[bool, ...]], tuple[Tensor, Scalar, Scalar, tuple[Partial, ...]]
]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Sum of a·b over all elements, as a 0-dim tensor."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _is_map(t: Scalar, shape: torch.Size) -> bool:
    return isinstance(t, Tensor) and t.shape == shape


def _times(slope: Scalar, d: Scalar, shape: torch.Size) -> tuple[Scalar, bool]:
    """slope · d, and whether the result is a tensor of ``shape`` this node owns (may write to).

    ``slope`` is a unary's (a float or an owned map), ``d`` a binary's operand partial (a float,
    a 0-dim tensor, or a map that may be an operand: never written).
    """
    if _is_map(slope, shape):
        return (slope if isinstance(d, float) and d == 1.0 else slope.mul_(d)), True
    if isinstance(slope, float) and slope == 0.0:
        return 0.0, False
    if isinstance(slope, float) and slope == 1.0:
        return d, False
    return d * slope, _is_map(d, shape)  # a new map where d is one


def _plus(left: tuple[Scalar, bool], right: tuple[Scalar, bool]) -> Scalar:
    """left + right, in place on an owned map where there is one."""
    (lv, lown), (rv, rown) = left, right
    if lown:
        return lv.add_(rv) if not (isinstance(rv, float) and rv == 0.0) else lv
    if rown:
        return rv.add_(lv) if not (isinstance(lv, float) and lv == 0.0) else rv
    if isinstance(rv, float) and rv == 0.0:
        return lv
    if isinstance(lv, float) and lv == 0.0:
        return rv
    return lv + rv


def _chain(partials: tuple[Partial, ...], d: Scalar, shape: torch.Size) -> tuple[Partial, ...]:
    """An operand's parameter partials through the binary's partial ``d`` for that operand."""
    out: list[Partial] = []
    for p in partials:
        if p is None:
            out.append(None)
        elif _is_map(d, shape):
            out.append((p[0].mul_(d), p[1]))
        else:  # a number: it joins the scale, applied after the sum
            out.append((p[0], p[1] * d))
    return tuple(out)


def _save(ctx, slope: Scalar, partials: tuple[Partial, ...]) -> None:
    tensors = [p[0] for p in partials if p is not None]
    ctx.slope_is_tensor = isinstance(slope, Tensor)
    if ctx.slope_is_tensor:
        tensors.insert(0, slope)
    else:
        ctx.slope = slope
    ctx.scales = [None if p is None else p[1] for p in partials]
    ctx.save_for_backward(*tensors)


def _grads(ctx, g: Tensor) -> tuple[Tensor | None, list[Tensor | None]]:
    """(the input's gradient, the parameters' gradients) of a node saved by :func:`_save`."""
    saved = list(ctx.saved_tensors)
    slope = saved.pop(0) if ctx.slope_is_tensor else ctx.slope
    return g * slope, _param_grads(g, saved, ctx.scales)


def _param_grads(g: Tensor, partials: list[Tensor], scales: list[Scalar | None]) -> list[Tensor | None]:
    """Each parameter's gradient: the sum of g times its saved partial, times its scale."""
    grads: list[Tensor | None] = []
    for scale in scales:
        if scale is None:
            grads.append(None)
        else:
            sum_ = _dot(g, partials.pop(0))
            grads.append(sum_ if isinstance(scale, float) and scale == 1.0 else sum_ * scale)
    return grads


class _UnaryNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, parts, x, *params):
        y, slope, partials = parts(x, params, ctx.needs_input_grad[2:])
        _save(ctx, slope, partials)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        gx, grads = _grads(ctx, g)
        return None, gx, *grads


class _BinaryNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, parts, a, b, *params):
        y, da, db, partials = parts(a, b, params, ctx.needs_input_grad[3:])
        ctx.scales = [None if p is None else p[1] for p in partials]
        tensors = [p[0] for p in partials if p is not None]
        ctx.d_is_tensor = (isinstance(da, Tensor), isinstance(db, Tensor))
        ctx.d_numbers = tuple(None if isinstance(d, Tensor) else d for d in (da, db))
        ctx.save_for_backward(*[d for d in (da, db) if isinstance(d, Tensor)], *tensors)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        saved = list(ctx.saved_tensors)
        da, db = (saved.pop(0) if is_t else n for is_t, n in zip(ctx.d_is_tensor, ctx.d_numbers))
        grads = _param_grads(g, saved, ctx.scales)
        ga = g * da if ctx.needs_input_grad[1] else None
        gb = g * db if ctx.needs_input_grad[2] else None
        return None, ga, gb, *grads


class _TreeNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec, u, *params):
        left, n_left, right, n_right, binary = spec
        want = ctx.needs_input_grad[2:]
        shape = u.shape
        pl, pr, pb = params[:n_left], params[n_left:n_left + n_right], params[n_left + n_right:]
        wl, wr, wb = want[:n_left], want[n_left:n_left + n_right], want[n_left + n_right:]
        a, slope_a, partials_a = left(u, pl, wl)
        b, slope_b, partials_b = right(u, pr, wr)
        y, da, db, partials_y = binary(a, b, pb, wb)
        # The operands' parameter partials first: _times may write into the slopes, not into da/db.
        partials = _chain(partials_a, da, shape) + _chain(partials_b, db, shape) + tuple(partials_y)
        slope = _plus(_times(slope_a, da, shape), _times(slope_b, db, shape))
        _save(ctx, slope, partials)
        return y

    backward = staticmethod(_UnaryNode.backward)  # the same saved slope and partials


def unary_node(parts: UnaryParts, x: Tensor, *params: Tensor) -> Tensor:
    """The value of a unary operator given by ``parts``, as one autograd node."""
    return _UnaryNode.apply(parts, x, *params)


def binary_node(parts: BinaryParts, a: Tensor, b: Tensor, *params: Tensor) -> Tensor:
    """The value of a binary operator given by ``parts``, as one autograd node."""
    return _BinaryNode.apply(parts, a, b, *params)


def tree_node(
    left: UnaryParts, left_params: tuple[Tensor, ...], right: UnaryParts, right_params: tuple[Tensor, ...],
    binary: BinaryParts, binary_params: tuple[Tensor, ...], u: Tensor,
) -> Tensor:
    """``binary(left(u), right(u))`` as one autograd node (see the module docs)."""
    spec = (left, len(left_params), right, len(right_params), binary)
    return _TreeNode.apply(spec, u, *left_params, *right_params, *binary_params)
