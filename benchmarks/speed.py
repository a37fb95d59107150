"""Speed of the activations: one LeNet-5 train step per operator tree, relative to relu(x).

Each candidate is LeNet-5 from ``safs_optuna.models``, made searchable and magnitude-pruned to
0.99 layer-wise (``safs_optuna.sparsity.magnitude_prune``), with the same tree at every site.
A step is a full train step on a batch of 64 random 1x28x28 inputs: forward, cross-entropy,
backward, Adam step (fused, as ``safs_optuna.training.fit`` takes it). The plain dense torch
LeNet-5 with ``nn.ReLU`` is a reference row.

The machine is shared and noisy, so a step is timed in CPU time of the benchmark thread
(``time.thread_time``; with one torch thread the whole step, backward included, runs on it), which
does not count the time spent waiting for a shared core, and candidates are interleaved: every
round times every candidate once (in a fresh random order), and a candidate's ms/step is the
median over rounds of its mean step time in that round. Even so the speed of the machine drifts
(all candidates together, by up to a third between rounds of a minute), so a ratio is measured
locally: every candidate's block of steps lies between two blocks of a separate ``relu(x)``
model, its ratio in a round is its step time over the mean of those two, and the table gives the
median over rounds (the relu(x) rows, timed the same way, show what is left of the noise).
``--before REF`` also times the operators as they were at git commit REF (its
``safs_optuna/operators.py``, or an operators file), interleaved with the current ones, so that
before and after are measured under the same load.

Like a worker, the benchmark sets malloc to keep freed memory for reuse
(``safs_optuna.allocator``); ``--default-malloc`` leaves it as it is, where the page faults of
fresh memory make operators with many temporaries dearer.

The ``memory`` section counts what every tree keeps for its backward, in feature maps.

The ``kernels`` section times single kernels on LeNet-5's largest activation tensor, with and
without PyTorch's own vectorized code (``ATEN_CPU_CAPABILITY=default``), which tells which kernels
an operator can be cheap with on this machine. The activations section ends with the trees above
their limits (a unary operator 1.3x relu(x), a binary tree 1.6x).

The ``device`` section (run by default where there is a GPU) gives the GPU figures: the
activations table on ``--device``, timed in wall time once the device has finished each block, and a
stage-1 candidate's epoch on LeNet-5, VGG-16 and ResNet-18 there, with relu(x) and with one tree.

Writes benchmarks/results/speed.md (``--out``; a run of other sections than the default ones
writes speed_<sections>.md).

    python benchmarks/speed.py --threads 1 --repeats 7 [--before REF] [--sections activations]
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import safs_optuna as so
from safs_optuna import operators
from safs_optuna.activation import OperatorTree, TreeActivation
from safs_optuna.allocator import retain_freed_memory
from safs_optuna.models import set_trees
from safs_optuna.space import ActivationSpace
from safs_optuna.training import fused_optimizer

from bench_args import device_name

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64

# Binary trees measured: every binary operator except ``left`` (whose trees are the unary rows)
# with each of these operand pairs: the identity with a cheap unary (the b(x, u) form of the
# compact preset), and pairs of the slowest unaries (learnable ones included, since their
# parameters add gradient reductions).
TREE_PAIRS: tuple[tuple[str, str], ...] = (("x", "sin"), ("tanhsoft1", "srs"), ("mish", "acon"))
# Trees named in earlier measurements, kept for continuity.
EXTRA_TREES: tuple[str, ...] = ("sigmoid_gate(erf(x), acon(x))", "mix(gelu(x), srs(x))")


@dataclass
class Candidate:
    """One timed configuration: a label, a model, its optimizer, and its per-round times."""

    label: str
    group: str
    model: nn.Module
    optimizer: torch.optim.Optimizer = field(init=False)
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = fused_optimizer(torch.optim.Adam, params, lr=1e-3)  # as training.fit's

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.times)

    @property
    def ratio(self) -> float:
        """Median over rounds of the step time over the reference's beside it."""
        return statistics.median(self.ratios)

    @property
    def ratio_quartiles(self) -> tuple[float, float]:
        q1, _, q3 = statistics.quantiles(self.ratios, n=4) if len(self.ratios) > 1 else [self.ratio] * 3
        return q1, q3


def train_step(c: Candidate, x: torch.Tensor, y: torch.Tensor) -> None:
    """One step as safs_optuna.training.fit takes it."""
    loss = F.cross_entropy(c.model(x), y)
    c.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    c.optimizer.step()


def step_clock(device: str) -> Callable[[], float]:
    """Seconds, read where a block of steps starts and ends. On a CPU the CPU time of this thread
    (with one torch thread the whole step runs on it; time waiting for a shared core is not
    counted); on an accelerator the wall time once its queued kernels have finished, since the
    host's CPU time would count only their launches."""
    if torch.device(device).type == "cpu":
        return time.thread_time
    # torch.accelerator (any device type) from torch 2.6; the CUDA call before it
    synchronize = torch.accelerator.synchronize if hasattr(torch, "accelerator") else torch.cuda.synchronize

    def clock() -> float:
        synchronize()
        return time.perf_counter()

    return clock


def time_rounds(cands: list[Candidate], repeats: int, steps: int, warmup: int, seed: int,
                reference: Candidate | None = None, device: str = "cpu") -> None:
    """Append to every candidate's ``times`` its mean step time in each of ``repeats`` rounds.

    With a ``reference``, every candidate's block of steps lies between two blocks of the
    reference, and each round also appends to its ``ratios`` its step time over the mean of those
    two: the drift of the machine's speed cancels in the ratio. The models must be on ``device``.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (BATCH,), generator=gen).to(device)
    clock = step_clock(device)
    order = list(cands)
    rng = random.Random(seed)

    def block(c: Candidate) -> float:
        for _ in range(warmup):
            train_step(c, x, y)
        start = clock()
        for _ in range(steps):
            train_step(c, x, y)
        seconds = (clock() - start) / steps
        c.times.append(seconds)
        return seconds

    for c in cands + ([reference] if reference else []):  # first touch: allocations, Adam state
        for _ in range(warmup):
            train_step(c, x, y)
    for r in range(repeats):
        rng.shuffle(order)
        beside = block(reference) if reference else 0.0
        for c in order:
            seconds = block(c)
            if reference:
                after = block(reference)
                c.ratios.append(seconds / ((beside + after) / 2))
                beside = after
        print(f"  round {r + 1}/{repeats} done", file=sys.stderr)


# ----------------------------------------------------------------------------- operator versions


def load_operators(ref: str) -> types.ModuleType:
    """An operators module as a separate module: a file path, or the git commit ``ref``'s
    ``safs_optuna/operators.py``."""
    if Path(ref).is_file():
        source = Path(ref).read_text()
    else:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:safs_optuna/operators.py"],
            check=True, capture_output=True, text=True,
        ).stdout
    name = "_operators_before"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses looks the module up while building Operator
    module.__package__ = "safs_optuna"  # its relative imports: the installed package's modules
    exec(compile(source, f"{ref}:safs_optuna/operators.py", "exec"), module.__dict__)
    return module


def use_operators(model: nn.Module, registry: types.ModuleType) -> None:
    """Rebuild the operators of every TreeActivation of ``model`` from ``registry``'s UNARY/BINARY."""
    for m in model.modules():
        if isinstance(m, TreeActivation):
            m.left_op = registry.UNARY[m.tree.left].build()
            if m.right_op is not None:
                m.right_op = registry.UNARY[m.tree.right].build()
            if m.binary_op is not None:
                m.binary_op = registry.BINARY[m.tree.binary].build()


# ----------------------------------------------------------------------------- section: activations


def sparse_lenet5(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = so.make_searchable(so.build_model("lenet5"))
    so.magnitude_prune(model, 0.99, scope="layer")
    return model


def with_tree(base: nn.Module, tree: OperatorTree) -> nn.Module:
    """A copy of ``base`` with ``tree`` at every site."""
    model = copy.deepcopy(base)
    set_trees(model, {site: tree for site in so.sites(model)})
    return model


def time_beside_relu(cands: list[Candidate], base: nn.Module, args: argparse.Namespace, label: str,
                     device: str = "cpu") -> Candidate:
    """Time ``cands`` (on ``device``) in interleaved rounds beside a relu(x) copy of ``base`` (see
    :func:`time_rounds`); that reference, named ``label``."""
    beside = Candidate(label, "reference", with_tree(base, OperatorTree.unary("relu")).to(device))
    print(f"{len(cands)} candidates, {args.repeats} rounds on {device}", file=sys.stderr)
    time_rounds(cands, args.repeats, args.steps, args.warmup, args.seed, reference=beside, device=device)
    return beside


def activation_trees() -> list[OperatorTree]:
    """Every unary of the presets (``core`` holds them all) and the sample of binary trees."""
    unary = list(dict.fromkeys(u for p in ActivationSpace.PRESETS for u in ActivationSpace.preset(p).unary))
    trees = [OperatorTree.unary(u) for u in unary]
    binaries = [b for b in ActivationSpace.preset("core").binary if b != "left"]
    trees += [OperatorTree(b, u, v) for u, v in TREE_PAIRS for b in binaries]
    trees += [OperatorTree.parse(f) for f in EXTRA_TREES]
    return trees


def _versions(args: argparse.Namespace) -> dict[str, types.ModuleType]:
    """The operator registries to compare: the current one, after ``--before``'s when given."""
    if args.before:
        return {"before": load_operators(args.before), "after": operators}
    return {"after": operators}


def _selected(args: argparse.Namespace) -> list[OperatorTree]:
    """:func:`activation_trees` narrowed to ``--trees`` (relu(x), the reference, always kept)."""
    return [t for t in activation_trees()
            if not args.trees or t.formula in args.trees or t.formula == "relu(x)"]


def activation_table(args: argparse.Namespace, device: str) -> tuple[str, str, Candidate]:
    """Time every tree of :func:`activation_trees` (``--trees``) on ``device``: the markdown table,
    the line per kind of the trees above their limits, and the relu(x) reference."""
    base = sparse_lenet5()
    versions = _versions(args)
    cands: list[Candidate] = []
    torch.manual_seed(0)
    cands.append(Candidate("dense torch LeNet-5, nn.ReLU", "reference", so.build_model("lenet5").to(device)))
    for tree in _selected(args):
        for version, registry in versions.items():
            model = with_tree(base, tree)
            use_operators(model, registry)
            cands.append(Candidate(tree.formula, version, model.to(device)))
    beside = time_beside_relu(cands, base, args, "relu(x), timed beside every candidate", device)

    by = {(c.label, c.group): c for c in cands}
    labels = list(dict.fromkeys(c.label for c in cands if c.group != "reference"))
    header = "| activation |" + "".join(f" {v} ms/step | {v} ratio |" for v in versions)
    lines = [header, "|---|" + "---:|---:|" * len(versions)]
    dense = by[("dense torch LeNet-5, nn.ReLU", "reference")]
    lines.append("| dense torch LeNet-5, nn.ReLU (reference) |"
                 + f" {dense.median_ms:.2f} | {dense.ratio:.2f} |" * len(versions))
    for label in labels:
        cells = "".join(f" {by[(label, v)].median_ms:.2f} | {by[(label, v)].ratio:.2f} |" for v in versions)
        lines.append(f"| {label} |{cells}")
    after = {label: by[(label, "after")] for label in labels}
    summary = _over_limits(after, {t.formula: t.is_unary for t in activation_trees()})
    return "\n".join(lines), summary, beside


def section_activations(args: argparse.Namespace) -> str:
    """Time every tree of :func:`activation_trees` on the CPU; the markdown section with the table."""
    table, summary, beside = activation_table(args, "cpu")
    intro = (
        "Sparse LeNet-5 (0.99 layer-wise magnitude), the same tree at all 4 sites, batch 64 of 1x28x28, "
        "one train step (forward, cross-entropy, backward, fused Adam step, as in training), eager. "
        f"CPU time of the benchmark thread over {args.repeats} interleaved rounds of {args.steps} steps "
        "per candidate; ms/step: the median over rounds. "
        "Ratio: the step time over that of a separate relu(x) model timed just before and just after "
        f"it (the mean of the two), median over rounds; the relu(x) rows show the noise left "
        f"(the reference itself: {beside.median_ms:.2f} ms/step)."
    )
    if args.before:
        intro += f" *before*: operators of commit `{args.before}`; *after*: the current operators."
    return "## Activations\n\n" + intro + "\n\n" + table + "\n\n" + summary + "\n\n" + KERNEL_STATE_NOTE + "\n"


# The targets: a unary operator at most 1.3x relu(x), a binary tree of two at most 1.6x.
UNARY_LIMIT, BINARY_LIMIT = 1.3, 1.6


def _over_limits(cands: dict[str, Candidate], unary: dict[str, bool]) -> str:
    """One line per kind: the trees above their limit (with the quartiles of their ratio over the
    rounds), or that none is."""
    lines = []
    for kind, limit, is_kind in (("unary operators", UNARY_LIMIT, True), ("binary trees", BINARY_LIMIT, False)):
        timed = [f for f in cands if unary.get(f) is is_kind]
        over = sorted((f for f in timed if cands[f].ratio > limit), key=lambda f: -cands[f].ratio)
        listed = ", ".join(f"`{f}` {cands[f].ratio:.2f} ({'–'.join(f'{q:.2f}' for q in cands[f].ratio_quartiles)})"
                           for f in over)
        lines.append(f"- {kind} above {limit}× relu(x): " + (f"{len(over)} of {len(timed)} ({listed})" if over
                                                              else f"none of {len(timed)}"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- section: memory


def _saved_maps(act: nn.Module, x: torch.Tensor) -> float:
    """Memory that ``act(x)`` keeps for its backward, in tensors of x's size (x included if kept)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        act(x)
    return sum(storages.values()) / (x.numel() * x.element_size())


def section_memory(args: argparse.Namespace) -> str:
    """The activation memory every tree keeps until the backward: counted, not timed."""
    versions = _versions(args)
    x = torch.randn(KERNEL_SHAPE, requires_grad=True)
    lines = ["| activation |" + "".join(f" {v} |" for v in versions), "|---|" + "---:|" * len(versions)]
    for tree in _selected(args):
        cells = []
        for registry in versions.values():
            act = TreeActivation(tree)
            use_operators(act, registry)
            cells.append(f" {_saved_maps(act, x):.0f} |")
        lines.append(f"| {tree.formula} |" + "".join(cells))
    intro = (
        "What one activation site keeps for the backward, in feature maps of its input's size (its "
        "input included where it is kept), counted with `torch.autograd.graph.saved_tensors_hooks` "
        f"on a {'x'.join(map(str, KERNEL_SHAPE))} input in training. In a network this is most of "
        "the training memory beyond the weights, and on a GPU what bounds the batch size."
    )
    if args.before:
        intro += f" *before*: operators of commit `{args.before}`; *after*: the current operators."
    return "## Memory kept for the backward\n\n" + intro + "\n\n" + "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- section: optimizer

# relu(x), the costliest operators with learnable parameters, and two trees of them.
OPTIMIZER_TREES = ("relu(x)", "acon(x)", "srs(x)", "tanhsoft1(x)", "mish(x)", "mix(tanhsoft1(x), srs(x))",
                   "max(mish(x), acon(x))")


def section_optimizer(args: argparse.Namespace) -> str:
    """The train step with torch's default Adam step against the fused one training uses."""
    base = sparse_lenet5()
    cands: list[Candidate] = []
    for formula in args.trees or OPTIMIZER_TREES:
        for kind in ("default", "fused"):
            model = with_tree(base, OperatorTree.parse(formula))
            c = Candidate(formula, kind, model)
            if kind == "default":
                c.optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
            cands.append(c)
    time_beside_relu(cands, base, args, "relu(x), fused step")
    by = {(c.label, c.group): c for c in cands}
    lines = ["| activation | default step, ms | fused step, ms | saved | default, ratio | fused, ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for label in dict.fromkeys(c.label for c in cands):
        d, f = by[(label, "default")], by[(label, "fused")]
        lines.append(f"| {label} | {d.median_ms:.2f} | {f.median_ms:.2f} | {1 - f.median_ms / d.median_ms:.0%} "
                     f"| {d.ratio:.2f} | {f.ratio:.2f} |")
    intro = (
        "The train step of the activations section with `torch.optim.Adam`'s default step (on a CPU one "
        "parameter after another) and with its fused step (`fused=True`, what training uses where torch "
        "has one). The learnable operators add 0-dim parameters (3 per site for `acon`, 2 for `srs`, 1 for "
        f"`tanhsoft1`), each a dozen small ops in the default step. {args.repeats} interleaved rounds of "
        f"{args.steps} steps; ratio: over a `relu(x)` model with the fused step timed beside each candidate "
        "(so the relu(x) row's default ratio is what the fused step saves on it)."
    )
    return "## Optimizer step\n\n" + intro + "\n\n" + "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- section: device


def section_device(args: argparse.Namespace) -> str:
    """The figures on ``--device`` (a GPU): the activation table, and a stage-1 candidate's epoch
    on LeNet-5, VGG-16 and ResNet-18, with relu(x) and with ``--epoch-tree`` at every site."""
    from gpu_epochs import MODELS, epoch_seconds

    device = args.device
    table, summary, beside = activation_table(args, device)
    intro = (
        f"On {device_name(device)} (`{device}`): the activations section's train steps, each block of "
        f"{args.steps} steps timed "
        + ("in CPU time of the benchmark thread" if torch.device(device).type == "cpu" else
           "in wall time once the device has finished it (the host's CPU time would count only the kernel "
           "launches)")
        + ", over "
        f"{args.repeats} interleaved rounds, every candidate beside a relu(x) model (the reference itself: "
        f"{beside.median_ms:.2f} ms/step)."
    )
    epoch_rows = ["| model | input | train images | batch | s per epoch, relu(x) | s per epoch, "
                  f"`{args.epoch_tree}` | ratio |", "|---|---|---:|---:|---:|---:|---:|"]
    for name in args.epoch_models:
        c, size, images, batch = MODELS[name]
        relu_s, _ = epoch_seconds(name, device, "relu(x)")
        tree_s, _ = epoch_seconds(name, device, args.epoch_tree)
        epoch_rows.append(f"| {name} | {c}×{size}×{size} | {images} | {batch} | {relu_s:.3f} | {tree_s:.3f} "
                          f"| {tree_s / relu_s:.2f} |")
        print(epoch_rows[-1], file=sys.stderr)
    epochs = (
        "A stage-1 candidate's epoch (training with Adam and the validation pass, `safs_optuna.fit`) at 99 % "
        "layer-wise sparsity on synthetic data of the model's input size, after one warm-up epoch "
        "(`benchmarks/gpu_epochs.py` times the same with one tree)."
    )
    return (f"## On {device}\n\n{intro}\n\n{table}\n\n{summary}\n\n### Candidate epochs\n\n{epochs}\n\n"
            + "\n".join(epoch_rows) + "\n")


# ----------------------------------------------------------------------------- section: kernels

KERNEL_SHAPE = (BATCH, 6, 28, 28)  # LeNet-5's first activation site, the largest
KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "x * 1.5 (one arithmetic pass)": lambda x, p: x * 1.5,
    "relu": lambda x, p: torch.relu(x),
    "sigmoid": lambda x, p: torch.sigmoid(x),
    "exp2": lambda x, p: torch.exp2(x),
    "exp": lambda x, p: torch.exp(x),
    "log": lambda x, p: torch.log(p),
    "sin": lambda x, p: torch.sin(x),
    "cos": lambda x, p: torch.cos(x),
    "tanh": lambda x, p: torch.tanh(x),
    "erf": lambda x, p: torch.erf(x),
}
PASS_KERNEL = "x * 1.5 (one arithmetic pass)"
MATH_KERNELS = ("sigmoid", "exp2", "exp", "log", "sin", "cos", "tanh", "erf")
# Two timings within this share of each other count as the same kernel code.
SAME_TIME = 0.25
_KERNEL_SCRIPT = """
import json, statistics, sys, time, torch
sys.path.insert(0, {here!r})
from speed import KERNELS, KERNEL_SHAPE
torch.set_num_threads(1)
x = torch.randn(KERNEL_SHAPE, generator=torch.Generator().manual_seed(0))
p = x.abs() + 0.5
out = {{}}
for name, kernel in KERNELS.items():
    for _ in range(5):
        kernel(x, p)
    rounds = []
    for _ in range(7):
        start = time.thread_time()
        for _ in range(30):
            kernel(x, p)
        rounds.append((time.thread_time() - start) / 30)
    out[name] = 1e6 * statistics.median(rounds)
print(json.dumps(out))
"""


# MKL held to its SSE4.2 code: about what it runs on CPUs not made by Intel.
MKL_GENERIC = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}


def _kernel_times(env_over: dict[str, str]) -> dict[str, float]:
    """Microseconds per kernel call, in a fresh process with ``env_over`` in its environment."""
    import json
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", **env_over)
    code = _KERNEL_SCRIPT.format(here=str(Path(__file__).resolve().parent))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def kernel_reading(native: dict[str, float], scalar: dict[str, float],
                   generic_mkl: dict[str, float]) -> tuple[list[str], list[str], tuple[float, float]]:
    """What the kernel timings say on this machine, read off rather than stated: the
    transcendental kernels that bypass PyTorch's own vectorized code (the same time, within
    SAME_TIME, with it disabled), those of them that are MKL's (slower, by more than SAME_TIME,
    with MKL held to its generic code), and the range of their times in arithmetic passes."""
    outside = [n for n in MATH_KERNELS if abs(scalar[n] / native[n] - 1) <= SAME_TIME]
    mkl = [n for n in outside if generic_mkl[n] / native[n] - 1 > SAME_TIME]
    in_passes = [native[n] / native[PASS_KERNEL] for n in MATH_KERNELS]
    return outside, mkl, (min(in_passes), max(in_passes))


def section_kernels(args: argparse.Namespace) -> str:
    """Single kernels on the largest activation tensor, with PyTorch's own vectorized code, without
    it, and with MKL held to its generic code: a kernel whose time does not change without the
    first is not PyTorch's vectorized code; one that slows down with the last is MKL's."""
    from safs_optuna import operators

    native = _kernel_times({})
    scalar = _kernel_times({"ATEN_CPU_CAPABILITY": "default"})
    generic = _kernel_times(MKL_GENERIC)
    capability = torch.backends.cpu.get_cpu_capability()
    pass_us = native[PASS_KERNEL]
    lines = [f"| kernel | µs ({capability}) | arithmetic passes | µs (`ATEN_CPU_CAPABILITY=default`) "
             "| µs (`MKL_ENABLE_INSTRUCTIONS=SSE4_2`) |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {native[name]:.0f} | {native[name] / pass_us:.1f} | {scalar[name]:.0f} "
              f"| {generic[name]:.0f} |" for name in KERNELS]
    outside, mkl, (fewest, most) = kernel_reading(native, scalar, generic)
    choice = ("take `exp` and `tanh` as they are" if operators._MKL_MATH_IS_FAST else
              "compute `exp` as " + ("`exp2(x · log2 e)`" if operators._EXP_VIA_EXP2 else "`exp`")
              + " and `tanh` as `2σ(2x) − 1`")
    intro = (
        f"One call on a {'x'.join(map(str, KERNEL_SHAPE))} float32 tensor (LeNet-5's largest activation, "
        f"{math.prod(KERNEL_SHAPE):,} elements), one thread, each in a fresh process; median of 7 rounds of 30 "
        "calls. *Arithmetic passes*: the time over that of one arithmetic pass (the first row). The fourth "
        "column disables PyTorch's own vectorized kernels: a kernel whose time stays the same (within "
        f"{SAME_TIME:.0%}) did not use them"
        + (f"; on this machine: {', '.join(outside)}." if outside else "; on this machine none did.")
        + " The last column holds MKL to its SSE4.2 code, about what MKL runs on CPUs not made by Intel: "
        "a kernel that slows down with it is MKL's"
        + (f"; on this machine: {', '.join(mkl)}." if mkl else "; on this machine none is.")
        + f" On this machine ({operators._cpu_vendor() or 'vendor unknown'}) the operators {choice}."
        + f" Here one arithmetic pass takes {pass_us:.0f} µs, and each of the transcendental kernels "
        f"({', '.join(MATH_KERNELS)}) the time of {fewest:.1f} to {most:.1f} passes. An "
        "operator's cost is about its kernels' times added up, forward and backward, over the 4 sites, "
        "in eager PyTorch however it is written: every kernel is a pass over the tensor. Fusing them "
        "into one kernel (a compiler) is what would remove the gap."
    )
    return "## Kernels\n\n" + intro + "\n\n" + "\n".join(lines) + "\n"


# Why the before column can look cheap for the old transcendental kernels.
KERNEL_STATE_NOTE = (
    "Note: on some machines (seen on a 2-core AMD EPYC) PyTorch's expm1, log1p, tanh, softplus, "
    "elu/selu, sinh, cosh and asinh kernels run 5-10x slower per element in a fresh process (as in "
    "a real training run) than after some other kernels have run in the same process (atan2 on a "
    "large tensor is one known trigger). A long benchmark process can switch to the fast state "
    "part-way, so there the *before* column understates what these kernels cost in training; the "
    "current operators use none of them but tanh, and tanh only on Intel CPUs with MKL, where it is fast."
)

def _quick_config(tmp: str, **overrides: object):
    from safs_optuna.config import load_config

    return load_config(ROOT / "studies" / "quickstart.toml",
                       {"storage": f"sqlite:///{tmp}/speed.db", "artifacts": f"{tmp}/art", **overrides})


def section_overhead(args: argparse.Namespace) -> str:
    """Time a quick-start activation candidate spends outside its training and validation epochs:
    the sampler, the storage, copying the sparse model, the pruner, recording and logging."""
    import tempfile

    from safs_optuna.pipeline import Pipeline, bodies

    inside: list[float] = []
    original = bodies.fit

    def timed_fit(*a, on_epoch=None, **k):  # the epochs' own time: training batches + validation
        def record(stats):
            inside.append(stats.seconds)
            if on_epoch is not None:
                on_epoch(stats)
        return original(*a, on_epoch=record, **k)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _quick_config(tmp, **{"activations.trials": args.overhead_trials + 1})
        pipe = Pipeline(cfg, log=lambda msg: None)
        pipe.studies.prepare()
        stage = next(s for s in pipe.stages if s.searches == "trees")
        for once in (s for s in pipe.stages if s.kind == "once"):
            if all(pipe.studies.status(n).done for n in stage.needs):
                break
            pipe._run_once(once, pipe.studies.status(once))  # the dense network, then its sparse version
        bodies.fit = timed_fit
        try:
            for _ in range(args.overhead_trials + 1):
                inside.clear()
                start = time.perf_counter()
                pipe._run_search_trial(stage, pipe.studies.status(stage))
                rows.append((time.perf_counter() - start, sum(inside), len(inside)))
        finally:
            bodies.fit = original
    rows = rows[1:]  # the first candidate also loads the data and the dense checkpoint once
    wall = sum(r[0] for r in rows)
    epochs = sum(r[1] for r in rows)
    lines = ["## Trial overhead", "",
             f"{len(rows)} quick-start activation candidates after the first (`studies/quickstart.toml`, "
             f"{rows[0][2] if rows else 0} epochs each, one process, {torch.get_num_threads()} thread(s)): "
             "time outside the training and validation epochs, per trial.", "",
             "| trials | wall s per trial | in epochs s | outside s | outside % |", "|---|---|---|---|---|",
             f"| {len(rows)} | {wall / len(rows):.2f} | {epochs / len(rows):.2f} | {(wall - epochs) / len(rows):.3f} "
             f"| {100 * (wall - epochs) / wall:.1f} |", ""]
    return "\n".join(lines)


def section_scaling(args: argparse.Namespace) -> str:
    """Stage-1 throughput (finished candidates per hour) with 1 worker on 1 core and with 2
    workers on 2 cores, pinned with taskset, from the trials' own start and finish times."""
    import optuna
    import tempfile

    results = {}
    for workers, cores in ((1, "0"), (2, "0,1")):
        with tempfile.TemporaryDirectory() as tmp:
            sets = {"activations.trials": args.scaling_trials, "activations.epochs": 2, "ablations": False,
                    "hpo.trials": 1, "final.epochs": 1}
            cmd = ["taskset", "-c", cores, sys.executable, "-m", "safs_optuna.cli", "run",
                   str(ROOT / "studies" / "quickstart.toml"), "--workers", str(workers), "--threads", "1",
                   "--storage", f"sqlite:///{tmp}/s.db", "--set", f'artifacts="{tmp}/art"']
            for k, v in sets.items():
                cmd += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
            subprocess.run(cmd, check=True, capture_output=True)
            study = optuna.load_study(study_name="quickstart/activations", storage=f"sqlite:///{tmp}/s.db")
            done = [t for t in study.trials if t.state.is_finished() and t.datetime_complete]
            span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
            results[workers] = (len(done), span, 3600 * len(done) / span)
    ratio = results[2][2] / results[1][2]
    lines = ["## Worker scaling", "",
             f"Stage 1 of `studies/quickstart.toml` with {args.scaling_trials} candidates of 2 epochs "
             "(`taskset`: 1 worker on core 0, 2 workers on cores 0 and 1; one torch thread each).", "",
             "| workers | cores | candidates | seconds | candidates per hour |", "|---|---|---|---|---|"]
    lines += [f"| {w} | {w} | {n} | {span:.1f} | {rate:.0f} |" for w, (n, span, rate) in results.items()]
    lines += ["", f"2 workers / 1 worker: **{ratio:.2f}×** throughput.", ""]
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[argparse.Namespace], str]] = {
    "activations": section_activations,
    "kernels": section_kernels,
    "memory": section_memory,
    "overhead": section_overhead,
    "scaling": section_scaling,
    "optimizer": section_optimizer,
    "device": section_device,
}
# Sections run by default: all, the device's only where there is a GPU.
DEFAULT_SECTIONS = [name for name in SECTIONS if name != "device" or torch.cuda.is_available()]


def _device(text: str) -> str:
    """``--device``: a torch device this machine has."""
    try:
        kind = torch.device(text).type
    except RuntimeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1): {exc}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device (valid here: cpu)")
    return text


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def default_out(sections: list[str]) -> Path:
    """Where a run writes without ``--out``: speed.md for the default sections, else a file named
    for its sections, so that a partial run leaves the full table as it is."""
    name = "speed" if sections == DEFAULT_SECTIONS else "speed_" + "_".join(sections)
    return ROOT / "benchmarks" / "results" / f"{name}.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=DEFAULT_SECTIONS, choices=list(SECTIONS),
                    help="default: all but device, and device too where there is a GPU")
    ap.add_argument("--device", type=_device, default="cuda" if torch.cuda.is_available() else "cpu",
                    help="where the device section trains (default: cuda where there is a GPU)")
    ap.add_argument("--epoch-models", nargs="*", default=["lenet5", "vgg16", "resnet18"],
                    choices=["lenet5", "vgg16", "resnet18"], help="models of the device section's epoch table")
    ap.add_argument("--epoch-tree", default="add(x, sin(x))", help="the tree of the device section's epoch table")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds (median over them)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per candidate and round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before each timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before", metavar="REF",
                    help="also time other operators: a git commit (its safs_optuna/operators.py) or a file")
    ap.add_argument("--trees", nargs="*", help="only these formulas (relu(x) is always timed)")
    ap.add_argument("--overhead-trials", type=int, default=8, help="candidates timed by the overhead section")
    ap.add_argument("--scaling-trials", type=int, default=12, help="candidates per run of the scaling section")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/speed.md for the default sections, "
                    "speed_<sections>.md for others (a partial run does not overwrite the full table)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave the C library's malloc as it is (workers keep freed memory for reuse)")
    args = ap.parse_args()
    if args.out is None:
        args.out = default_out(args.sections)
    torch.set_num_threads(args.threads)
    malloc = "default" if args.default_malloc else (
        "freed memory kept for reuse, as in a worker" if retain_freed_memory() else "default (not glibc)")

    command = "python benchmarks/speed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    parts = [f"# Activation speed\n\nMachine: {machine()}; malloc: {malloc}.\n\nCommand: `{command}`\n"]
    print(parts[0], flush=True)
    for name in args.sections:
        parts.append(SECTIONS[name](args))
        print(parts[-1], flush=True)  # each section as soon as it is measured
    text = "\n".join(parts)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
