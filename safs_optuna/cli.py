"""The ``safs-optuna`` command: run, join, inspect, report, browse and export a SAFS study."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from . import __version__

EXIT_USAGE = 2


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set takes KEY=VALUE (e.g. activations.trials=30), got {item!r}", EXIT_USAGE)
        out[key.strip()] = _parse_value(value.strip())
    for key in ("storage", "device", "threads"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    return out


def _override_args(args: argparse.Namespace) -> list[str]:
    out = []
    for item in getattr(args, "set", None) or []:
        out += ["--set", item]
    for key in ("storage", "device"):
        if getattr(args, key, None) is not None:
            out += [f"--{key}", str(getattr(args, key))]
    return out


def _config(args: argparse.Namespace):
    from .config import ConfigError, load_config

    try:
        return load_config(args.config, _overrides(args))
    except ConfigError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    except FileNotFoundError as exc:
        raise UserError(f"no such config file: {exc.filename or args.config}", EXIT_USAGE) from None


def _check_device(cfg) -> None:
    import torch

    device = cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"the config asks for device {device!r} but torch sees no CUDA device here; "
                        "run with --device cpu (or on a machine with a GPU)", EXIT_USAGE)
    if device.startswith("cuda:") and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise UserError(f"device {device!r} does not exist; this machine has "
                        f"{torch.cuda.device_count()} CUDA device(s)", EXIT_USAGE)
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("the config asks for device 'mps' but it is not available; use --device cpu",
                        EXIT_USAGE)


def _pipeline(cfg, worker: int = 0, must_exist: bool = False):
    from .pipeline import Pipeline
    from .storage import redact, storage_exists

    if must_exist and not storage_exists(cfg.storage):
        raise UserError(f"no study stored at {redact(cfg.storage)} yet; start it with "
                        f"`safs-optuna run {cfg.path or '<config>'}`")
    return Pipeline(cfg, worker=worker)


# ---------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import default_threads, load_splits, set_threads

    cfg = _config(args)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}", EXIT_USAGE)
    threads = cfg.threads or default_threads(args.workers)
    _check_device(cfg)
    load_splits(cfg)  # a missing dataset stops here, before anything is written to the storage
    pipe = _pipeline(cfg)
    pipe.prepare_studies(rearm=True)
    pipe.settle()
    start = time.time()
    if args.workers == 1:
        set_threads(threads)
        pipe.work()
    else:
        _spawn_workers(args, threads, pipe)
    print(f"\n{cfg.name}: finished in {time.time() - start:.0f}s\n")
    print(pipe.table())
    return 0


def _spawn_workers(args: argparse.Namespace, threads: int, pipe) -> None:
    base = [sys.executable, "-m", "safs_optuna.cli", "worker", str(args.config), "--threads", str(threads)]
    procs = [subprocess.Popen(base + ["--worker-id", str(i + 1)] + _override_args(args))
             for i in range(args.workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        # The workers got the same Ctrl-C (one process group); give them time to mark their trials.
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    failed = [i + 1 for i, c in enumerate(codes) if c != 0]
    pending = [stage.name for stage in pipe.stages if not pipe.status(stage).done]
    if failed and not pending:
        # A killed worker's trials were retried by the others: nothing is missing.
        print(f"safs-optuna: worker(s) {', '.join(map(str, failed))} stopped early; the other workers "
              "finished their work", file=sys.stderr)
    elif failed:
        raise UserError(f"worker(s) {', '.join(map(str, failed))} stopped with an error (see above) "
                        f"and {', '.join(pending)} did not finish; run the same command again to resume")


def cmd_worker(args: argparse.Namespace) -> int:
    from .pipeline import default_threads, set_threads

    cfg = _config(args)
    _check_device(cfg)
    set_threads(args.threads or cfg.threads or default_threads(1))
    _pipeline(cfg, worker=args.worker_id).work()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    pipe = _pipeline(cfg, must_exist=True)
    from .storage import redact

    print(f"{cfg.name} — {redact(cfg.storage)}")
    print(f"{'stage':<12} {'state':<9} {'trials':>7} {'running':>7} {'failed':>6} {'best val %':>10}  best")
    for stage in pipe.stages:
        st = pipe.status(stage)
        if not st.exists:
            state = "not yet"
        elif st.done:
            state = "done"
        elif st.running:
            state = "running"
        elif st.finished or st.waiting:
            state = "queued" if st.stage.kind == "once" else "paused"
        else:
            state = "pending"
        best = ""
        if st.best_trial is not None:
            attrs, params = st.best_trial.user_attrs, st.best_trial.params
            if stage.name == "activations":
                best = ", ".join(sorted(set(attrs.get("formulas", {}).values())))
            elif stage.kind == "search":
                best = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            elif "test_accuracy" in attrs:
                best = f"test {attrs['test_accuracy']:.2f}%"
        value = f"{st.best_value:.2f}" if st.best_value is not None else "—"
        print(f"{stage.name:<12} {state:<9} {st.finished:>3}/{st.budget:<3} {st.running:>7} {st.failed:>6} "
              f"{value:>10}  {best}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    cfg = _config(args)
    pipe = _pipeline(cfg, must_exist=True)
    print(f"## {cfg.name}: {cfg.model.name} on {cfg.data.name}, sparsity {cfg.sparsity.ratio:g} "
          f"({cfg.sparsity.scope}); test accuracy %\n")
    print(pipe.table())
    for name in ("final", "stage1"):
        stage = next((s for s in pipe.stages if s.name == name), None)
        st = pipe.status(stage) if stage else None
        if st and st.best_trial:
            formulas = st.best_trial.user_attrs.get("formulas", {})
            print(f"\n{name} activations:\n" + "\n".join(f"  {s}: {f}" for s, f in formulas.items()))
            print(f"{name} protocol: {st.best_trial.user_attrs.get('hparams')}"
                  f", learn α/β: {st.best_trial.user_attrs.get('learn_scale')}")
            break
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna_dashboard

    from .storage import make_artifact_store, make_storage, redact, storage_exists

    cfg = _config(args)
    if not storage_exists(cfg.storage):
        raise UserError(f"no study stored at {redact(cfg.storage)} yet; start it with `safs-optuna run`")
    print(f"optuna-dashboard on {redact(cfg.storage)}: http://{args.host}:{args.port}/ (Ctrl-C stops)")
    optuna_dashboard.run_server(make_storage(cfg.storage), host=args.host, port=args.port,
                                artifact_store=make_artifact_store(cfg.artifacts))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import export_program, load_checkpoint, program_accuracy
    from .sparsity import finalize, sparsity_report

    cfg = _config(args)
    pipe = _pipeline(cfg, must_exist=True)
    stage = next((s for s in pipe.stages if s.name == args.stage and s.kind == "once"), None)
    if stage is None:
        valid = ", ".join(s.name for s in pipe.stages if s.kind == "once")
        raise UserError(f"--stage {args.stage!r} is not a stage with a model; valid: {valid}", EXIT_USAGE)
    if not pipe.status(stage).done:
        raise UserError(f"stage {args.stage!r} of {cfg.name} has not finished; see `safs-optuna status`")
    model, _ = load_checkpoint(pipe._checkpoint_of(args.stage))
    model = finalize(model).eval()
    test = pipe.splits.test
    example = test.tensors[0][:4]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_program(model, example, out)
    # Measure the written file itself, as a user will load it.
    acc = program_accuracy(torch.export.load(str(out)).module(), test)
    report = sparsity_report(model)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {args.stage} model of {cfg.name}")
    print(f"sparsity {100 * report.ratio:.2f}% ({report.zeros}/{report.total} weights are zero)")
    print(f"test accuracy {acc:.2f}% (of the exported file, on {len(test)} test images)")
    splits = pipe.splits
    print(f"load it with plain PyTorch: torch.export.load({str(out)!r}).module()(images), images "
          f"N x {splits.in_channels} x {splits.image_size} x {splits.image_size} normalised with "
          f"mean {splits.mean} and std {splits.std}")
    return 0


# ---------------------------------------------------------------------- parser
def _common(p: argparse.ArgumentParser, overrides: bool = True) -> None:
    p.add_argument("config", help="the study config (a TOML file, e.g. studies/quickstart.toml)")
    if overrides:
        p.add_argument("--storage", help="storage URL instead of the config's (sqlite:///… or postgresql://…)")
        p.add_argument("--device", help="torch device: cpu, cuda, cuda:1, mps")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. --set activations.trials=40 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safs-optuna",
        description="Search per-layer activation functions and fine-tuning hyperparameters for "
                    "sparse networks (SAFS) as Optuna studies.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole pipeline (resumes what is stored)",
                       description="Run every stage of the study with N worker processes on its "
                                   "storage. Interrupted runs resume where they stopped.")
    _common(p)
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: cores / workers)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="join a study as one more worker (any machine, same storage)",
                       description="Work on the study's stages until all are done, alongside other workers.")
    _common(p)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--worker-id", type=int, default=0, help="a number shown in progress lines")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="where each stage stands, best so far")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="the paper-style results table")
    _common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dashboard", help="optuna-dashboard on the study's storage, with artifacts")
    _common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("export", help="write the sparse model as a torch.export file for plain PyTorch")
    _common(p)
    p.add_argument("output", help="the file to write, e.g. model.pt2")
    p.add_argument("--stage", default="final", help="which stage's model (default final)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from .data import DatasetNotFoundError
    from .pipeline import PipelineError
    from .storage import StorageError

    try:
        return args.func(args)
    except UserError as exc:
        print(f"safs-optuna: {exc}", file=sys.stderr)
        return exc.code
    except (PipelineError, StorageError, DatasetNotFoundError) as exc:
        print(f"safs-optuna: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nsafs-optuna: interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
