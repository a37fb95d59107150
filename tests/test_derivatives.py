"""Operator trees as one autograd node: the same values and gradients as node by node."""

from __future__ import annotations

import pytest
import torch

from safs_optuna.activation import OperatorTree, TreeActivation
from safs_optuna.operators import BINARY, UNARY

WITH_PARTS = [name for name, op in UNARY.items() if op.parts is not None or getattr(op.build(), "parts", None)]
BINARY_WITH_PARTS = [name for name, op in BINARY.items()
                     if op.parts is not None or getattr(op.build(), "parts", None)]
# Learnable operators' parameters moved off their initial values (which make several of them the
# identity), so that every partial shows.
PARAMETERS = {"tanhsoft1": {"alpha": -1.7}, "acon": {"p1": 1.5, "p2": 0.2, "beta": 0.8},
              "srs": {"alpha": 2.0, "beta": 0.7}, "mix": {"beta": 0.3}}


def _inputs() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    # Values across the clamps of the operators, exact zeros (ties of max and min), and SRS's
    # exp clamp (-x/β >= 60).
    return torch.cat([torch.randn(500, generator=gen) * 3, torch.linspace(-12, 12, 97),
                      torch.tensor([0.0, 0.0, -50.0, -80.0, 1e3, -1e3])])


def _tree(formula: str, learn_scale: bool) -> TreeActivation:
    act = TreeActivation(formula, learn_scale=learn_scale)
    with torch.no_grad():
        for module in (act.left_op, act.right_op, act.binary_op):
            for name, value in PARAMETERS.get(getattr(module, "name", type(module).__name__.lower()), {}).items():
                getattr(module, name).fill_(value)
        if learn_scale:
            act.alpha.fill_(0.9)
            act.beta.fill_(1.3)
    return act


def _node_by_node(act: TreeActivation, x: torch.Tensor) -> torch.Tensor:
    u = act.alpha * x
    return act.beta * act.binary_op(act.left_op(u), act.right_op(u))


def _values_and_grads(fn, act: TreeActivation, x: torch.Tensor):
    leaf = x.clone().requires_grad_(True)
    out = fn(leaf)
    params = [p for p in act.parameters() if p.requires_grad]
    upstream = torch.linspace(-1.0, 1.0, out.numel())
    return out, torch.autograd.grad(out, [leaf, *params], upstream)


def _nodes(t: torch.Tensor) -> list[str]:
    """The names of the autograd nodes that ``t`` was computed by."""
    names, todo, seen = [], [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        todo += [n for n, _ in node.next_functions]
    return names


def _pairs() -> list[tuple[str, str, str]]:
    """Every binary with parts, each unary with parts once on the left and once on the right
    (the other operand a learnable one), and the trees of the speed table."""
    trees = []
    for i, b in enumerate(BINARY_WITH_PARTS):
        for j, u in enumerate(WITH_PARTS):
            partner = ("tanhsoft1", "srs", "acon")[(i + j) % 3]
            trees += [(b, u, partner), (b, partner, u)]
    # Not those that the canonical form folds to a unary tree (no binary operator is left).
    return [t for t in trees if not OperatorTree.parse(f"{t[0]}({t[1]}(x), {t[2]}(x))").is_unary]


@pytest.mark.parametrize("learn_scale", [False, True])
@pytest.mark.parametrize("binary,left,right", _pairs())
def test_a_tree_as_one_node_matches_it_node_by_node(binary: str, left: str, right: str, learn_scale: bool) -> None:
    formula = f"{binary}({left}(x), {right}(x))"
    act = _tree(formula, learn_scale)
    x = _inputs()
    fused, fused_grads = _values_and_grads(act, act, x)
    assert _nodes(fused).count("_TreeNodeBackward") == 1, formula
    plain, plain_grads = _values_and_grads(lambda t: _node_by_node(act, t), act, x)
    torch.testing.assert_close(fused, plain, atol=0.0, rtol=0.0, msg=formula)
    names = ["x"] + [n for n, p in act.named_parameters() if p.requires_grad]
    for name, new, old in zip(names, fused_grads, plain_grads):
        assert torch.isfinite(new).all(), f"{formula} d/{name}"
        torch.testing.assert_close(new, old, atol=1e-4, rtol=1e-4, msg=f"{formula} d/{name}")


def test_max_and_min_trees_split_the_gradient_on_ties() -> None:
    x = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    for name in ("max", "min"):
        # relu(x) and max0(x) are equal everywhere: each operand gets half of the gradient.
        act = TreeActivation(f"{name}(relu(x), max0(x))")
        (g,) = torch.autograd.grad(act(x).sum(), x)
        assert g.tolist() == [0.0, 0.0, 1.0], name


def _differentiated_by_torch(name: str) -> bool:
    """Whether the operator's own function is differentiated by PyTorch (not by its parts)."""
    out = UNARY[name].fn(torch.ones(2, requires_grad=True))
    return type(out.grad_fn).__name__ != "_UnaryNodeBackward"


TORCH_DIFFERENTIATED = [n for n in WITH_PARTS if UNARY[n].parts is not None and _differentiated_by_torch(n)]


def test_the_torch_differentiated_operators_with_parts_are_checked() -> None:
    assert {"x", "relu", "sin", "erf", "gelu", "hardtanh"} <= set(TORCH_DIFFERENTIATED)


@pytest.mark.parametrize("name", TORCH_DIFFERENTIATED)
def test_the_parts_slope_of_a_torch_operator_is_its_autograd_gradient(name: str) -> None:
    op = UNARY[name]
    x = _inputs().requires_grad_(True)
    (expected,) = torch.autograd.grad(op.fn(x).sum(), x)
    with torch.no_grad():
        y, slope, partials = op.parts(x.detach(), (), ())
    torch.testing.assert_close(y, op.fn(x.detach()), atol=0.0, rtol=0.0, msg=name)
    slope = torch.as_tensor(slope).expand_as(x)
    torch.testing.assert_close(slope, expected, atol=1e-5, rtol=1e-4, msg=name)
    assert partials == ()


def test_every_operator_but_left_knows_its_derivatives() -> None:
    # So every binary tree of the search space trains as one node ("left" trees are unary).
    assert sorted(WITH_PARTS) == sorted(UNARY)
    assert sorted(BINARY_WITH_PARTS) == sorted(set(BINARY) - {"left"})


def test_trees_without_parts_and_inference_keep_the_node_by_node_path() -> None:
    x = torch.randn(8, requires_grad=True)
    act = TreeActivation("add(x, cos(x))")
    assert "_TreeNodeBackward" in _nodes(act(x))
    act.right_op = torch.nn.Tanh()  # a module without parts, e.g. an operator of another version
    assert "_TreeNodeBackward" not in _nodes(act(x))
    with torch.no_grad():
        act = TreeActivation("max(tanhsoft1(x), srs(x))")
        assert act(x).grad_fn is None


@pytest.mark.parametrize("formula", ["mix(tanhsoft1(x), srs(x))", "sigmoid_gate(mish(x), acon(x))",
                                     "safe_div(erf(x), sinc(x))", "mul(x, sin(x))"])
def test_a_tree_node_passes_gradcheck_in_float64(formula: str) -> None:
    # Finite differences against the analytic backward, for the input, α, β and every operator
    # parameter: independent of the operators' own formulas.
    act = _tree(formula, learn_scale=True).double()
    params = [p for p in act.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(24, generator=gen, dtype=torch.float64) * 6 - 3).requires_grad_(True)

    names = [n for n, p in act.named_parameters() if p.requires_grad]

    def f(x: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(act, dict(zip(names, values)), (x,))

    assert "_TreeNodeBackward" in _nodes(act(x))
    values = [p.detach().clone().requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(f, (x, *values), eps=1e-6, atol=1e-5, rtol=1e-4)
