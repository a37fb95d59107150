"""What a compiler would buy the costly operators: each one's derivative parts, eager against
``torch.compile``.

In eager PyTorch every kernel is a pass over the activation tensor, and an operator's value, slope
and parameter partials (``safs_optuna.derivatives``) take fifteen or more of them. A compiler
fuses them into one loop. This script times, on LeNet-5's largest activation tensor and one
thread, each operator's parts eager and compiled (``torch.compile(dynamic=True)``, so one compile
serves every site's shape), and what the compile costs a worker: the first call in a fresh
process, with an empty compile cache (*cold*) and with the cache the cold run filled (*warm*).
The pipeline does not compile; this measures what it would cost and save.

    python benchmarks/compiled_parts.py --out benchmarks/results/compiled_parts.md

The backward (the upstream gradient times the slope, a dot per parameter) stays as it is; the
times here are the forward's parts, where the passes are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from speed import machine

DEFAULT_OPERATORS = ("relu", "acon", "srs", "tanhsoft1", "elish", "mish", "sinc")
SHAPE = (64, 6, 28, 28)  # LeNet-5's first activation site at batch 64, the largest

# Runs in a fresh process: times one operator's parts eager and compiled, prints JSON.
_CHILD = """
import json, statistics, sys, time
import torch
from safs_optuna.allocator import retain_freed_memory
from safs_optuna.operators import UNARY
retain_freed_memory()
torch.set_num_threads(1)
op = UNARY[{name!r}].build()
parts = op.parts
params = tuple(op.parameters()) if isinstance(op, torch.nn.Module) else ()
want = (True,) * len(params)
x = torch.randn({shape!r}, generator=torch.Generator().manual_seed(0)) * 2

def run(x, *params):
    return parts(x, params, want)

def per_call(f):
    for _ in range(3):
        f(x, *params)
    rounds = []
    for _ in range(7):
        start = time.thread_time()
        for _ in range(20):
            f(x, *params)
        rounds.append((time.thread_time() - start) / 20)
    return 1e6 * statistics.median(rounds)

with torch.no_grad():
    eager = per_call(run)
    compiled = torch.compile(run, dynamic=True)
    start = time.perf_counter()
    compiled(x, *params)
    first = time.perf_counter() - start
    fused = per_call(compiled)
print(json.dumps({{"eager": eager, "compiled": fused, "first": first}}))
"""


def time_operator(name: str, cache: str) -> dict[str, float]:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, OMP_NUM_THREADS="1")
    code = _CHILD.format(name=name, shape=SHAPE)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{name}: the timing process failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--operators", default=",".join(DEFAULT_OPERATORS),
                   help="comma-separated unary operators (default: %(default)s)")
    p.add_argument("--out", help="also write the table here (markdown)")
    args = p.parse_args()
    torch.set_num_threads(1)  # as the timing processes run (and machine() reports)
    names = [n.strip() for n in args.operators.split(",") if n.strip()]
    from safs_optuna.operators import UNARY

    def has_parts(n: str) -> bool:
        return getattr(UNARY[n].build(), "parts", None) is not None

    unknown = [n for n in names if n not in UNARY or not has_parts(n)]
    if unknown:
        valid = ", ".join(sorted(n for n in UNARY if has_parts(n)))
        raise SystemExit(f"--operators: {', '.join(unknown)}: not a unary operator with parts; valid: {valid}")

    rows = ["| operator | eager µs | compiled µs | eager / compiled | compile s, cold cache | compile s, warm cache |",
            "|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        for name in names:
            print(f"{name}: cold ...", file=sys.stderr, flush=True)
            cold = time_operator(name, cache)
            print(f"{name}: warm ...", file=sys.stderr, flush=True)
            warm = time_operator(name, cache)
            eager = (cold["eager"] + warm["eager"]) / 2
            fused = (cold["compiled"] + warm["compiled"]) / 2
            row = (f"| `{name}` | {eager:.0f} | {fused:.0f} | {eager / fused:.1f}× | {cold['first']:.1f} "
                   f"| {warm['first']:.1f} |")
            print(row, flush=True)
            rows.append(row)
    text = (
        "# Operators' derivative parts, eager and compiled\n\n"
        f"{machine()}; command: `python benchmarks/compiled_parts.py "
        f"--operators {','.join(names)}`\n\n"
        f"Value, slope and parameter partials of each operator on a {'x'.join(map(str, SHAPE))} float32 tensor "
        "(LeNet-5's largest activation), per call: the median of 7 rounds of 20 calls, the mean of the "
        "cold and warm processes. Compile: the first call's wall time in a fresh process, with an empty "
        "cache (the first operator also pays the compiler's own start-up) and with the cache its cold run "
        "filled.\n\n" + "\n".join(rows) + "\n"
    )
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
