"""OperatorTree (formula, parse, canonical key) and TreeActivation (module, scale, export)."""

from __future__ import annotations

import copy
import dataclasses
import io
import itertools
import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from safs_optuna.activation import OperatorTree, TreeActivation
from safs_optuna.operators import BINARY, UNARY

ALL_TREES = [OperatorTree(b, l, r) for b, l, r in itertools.product(BINARY, UNARY, UNARY)]
unary_names = st.sampled_from(list(UNARY))
trees = st.builds(OperatorTree, st.sampled_from(list(BINARY)), unary_names, unary_names)


def _outputs(tree: OperatorTree, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and input gradient of a fresh TreeActivation for ``tree``."""
    x = x.clone().requires_grad_(True)
    out = TreeActivation(tree)(x)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out), allow_unused=True)
    return out.detach(), torch.zeros_like(x) if grad is None else grad


# --- formula and parse -------------------------------------------------------------------------


def test_formula_examples() -> None:
    assert OperatorTree("max", "x", "sin").formula == "max(x, sin(x))"
    assert OperatorTree.unary("gelu").formula == "gelu(x)"
    assert OperatorTree.unary("x").formula == "x"
    assert OperatorTree("left", "gelu", "sin").formula == "gelu(x)"  # the ignored operand is not shown
    assert OperatorTree("sub", "cos", "x").formula == "sub(cos(x), x)"
    assert str(OperatorTree("mix", "acon", "srs")) == "mix(acon(x), srs(x))"
    assert OperatorTree.unary("elu") == OperatorTree("left", "elu", "x")
    assert OperatorTree.unary("elu").is_unary and not OperatorTree("add", "elu", "x").is_unary


def test_parse_is_the_inverse_of_formula_for_every_tree() -> None:
    assert len(ALL_TREES) == len(BINARY) * len(UNARY) ** 2
    for tree in ALL_TREES:
        parsed = OperatorTree.parse(tree.formula)
        assert parsed == tree and parsed.formula == tree.formula
        if not tree.is_unary:  # nothing is lost: the very same fields come back
            assert (parsed.binary, parsed.left, parsed.right) == (tree.binary, tree.left, tree.right)


@settings(max_examples=50, deadline=None)
@given(tree=trees, spaces=st.lists(st.sampled_from([" ", "  ", "\t", ""]), min_size=8, max_size=8))
def test_parse_ignores_whitespace(tree: OperatorTree, spaces: list[str]) -> None:
    pieces = tree.formula.replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split()
    spaced = "".join(p + spaces[i % len(spaces)] for i, p in enumerate(pieces))
    assert OperatorTree.parse(spaced).formula == tree.formula


@pytest.mark.parametrize(
    ("formula", "fragment"),
    [
        ("", "unexpected end"),
        ("max(x", "unexpected end; expected ',' or ')'"),
        ("max(x sin(x))", "unexpected token 'sin' at position 6"),
        ("max(x, sin(x)) y", "unexpected token 'y' at position 15; expected end"),
        ("max(x, sin(y))", "unexpected token 'y' at position 11"),
        ("sin(cos(x))", "the argument of unary 'sin' must be x, got 'cos(x)'"),
        ("1 + x", "unexpected token '1' at position 0"),
        ("max(x)", "binary operator 'max' needs two operands"),
        ("foo(x)", "unknown unary operator 'foo'; valid: abs, acon"),
        ("max(x, foo(x))", "unknown unary operator 'foo'; valid: abs, acon"),
        ("bar(x, sin(x))", "unknown binary operator 'bar'; valid: add, left"),
        ("sin", "unexpected end; expected '('"),
    ],
)
def test_parse_errors_name_the_formula_and_the_bad_token(formula: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        OperatorTree.parse(formula)
    assert f"cannot parse activation formula {formula!r}" in str(info.value)
    assert fragment in str(info.value)


def test_names_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown unary operator 'foo'; valid: abs, acon"):
        OperatorTree("max", "foo")
    with pytest.raises(ValueError, match="unknown unary operator 'bar'"):
        OperatorTree("max", "x", "bar")
    with pytest.raises(ValueError, match="unknown binary operator 'sin'; valid: add, left"):
        OperatorTree("sin", "x")
    with pytest.raises(TypeError, match="operator name"):
        OperatorTree("max", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        OperatorTree.parse(None)  # type: ignore[arg-type]


def test_tree_is_immutable_hashable_and_picklable() -> None:
    tree = OperatorTree("max", "x", "sin")
    with pytest.raises(dataclasses.FrozenInstanceError):
        tree.left = "cos"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(tree)) == tree
    assert len({tree, OperatorTree("max", "sin", "x"), OperatorTree("max", "x", "cos")}) == 2
    assert tree != "max(x, sin(x))"


# --- canonical key -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(tree=trees)
def test_key_is_canonical(tree: OperatorTree) -> None:
    canonical = OperatorTree(*tree.key)
    assert canonical == tree and canonical.key == tree.key  # the key is its own fixed point
    assert hash(canonical) == hash(tree)
    if BINARY[tree.binary].commutative:
        assert OperatorTree(tree.binary, tree.right, tree.left) == tree
    assert OperatorTree("left", tree.left, tree.right) == OperatorTree.unary(tree.left)


def test_key_equivalences() -> None:
    p = OperatorTree.parse
    assert p("max(x, sin(x))") == p("max(sin(x), x)")
    assert p("mul(cos(x), exp(x))") == p("mul(exp(x), cos(x))")
    assert p("left(gelu(x), sin(x))") == p("left(gelu(x), acon(x))") == p("gelu(x)")
    assert p("max(sin(x), sin(x))") == p("min(sin(x), sin(x))") == p("sin(x)")
    assert p("add(tanh(x), zero(x))") == p("add(zero(x), tanh(x))") == p("tanh(x)")
    assert p("sub(tanh(x), zero(x))") == p("tanh(x)")
    assert p("mul(one(x), erf(x))") == p("safe_div(erf(x), zero(x))") == p("erf(x)")
    assert p("mul(erf(x), zero(x))") == p("sub(cos(x), cos(x))") == p("zero(x)")
    assert p("sigmoid_gate(x, zero(x))") == p("safe_div(zero(x), x)") == p("zero(x)")
    assert p("sub(zero(x), x)") == p("neg(x)")
    assert p("max0(x)") == p("relu(x)") and p("max(max0(x), x)") == p("max(x, relu(x))")


def test_key_non_equivalences() -> None:
    p = OperatorTree.parse
    # Non-commutative binaries keep their operand order.
    for name in ("sub", "safe_div", "sigmoid_gate", "mix"):
        assert p(f"{name}(x, sin(x))") != p(f"{name}(sin(x), x)")
    assert p("max(x, sin(x))") != p("min(x, sin(x))") != p("max(x, cos(x))")
    assert p("gelu(x)") != p("elu(x)")
    # Two copies of a learnable operator have independent parameters: no folding.
    assert p("max(acon(x), acon(x))") != p("acon(x)")
    assert p("sub(srs(x), srs(x))") != p("zero(x)")
    # And the keys that differ do compute different functions here.
    x = torch.linspace(-3, 3, 50)
    assert not torch.allclose(_outputs(p("sub(x, sin(x))"), x)[0], _outputs(p("sub(sin(x), x)"), x)[0])


def _composed(trees: list[OperatorTree], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and input gradients of ``binary(left(x), right(x))`` for many trees at once.

    Operators are elementwise, so each unary runs once and each binary once over a stack of
    operands; the chain rule combines the partial derivatives.
    """
    leaf = x.clone().requires_grad_(True)
    value, slope = {}, {}
    for name in {n for t in trees for n in (t.left, t.right)}:
        out = UNARY[name].build()(leaf)
        (grad,) = torch.autograd.grad(out, leaf, torch.ones_like(out), allow_unused=True)
        value[name], slope[name] = out.detach(), torch.zeros_like(x) if grad is None else grad
    outs, grads = torch.empty(len(trees), len(x)), torch.empty(len(trees), len(x))
    for binary in BINARY:
        index = [i for i, t in enumerate(trees) if t.binary == binary]
        if not index:
            continue
        a = torch.stack([value[trees[i].left] for i in index]).requires_grad_(True)
        b = torch.stack([value[trees[i].right] for i in index]).requires_grad_(True)
        out = BINARY[binary].build()(a, b)
        ga, gb = torch.autograd.grad(out, (a, b), torch.ones_like(out), allow_unused=True)
        grad = torch.zeros_like(out)
        if ga is not None:
            grad += ga * torch.stack([slope[trees[i].left] for i in index])
        if gb is not None:
            grad += gb * torch.stack([slope[trees[i].right] for i in index])
        outs[index], grads[index] = out.detach(), grad
    return outs, grads


def test_equal_keys_compute_the_same_function() -> None:
    """Over the whole space: every tree computes, value and gradient, what its canonical tree computes."""
    generator = torch.Generator().manual_seed(0)
    # Random points plus special ones; ties (x = 0) are where max/min/relu gradients are delicate.
    x = torch.cat([torch.randn(48, generator=generator) * 4, torch.tensor([0.0, 1.0, -1.0, 1e4, -1e4])])
    outs, grads = _composed(ALL_TREES, x)
    position = {(t.binary, t.left, t.right): i for i, t in enumerate(ALL_TREES)}
    # Each tree's canonical tree OperatorTree(*key), itself in the space.
    canonical = torch.tensor([position[t.key] for t in ALL_TREES])
    merged = (canonical != torch.arange(len(ALL_TREES))).sum().item()
    assert merged > len(ALL_TREES) // 3  # commutativity, left and folding all at work
    same = torch.isclose(outs, outs[canonical], rtol=1e-6, atol=1e-6).all(1)
    same &= torch.isclose(grads, grads[canonical], rtol=1e-6, atol=1e-6).all(1)
    differing = [f"{ALL_TREES[i].formula} vs key {ALL_TREES[i].key}" for i in (~same).nonzero().flatten()]
    assert not differing, differing[:10]


@settings(max_examples=30, deadline=None)
@given(tree=trees)
def test_tree_activation_computes_the_composition(tree: OperatorTree) -> None:
    x = torch.cat([torch.linspace(-12, 12, 25), torch.tensor([1e4, -1e4])])
    out, grad = _outputs(tree, x)
    expected_out, expected_grad = _composed([tree], x)
    torch.testing.assert_close(out[:25], expected_out[0][:25])
    torch.testing.assert_close(grad[:25], expected_grad[0][:25])
    # At ±1e4 the guarded operators saturate to huge values, where the chain rule applied in
    # another order differs in float32 rounding (e.g. mul(srs(x), symexp(x)): 0.5 % relative).
    torch.testing.assert_close(out[25:], expected_out[0][25:], rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(grad[25:], expected_grad[0][25:], rtol=1e-2, atol=1e-4)


# --- TreeActivation ----------------------------------------------------------------------------


def test_tree_activation_equals_its_operator() -> None:
    x = torch.linspace(-5, 5, 101)
    with torch.no_grad():
        assert torch.equal(TreeActivation(OperatorTree.unary("relu"))(x), torch.relu(x))
        assert torch.equal(TreeActivation(OperatorTree.unary("swish"))(x), F.silu(x))
        assert torch.equal(TreeActivation(OperatorTree.unary("x"))(x), x)
        for name, op in UNARY.items():
            assert torch.equal(TreeActivation(OperatorTree.unary(name))(x), op.build()(x)), name
        tree = OperatorTree("max", "x", "sin")
        assert torch.equal(TreeActivation(tree)(x), torch.maximum(x, torch.sin(x)))
        assert torch.equal(TreeActivation("safe_div(x, cos(x))")(x), x / (1 + torch.cos(x).abs()))
    with pytest.raises(TypeError, match="OperatorTree or a formula"):
        TreeActivation(3)  # type: ignore[arg-type]


def test_unary_tree_does_not_build_or_evaluate_the_right_operand() -> None:
    act = TreeActivation(OperatorTree("left", "gelu", "acon"))
    assert act.right_op is None and act.binary_op is None
    assert {name for name, _ in act.named_parameters()} == {"alpha", "beta"}
    binary = TreeActivation(OperatorTree("mix", "acon", "srs"))
    assert {name.split(".")[0] for name, _ in binary.named_parameters()} == {
        "alpha", "beta", "left_op", "right_op", "binary_op"}


def test_scale_is_frozen_unless_learn_scale() -> None:
    x = torch.linspace(-2, 2, 9)
    frozen = TreeActivation(OperatorTree.unary("tanh"))
    for p in (frozen.alpha, frozen.beta):
        assert p.dim() == 0 and p.item() == 1.0 and not p.requires_grad
    assert not frozen.learn_scale
    frozen(x.requires_grad_()).sum().backward()
    assert frozen.alpha.grad is None and frozen.beta.grad is None

    learned = TreeActivation(OperatorTree.unary("tanh"), learn_scale=True)
    assert learned.learn_scale and learned.alpha.requires_grad and learned.beta.requires_grad
    learned(x).square().sum().backward()
    assert learned.alpha.grad is not None and learned.alpha.grad.abs() > 0
    assert learned.beta.grad is not None and learned.beta.grad.abs() > 0

    frozen.learn_scale = True
    assert frozen.alpha.requires_grad and frozen.beta.requires_grad
    frozen.learn_scale = False
    assert not frozen.alpha.requires_grad and not frozen.beta.requires_grad


def test_forward_is_beta_tree_of_alpha_x() -> None:
    x = torch.linspace(-2, 2, 9)
    act = TreeActivation(OperatorTree("add", "sin", "cube"), learn_scale=True)
    with torch.no_grad():
        act.alpha.fill_(2.0)
        act.beta.fill_(-3.0)
        torch.testing.assert_close(act(x), -3.0 * (torch.sin(2 * x) + (2 * x) ** 3))


def test_a_scale_frozen_at_one_costs_nothing_and_a_changed_one_is_used() -> None:
    x = torch.linspace(-2, 2, 9)
    act = TreeActivation(OperatorTree.unary("x"))
    assert act(x) is x  # alpha = beta = 1, frozen: no products (and no pass over the tensor)
    g = torch.linspace(-2, 2, 9).requires_grad_()
    act(g).sum().backward()
    torch.testing.assert_close(g.grad, torch.ones(9))
    with torch.no_grad():  # a frozen scale set to another value is used from the next call on
        act.alpha.fill_(2.0)
    torch.testing.assert_close(act(x), 2 * x)
    with torch.no_grad():
        act.alpha.fill_(1.0)
        act.beta.fill_(-0.5)
    torch.testing.assert_close(act(x), -0.5 * x)
    act.beta.data.fill_(1.0)  # even through .data, which bypasses autograd's version counter
    assert act(x) is x
    act.learn_scale = True  # a learned scale always multiplies, and gets its gradient
    y = act(x)
    assert y is not x
    y.sum().backward()
    assert act.alpha.grad is not None and act.beta.grad is not None


def test_learnable_operators_train_through_the_activation() -> None:
    act = TreeActivation(OperatorTree("mix", "acon", "tanhsoft1"))
    act(torch.linspace(-2, 2, 9)).square().sum().backward()
    grads = {name: p.grad for name, p in act.named_parameters() if p.requires_grad}
    assert set(grads) == {"left_op.p1", "left_op.p2", "left_op.beta", "right_op.alpha", "binary_op.beta"}
    assert all(g is not None and torch.isfinite(g) for g in grads.values())


def test_repr_shows_the_formula() -> None:
    text = repr(TreeActivation(OperatorTree("max", "x", "sin")))
    assert "formula='max(x, sin(x))', learn_scale=False" in text


def _trained(formula: str) -> TreeActivation:
    act = TreeActivation(OperatorTree.parse(formula), learn_scale=True)
    with torch.no_grad():
        for i, p in enumerate(act.parameters()):
            p.add_(0.1 * (i + 1))
    return act


def test_deepcopy_pickle_and_state_dict_round_trip() -> None:
    x = torch.linspace(-3, 3, 25)
    act = _trained("mix(acon(x), srs(x))")
    expected = act(x).detach()

    twin = copy.deepcopy(act)
    torch.testing.assert_close(twin(x), expected)
    with torch.no_grad():
        twin.left_op.p1.add_(1.0)
    torch.testing.assert_close(act(x).detach(), expected)  # the copy owns its parameters

    restored = pickle.loads(pickle.dumps(act))
    assert restored.tree == act.tree and restored.learn_scale
    torch.testing.assert_close(restored(x), expected)

    buffer = io.BytesIO()
    torch.save(act.state_dict(), buffer)
    buffer.seek(0)
    fresh = TreeActivation(OperatorTree.parse("mix(acon(x), srs(x))"))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh(x), expected)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_torch_export_and_jit_trace_of_a_model_with_learnable_operators() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 4), _trained("mix(acon(x), srs(x))"), nn.Linear(4, 4), TreeActivation("tanhsoft1(x)"),
        nn.Linear(4, 2),
    )
    x, other = torch.randn(5, 3), torch.randn(7, 3)
    exported = torch.export.export(model, (x,))
    names = set(exported.state_dict)
    assert {"1.left_op.p1", "1.right_op.alpha", "1.binary_op.beta", "3.left_op.alpha"} <= names
    assert not any(name.startswith("3.right_op") for name in names)  # a unary tree has no right operand
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(other[:5]), model(other[:5]))
        traced = torch.jit.trace(model, (x,), check_trace=False)
        torch.testing.assert_close(traced(other), model(other))


class _EveryOperator(nn.Module):
    """Every unary and every binary operator, each in a TreeActivation, summed."""

    def __init__(self) -> None:
        super().__init__()
        self.acts = nn.ModuleList([TreeActivation(OperatorTree.unary(n)) for n in UNARY])
        self.acts.extend(TreeActivation(OperatorTree(b, "sin", "x")) for b in BINARY if b != "left")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([act(x) for act in self.acts]).sum(0)


def test_every_operator_survives_torch_export() -> None:
    model = _EveryOperator()
    x = torch.linspace(-4, 4, 17)
    exported = torch.export.export(model, (x,))
    other = torch.linspace(-20, 20, 17)  # crosses the clamp bounds the example input did not reach
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(other), model(other))
