"""Operator registries: names, values, and the numerical guard (finite output and gradient)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from safs_optuna import operators
from safs_optuna.operators import ACON, BINARY, SRS, UNARY, Mix, Operator, TanhSoft1, get_binary, get_unary

PAPER_UNARY = (
    "relu6 hardswish swish tanhsoft1 acon gelu srs elu tanh softplus logsigmoid symlog symexp".split()
)
CLASSIC_UNARY = (
    "relu x neg abs square cube sqrt_abs exp sin cos sinh cosh asinh atan sinc max0 min0 sigmoid erf gauss "
    "zero one"
).split()
REQUIRED_BINARY = "add sub mul max min left sigmoid_gate safe_div mix".split()

LIMIT = 1e4
# Values where guards matter: the range's ends, 0 and its neighbours (sinc, sqrt_abs, symlog),
# subnormals, and each clamp bound with its neighbours.
SPECIAL = [
    0.0, -0.0, 1e-45, -1e-45, 1e-30, -1e-30, 1e-7, -1e-7, 1.0, -1.0, 9.999, 10.0, 10.001, -10.0, -10.001,
    60.0, -60.0, 88.0, -88.0, 100.0, -100.0, 1e3, -1e3, 1e3 + 1, -1e3 - 1, 3e3, -3e3, LIMIT, -LIMIT,
]

finite_floats = st.floats(min_value=-LIMIT, max_value=LIMIT, allow_nan=False, allow_infinity=False, width=32)
few = settings(max_examples=25, deadline=None)


# The ways exp and tanh are computed on CPU (MKL's kernels, exp2 and sigmoid, or plain exp and
# sigmoid): each machine uses one of them, so the value tests check all of them on every machine.
KERNEL_CHOICES = {
    "exp and tanh": dict(_MKL_MATH_IS_FAST=True, _EXP_VIA_EXP2=False),
    "exp2 and sigmoid": dict(_MKL_MATH_IS_FAST=False, _EXP_VIA_EXP2=True),
    "exp and sigmoid": dict(_MKL_MATH_IS_FAST=False, _EXP_VIA_EXP2=False),
}


@pytest.fixture(params=list(KERNEL_CHOICES))
def kernel_choice(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in KERNEL_CHOICES[request.param].items():
        monkeypatch.setattr(operators, name, value)
    return request.param


def test_fast_math_kernels_are_chosen_only_on_intel_cpus_with_mkl() -> None:
    simd = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    intel_mkl = operators._cpu_vendor() == "GenuineIntel" and torch.backends.mkl.is_available()
    assert operators._MKL_MATH_IS_FAST == (simd and intel_mkl)
    assert operators._EXP_VIA_EXP2 == (simd and not intel_mkl)


def _check_finite(op: Operator, *inputs: torch.Tensor) -> None:
    """Output, input gradients and parameter gradients of ``op`` on ``inputs`` are all finite."""
    module = op.build()
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    out = module(*leaves)
    assert out.shape == leaves[0].shape
    assert torch.isfinite(out).all(), f"{op.name}: non-finite output at {inputs} -> {out}"
    if not out.requires_grad:  # a constant of x with no parameters
        return
    wrt = leaves + [p for p in module.parameters() if p.requires_grad]
    # Per-element upstream gradient of 1, not out.sum(): the sum itself could overflow.
    grads = torch.autograd.grad(out, wrt, torch.ones_like(out), allow_unused=True)
    for g in grads:
        assert g is None or torch.isfinite(g).all(), f"{op.name}: non-finite gradient at {inputs} -> {g}"


def test_unary_registry_holds_the_papers_operators_under_their_names() -> None:
    assert set(PAPER_UNARY + CLASSIC_UNARY) <= set(UNARY)
    assert all(op.name == name and op.arity == 1 for name, op in UNARY.items())


def test_binary_registry_holds_the_papers_operators_under_their_names() -> None:
    assert set(REQUIRED_BINARY) <= set(BINARY)
    assert all(op.name == name and op.arity == 2 for name, op in BINARY.items())
    assert {n for n, op in BINARY.items() if op.commutative} == {"add", "mul", "max", "min"}


def test_learnable_operators_are_modules_with_fresh_parameters() -> None:
    assert {n for n, op in UNARY.items() if op.learnable} == {"acon", "srs", "tanhsoft1"}
    assert {n for n, op in BINARY.items() if op.learnable} == {"mix"}
    for op in [*UNARY.values(), *BINARY.values()]:
        first, second = op.build(), op.build()
        params = list(first.parameters())
        assert bool(params) == op.learnable
        assert all(p.requires_grad for p in params)
        # Each use gets its own parameters: two sites must not share them.
        assert not {id(p) for p in params} & {id(p) for p in second.parameters()}


def test_unknown_names_are_named_and_valid_ones_listed() -> None:
    with pytest.raises(ValueError, match=r"unknown unary operator 'foo'; valid: abs, acon, asinh"):
        get_unary("foo")
    with pytest.raises(ValueError, match=r"unknown binary operator 'sin'; valid: add, left, max"):
        get_binary("sin")
    assert get_unary("gelu") is UNARY["gelu"] and get_binary("mix") is BINARY["mix"]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(name="a", arity=3, fn=torch.sin),
        dict(name="b", arity=1, fn=None),
        dict(name="c", arity=1, fn=torch.sin, factory=ACON),
        dict(name="d", arity=1, fn=torch.sin, commutative=True),
    ],
)
def test_operator_rejects_inconsistent_definitions(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=repr(kwargs["name"])):
        Operator(**kwargs)


def _apply(name: str, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return UNARY[name].build()(x)


def test_unary_values(kernel_choice: str) -> None:
    x = torch.linspace(-6, 6, 241)
    torch_equivalents = {
        "relu": torch.relu, "relu6": F.relu6, "swish": F.silu, "gelu": F.gelu, "elu": F.elu,
        "tanh": torch.tanh,
        "hardswish": F.hardswish, "softplus": F.softplus, "logsigmoid": F.logsigmoid, "mish": F.mish,
        "sigmoid": torch.sigmoid, "x": lambda t: t, "neg": torch.neg, "abs": torch.abs,
        "square": torch.square,
        "cube": lambda t: t**3, "exp": torch.exp, "sin": torch.sin, "cos": torch.cos, "sinh": torch.sinh,
        "cosh": torch.cosh, "asinh": torch.asinh, "atan": torch.atan, "max0": torch.relu,
        "min0": lambda t: torch.clamp(t, max=0), "erf": torch.erf, "gauss": lambda t: torch.exp(-t * t),
        "zero": torch.zeros_like, "one": torch.ones_like, "selu": F.selu, "softsign": F.softsign,
        "hardtanh": F.hardtanh, "hardsigmoid": F.hardsigmoid, "leaky_relu": F.leaky_relu,
        "symlog": lambda t: torch.sign(t) * torch.log1p(t.abs()),
        "symexp": lambda t: torch.sign(t) * torch.expm1(t.abs()),
        "sinc": lambda t: torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t),
        "elish": lambda t: torch.where(t >= 0, t, torch.expm1(t)) * torch.sigmoid(t),
        "sqrt_abs": lambda t: torch.sqrt(t.abs()),
        # Learnable operators at the SAFS code's initial values.
        "acon": lambda t: t,  # p1 = p2 = 1: ACON-C starts as the identity
        "srs": lambda t: t / (t + torch.exp(-t)),
        "tanhsoft1": lambda t: torch.tanh(t) * F.softplus(t),
    }
    assert set(torch_equivalents) == set(UNARY)
    for name, reference in torch_equivalents.items():
        atol = 1e-2 if name == "sqrt_abs" else 1e-5  # smoothed at 0 by design
        torch.testing.assert_close(_apply(name, x), reference(x), atol=atol, rtol=1e-5, msg=name)


def test_binary_values() -> None:
    a, b = torch.randn(2, 100, generator=torch.Generator().manual_seed(0)) * 3
    expected = {
        "add": a + b, "sub": a - b, "mul": a * b, "max": torch.maximum(a, b), "min": torch.minimum(a, b),
        "left": a, "sigmoid_gate": torch.sigmoid(a) * b, "safe_div": a / (1 + b.abs()), "mix": 0.5 * (a + b),
    }
    assert set(expected) == set(BINARY)
    for name, value in expected.items():
        with torch.no_grad():
            torch.testing.assert_close(BINARY[name].build()(a, b), value, msg=name)
    for name in ("add", "mul", "max", "min"):
        with torch.no_grad():
            torch.testing.assert_close(BINARY[name].build()(a, b), BINARY[name].build()(b, a))


def test_saturating_operators_saturate(kernel_choice: str) -> None:
    big = torch.tensor([2e3, 5e3, 1e4])  # beyond every clamp bound
    # The same value all beyond the bound: the value at the bound (exp within float32 rounding;
    # it may be computed as exp2).
    for name, x, value in (("exp", big, math.exp(10.0)), ("symexp", -big, -math.expm1(10.0))):
        y = _apply(name, x)
        assert torch.equal(y, y[:1].expand(3)), name
        assert y[0].item() == pytest.approx(value, rel=1e-6), name
    assert torch.equal(_apply("cube", big), torch.full((3,), 1e6))
    assert torch.equal(_apply("square", -big), torch.full((3,), 1e6))


def test_gradient_at_zero_is_the_true_slope_where_one_exists() -> None:
    x = torch.zeros(1, requires_grad=True)
    slopes = {"symlog": 1.0, "symexp": 1.0, "sinc": 0.0, "x": 1.0, "asinh": 1.0, "sin": 1.0}
    for name, slope in slopes.items():
        (g,) = torch.autograd.grad(UNARY[name].build()(x).sum(), x)
        assert g.item() == pytest.approx(slope), name


def test_learnable_parameters_move_the_function() -> None:
    x = torch.linspace(-3, 3, 13)
    acon, srs, tanhsoft, mix = ACON(), SRS(), TanhSoft1(), Mix()
    with torch.no_grad():
        acon.p2.fill_(0.0)  # ACON-C with p1 = 1, p2 = 0, beta = 1 is swish
        torch.testing.assert_close(acon(x), F.silu(x))
        srs.alpha.fill_(5.0), srs.beta.fill_(3.0)
        torch.testing.assert_close(srs(x), x / (x / 5 + torch.exp(-x / 3)))
        tanhsoft.alpha.fill_(2.0)
        torch.testing.assert_close(tanhsoft(x), torch.tanh(2 * x) * F.softplus(x))
        mix.beta.fill_(1.0)
        torch.testing.assert_close(mix(x, -x), x)


def test_srs_stays_finite_when_training_drives_its_parameters_to_bad_values() -> None:
    x = torch.tensor(SPECIAL)
    for alpha, beta in [(0.0, 1.0), (1.0, 0.0), (1.0, 10.0), (-1.0, 1.0), (1e-9, -1e-9)]:
        srs = SRS(alpha, beta)
        _check_finite(Operator("srs", 1, None, lambda srs=srs: srs), x)


@pytest.mark.parametrize(
    "unguarded", [torch.exp, torch.sinh, lambda t: torch.sin(t) / t, lambda t: torch.sqrt(t.abs())]
)
def test_the_finiteness_check_catches_unguarded_operators(unguarded) -> None:
    with pytest.raises(AssertionError, match="non-finite"):
        _check_finite(Operator("unguarded", 1, unguarded), torch.tensor(SPECIAL))


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_finite_on_special_values(name: str, kernel_choice: str) -> None:
    _check_finite(UNARY[name], torch.tensor(SPECIAL, dtype=torch.float32))


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_finite_on_special_values(name: str) -> None:
    values = torch.tensor(SPECIAL, dtype=torch.float32)
    a, b = torch.cartesian_prod(values, values).unbind(1)
    _check_finite(BINARY[name], a, b)


@pytest.mark.parametrize("name", list(UNARY))
@few
@given(values=st.lists(finite_floats, min_size=1, max_size=32))
def test_unary_finite_property(name: str, values: list[float]) -> None:
    _check_finite(UNARY[name], torch.tensor(values + [-LIMIT, 0.0, LIMIT], dtype=torch.float32))


@pytest.mark.parametrize("name", list(BINARY))
@few
@given(pairs=st.lists(st.tuples(finite_floats, finite_floats), min_size=1, max_size=32))
def test_binary_finite_property(name: str, pairs: list[tuple[float, float]]) -> None:
    pairs = pairs + [(-LIMIT, LIMIT), (0.0, 0.0), (LIMIT, -LIMIT), (LIMIT, LIMIT), (-LIMIT, -LIMIT)]
    a, b = torch.tensor(pairs, dtype=torch.float32).unbind(1)
    _check_finite(BINARY[name], a, b)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_every_operator_survives_jit_trace() -> None:
    x = torch.randn(16, generator=torch.Generator().manual_seed(1)) * 4
    y = torch.randn(16, generator=torch.Generator().manual_seed(2)) * 4
    for op in [*UNARY.values(), *BINARY.values()]:
        module = op.build()
        args = (x,) if op.arity == 1 else (x, y)
        with torch.no_grad():
            traced = torch.jit.trace(module, args, check_trace=False)
            # A different input: a trace that baked in a data-dependent branch would give wrong values.
            new_args = tuple(-2 * t for t in args)
            torch.testing.assert_close(traced(*new_args), module(*new_args), msg=op.name)


# --- the fast formulations compute what the textbook ones did ------------------------------------
# The operators are written with cheap CPU kernels (see the operators module docstring). These are
# the plain formulations they replaced, term for term; on a grid where the plain one is finite the
# two must agree in value and in the gradients for the input and for every parameter.


def _previous_srs(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    alpha = torch.clamp(torch.abs(alpha), min=1e-3)
    beta = torch.clamp(torch.abs(beta), min=1e-3)
    den = x / alpha + torch.exp(torch.clamp(-x / beta, max=60.0))
    return x / torch.clamp(den, min=1e-3)


def _previous_acon(x: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    d = (p1 - p2) * x
    return d * torch.sigmoid(beta * d) + p2 * x


def _previous_symlog(x: torch.Tensor) -> torch.Tensor:
    magnitude = torch.log1p(torch.where(x >= 0, x, -x))
    return torch.where(x >= 0, magnitude, -magnitude)


def _previous_symexp(x: torch.Tensor) -> torch.Tensor:
    magnitude = torch.expm1(torch.clamp(torch.where(x >= 0, x, -x), max=10.0))
    return torch.where(x >= 0, magnitude, -magnitude)


PREVIOUS_UNARY = {
    "tanh": torch.tanh,
    "softplus": F.softplus,
    "logsigmoid": F.logsigmoid,
    "elu": F.elu,
    "selu": F.selu,
    "mish": F.mish,
    "softsign": F.softsign,
    "asinh": torch.asinh,
    "sinc": lambda t: torch.sinc(t / math.pi),
    "sinh": lambda t: torch.sinh(torch.clamp(t, -10.0, 10.0)),
    "cosh": lambda t: torch.cosh(torch.clamp(t, -10.0, 10.0)),
    "exp": lambda t: torch.exp(torch.clamp(t, max=10.0)),
    "square": lambda t: torch.square(torch.clamp(t, -1e3, 1e3)),
    "cube": lambda t: torch.pow(torch.clamp(t, -1e2, 1e2), 3),
    "gauss": lambda t: torch.exp(-torch.square(torch.clamp(t, -10.0, 10.0))),
    "min0": lambda t: -torch.relu(-t),
    "sqrt_abs": lambda t: torch.sqrt(torch.abs(t) + 1e-4) - 1e-2,
    "symlog": _previous_symlog,
    "symexp": _previous_symexp,
    "elish": lambda t: F.elu(t) * torch.sigmoid(t),
    "tanhsoft1": lambda t, alpha: torch.tanh(alpha * t) * F.softplus(t),
    "acon": _previous_acon,
    "srs": _previous_srs,
}
PREVIOUS_BINARY = {
    "max": torch.maximum,
    "min": torch.minimum,
    "safe_div": lambda a, b: a / (1.0 + torch.abs(b)),
    "mix": lambda a, b, beta: beta * a + (1.0 - beta) * b,
}
# Parameter values beyond the initial ones, including SRS values that drive its clamps.
PARAMETER_SETTINGS = {
    "tanhsoft1": [dict(alpha=1.0), dict(alpha=-2.5)],
    "acon": [dict(p1=1.0, p2=1.0, beta=1.0), dict(p1=1.5, p2=0.2, beta=0.8)],
    "srs": [dict(alpha=1.0, beta=1.0), dict(alpha=5.0, beta=3.0), dict(alpha=-0.3, beta=0.05),
            dict(alpha=1e-9, beta=1.0), dict(alpha=1.0, beta=0.01)],
    "mix": [dict(beta=0.5), dict(beta=-0.3)],
}
# A grid that steps over every clamp bound (±10, ±60, ±1e2, ±1e3) without landing on one: exactly
# at a bound the fast clamps give the gradient 0 where torch.clamp gave the inner slope.
GRID = torch.cat([
    torch.linspace(-40.0, 40.0, 4000),
    torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 1e-3, -1e-3, 150.0, -150.0, 2e3, -2e3, 1e4, -1e4]),
])


def _values_and_grads(fn, inputs: list[torch.Tensor], params: dict[str, float]):
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    out = fn(*leaves, *tensors.values())
    upstream = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
    grads = torch.autograd.grad(out, leaves + list(tensors.values()), upstream)
    return out.detach(), grads


def _new_operator(op: Operator, params: dict[str, float]):
    module = op.build()
    with torch.no_grad():
        for name, value in params.items():
            getattr(module, name).fill_(value)
    names = list(params)

    def call(*args: torch.Tensor) -> torch.Tensor:
        # The parameters enter as the module's own; their gradients are read off the module.
        return module(*args[: op.arity])

    return module, names, call


def _compare(name: str, op: Operator, previous, inputs: list[torch.Tensor], params: dict[str, float]) -> None:
    old_out, old_grads = _values_and_grads(previous, inputs, params)
    module, names, call = _new_operator(op, params)
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    out = call(*leaves)
    upstream = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
    wrt = leaves + [getattr(module, n) for n in names]
    new_grads = torch.autograd.grad(out, wrt, upstream)
    finite = torch.isfinite(old_out)
    for g in old_grads[: len(inputs)]:
        finite &= torch.isfinite(g)
    label = f"{name} {params}"
    torch.testing.assert_close(out[finite], old_out[finite], atol=1e-6, rtol=1e-5, msg=label)
    for i, (new, old) in enumerate(zip(new_grads, old_grads)):
        if i < len(inputs):
            torch.testing.assert_close(new[finite], old[finite], atol=1e-5, rtol=1e-4, msg=f"{label} d/input{i}")
        else:  # a parameter: its gradient sums over the elements, compare on the finite part only
            if not bool(finite.all()):
                continue
            torch.testing.assert_close(new, old, atol=1e-4, rtol=1e-4, msg=f"{label} d/{names[i - len(inputs)]}")


@pytest.mark.parametrize("name", list(PREVIOUS_UNARY))
def test_unary_matches_its_previous_formulation(name: str, kernel_choice: str) -> None:
    for params in PARAMETER_SETTINGS.get(name, [{}]):
        _compare(name, UNARY[name], PREVIOUS_UNARY[name], [GRID], params)


@pytest.mark.parametrize("name", list(PREVIOUS_BINARY))
def test_binary_matches_its_previous_formulation(name: str) -> None:
    gen = torch.Generator().manual_seed(3)
    a = torch.cat([torch.randn(2000, generator=gen) * 5, GRID[::4]])
    b = torch.cat([torch.randn(2000, generator=gen) * 5, GRID[::4]])  # ties: the GRID half
    for params in PARAMETER_SETTINGS.get(name, [{}]):
        _compare(name, BINARY[name], PREVIOUS_BINARY[name], [a, b], params)


def test_max_and_min_split_the_gradient_on_ties() -> None:
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = torch.tensor([1.0, 5.0, -1.0], requires_grad=True)
    for name, share_a in (("max", [0.5, 0.0, 1.0]), ("min", [0.5, 1.0, 0.0])):
        ga, gb = torch.autograd.grad(BINARY[name].build()(a, b).sum(), (a, b))
        assert ga.tolist() == share_a and gb.tolist() == [1 - s for s in share_a], name


@pytest.mark.parametrize("name", list(UNARY))
def test_inference_path_gives_the_training_values(name: str, kernel_choice: str) -> None:
    x = GRID.clone()
    module = UNARY[name].build()
    with torch.no_grad():
        plain = module(x)
    trained = module(x.requires_grad_(True))
    torch.testing.assert_close(trained.detach(), plain, atol=0.0, rtol=0.0, msg=name)
