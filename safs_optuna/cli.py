"""The ``safs-optuna`` command: run, join, inspect, report, browse and export a SAFS study."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from . import __version__
from .interrupts import catch_interrupts, interrupted

EXIT_USAGE = 2
MAX_SEEDS = 1000


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
    for key in ("storage", "device", "seeds"):
        if getattr(args, key, None) is not None:
            out += [f"--{key}", str(getattr(args, key))]
    return out


def _seeds(args: argparse.Namespace) -> list[int] | None:
    """``--seeds 0,1,2`` (or ``0-4``) as a list; None without the option."""
    text = getattr(args, "seeds", None)
    if text is None:
        return None
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            lo_n, hi_n = int(lo), int(hi) if sep else int(lo)
            if hi_n - lo_n >= MAX_SEEDS:
                raise UserError(f"--seeds {text}: at most {MAX_SEEDS} seeds at once", EXIT_USAGE)
            seeds += list(range(lo_n, hi_n + 1))
    except ValueError:
        raise UserError(f"--seeds takes integers like 0,1,2 or 0-4, got {text!r}", EXIT_USAGE) from None
    if len(seeds) > MAX_SEEDS:
        raise UserError(f"--seeds {text}: at most {MAX_SEEDS} seeds at once", EXIT_USAGE)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds needs distinct integers >= 0, got {text!r}", EXIT_USAGE)
    return seeds


def _configs(args: argparse.Namespace) -> list:
    """The config, or one per ``--seeds`` seed (each in studies ``<name>/seed<N>/<stage>``)."""
    cfg = _config(args)
    seeds = _seeds(args)
    bad = [s for s in seeds or [] if s >= 2**32]
    if bad:
        raise UserError(f"--seeds {args.seeds}: seeds must be below 2**32, got {bad[0]}", EXIT_USAGE)
    return [cfg] if seeds is None else [cfg.for_seed(s) for s in seeds]


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


def _pipeline(cfg, worker: int = 0, must_exist: bool = False, log=None, same_config: bool = True):
    """The config's pipeline on its storage; ``must_exist`` for commands that only read a study:
    they never write to the storage, not even a schema into an empty file, and (``same_config``)
    stop when the stored study was made with another config."""
    from .pipeline import Pipeline
    from .storage import NoStudyError, check_storage, redact

    check_storage(cfg.storage)  # a damaged database stops here, with one line naming it
    try:
        pipe = Pipeline(cfg, worker=worker, create=not must_exist, log=log)
    except NoStudyError:
        raise UserError(f"no study stored at {redact(cfg.storage)} yet; start it with "
                        f"`safs-optuna run {cfg.path or '<config>'}`") from None
    if must_exist and same_config:
        pipe.studies.check_config()
    return pipe


def _results(pipes: Sequence) -> str:
    """The results table: one row per seed, their mean ± sd, the paper's row; then warnings."""
    from .pipeline.results import results_table, warnings

    found = [w for p in pipes for w in warnings(p)]
    return results_table(pipes) + "".join(f"\n\nWARNING {w}" for w in found)


# ---------------------------------------------------------------------- commands
def _log_path(cfg) -> Path:
    """Where ``run`` writes the workers' per-epoch lines while it shows the live view."""
    from .storage import sqlite_path

    db = sqlite_path(cfg.storage)
    folder = db.parent if db is not None else (Path(cfg.path).parent if cfg.path else Path.cwd())
    return folder / f"{cfg.name.split('/')[0]}.log"


def _preflight(cfgs: Sequence) -> None:
    """Every check ``run`` can make before it writes anything (see
    :mod:`safs_optuna.pipeline.preflight`); a failure is one line, warnings are printed."""
    from .pipeline.preflight import InputError, preflight

    try:
        preflight(cfgs, warn=lambda line: print(f"safs-optuna: warning: {line}", file=sys.stderr))
    except InputError as exc:
        raise UserError(str(exc), exc.code) from None


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import default_threads, set_threads, work_all
    from .pipeline.results import view_lines
    from .progress import LiveView

    cfgs = _configs(args)
    cfg = cfgs[0]
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}", EXIT_USAGE)
    threads = cfg.threads or default_threads(args.workers)
    _check_device(cfg)
    _preflight(cfgs)
    # On a terminal: one live line per stage; the per-epoch lines go to a log file (--verbose: screen).
    live = sys.stderr.isatty() and not args.verbose
    logfile = None
    if live:
        path = _log_path(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        logfile = open(path, "a", buffering=1)
        print(f"safs-optuna: per-epoch progress of every worker goes to {path}", file=sys.stderr)
        # The libraries' log lines (Optuna's: a trial failed, with its traceback on Ctrl-C;
        # SQLAlchemy's: a connection interrupted while it was being returned) go with the workers'
        # lines, as those of the worker processes do: the terminal keeps the live view. Without a
        # handler on the root logger, Python would print them to the terminal.
        import logging

        import optuna

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
        handler = logging.StreamHandler(logfile)
        handler.setFormatter(logging.Formatter("[%(levelname)1.1s %(asctime)s] %(message)s"))
        logging.getLogger().addHandler(handler)
    log = (lambda msg: print(msg, file=logfile, flush=True)) if logfile else None
    pipes = [_pipeline(c, log=log) for c in cfgs]
    for pipe in pipes:
        pipe.studies.prepare(rearm=True)
        for name in args.rerun or []:
            pipe.rerun(name)
    for pipe in pipes:
        pipe.studies.settle(pipe.log)
    start = time.time()
    viewers = [_pipeline(c) for c in cfgs] if live else []  # the view reads with its own connections
    view = LiveView(lambda: [line for p in viewers for line in view_lines(p)]) if live else contextlib.nullcontext()
    try:
        with view:
            if args.workers == 1:
                set_threads(threads)
                work_all(pipes)
            else:
                _run_workers(args, threads, pipes, logfile)
    finally:
        if logfile is not None:
            logfile.close()
    print(f"\n{_config(args).name}: finished in {time.time() - start:.0f}s\n")
    print(_results(pipes))
    return 0


def _run_workers(args: argparse.Namespace, threads: int, pipes, logfile=None) -> None:
    """Work as worker 1 in this process, with workers 2..N in their own processes.

    This process has the study open already, so it starts the first stage while the others are
    still importing torch; they lend it their threads until there is work for them too.
    """
    from .pipeline import set_threads, work_all

    base = [sys.executable, "-m", "safs_optuna.cli", "worker", str(args.config), "--threads", str(threads)]
    procs = {i: subprocess.Popen(base + ["--worker-id", str(i)] + _override_args(args),
                                 stdout=logfile, stderr=logfile)
             for i in range(2, args.workers + 1)}
    own_error: Exception | None = None
    try:
        for pipe in pipes:
            pipe.log.worker = 1
        set_threads(threads)
        work_all(pipes)
    except KeyboardInterrupt:
        _stop_workers(procs.values())
        raise
    except Exception as exc:  # the other workers go on with the study
        if interrupted():  # it failed because of Ctrl-C (e.g. marking its trial, not waited out)
            _stop_workers(procs.values())
            raise KeyboardInterrupt from exc
        own_error = exc
        line = _failure_line(args, exc)
        if line is not None:  # as a worker process says it; an unexpected error is raised below
            print(f"safs-optuna: {line}", file=logfile or sys.stderr, flush=True)
    try:
        codes = {i: p.wait() for i, p in procs.items()}
    except KeyboardInterrupt:
        _stop_workers(procs.values())
        raise
    failed = [i for i, c in codes.items() if c != 0]
    if own_error is not None:
        failed.insert(0, 1)
    if own_error is not None and _failure_line(args, own_error) is None:
        raise own_error
    if len(failed) == args.workers:
        where = f"see {logfile.name}" if logfile else "see above"
        raise UserError(f"every worker stopped with an error ({where}); fix the cause and run the same "
                        "command again to resume")
    pending = [f"{pipe.cfg.name}/{stage.name}" for pipe in pipes for stage in pipe.stages
               if not pipe.studies.status(stage).done]
    if failed and not pending:
        # A killed worker's trials were retried by the others: nothing is missing.
        print(f"safs-optuna: worker(s) {', '.join(map(str, failed))} stopped early; the other workers "
              "finished their work", file=sys.stderr)
    elif failed:
        where = f"see {logfile.name}" if logfile else "see above"
        raise UserError(f"worker(s) {', '.join(map(str, failed))} stopped with an error ({where}) "
                        f"and {', '.join(pending)} did not finish; run the same command again to resume")


def _stop_workers(procs) -> None:
    """After Ctrl-C: the workers got it too (one process group); give them time to mark their trials."""
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def cmd_worker(args: argparse.Namespace) -> int:
    from .pipeline import default_threads, set_threads, work_all

    cfgs = _configs(args)
    _check_device(cfgs[0])
    _preflight(cfgs)  # a worker started alone writes nothing either before its inputs are checked
    set_threads(args.threads or cfgs[0].threads or default_threads(1))
    work_all([_pipeline(c, worker=args.worker_id) for c in cfgs])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .pipeline.compute import compute_line
    from .pipeline.results import density_table
    from .storage import check_artifacts, redact

    if args.watch:
        return _watch(_configs(args), args.interval)
    for cfg in _configs(args):
        pipe = _pipeline(cfg, must_exist=True)
        print(f"{cfg.name} — {redact(cfg.storage)}")
        print(f"{'stage':<12} {'state':<9} {'trials':>7} {'running':>7} {'failed':>6} {'epochs':>6} "
              f"{'best val %':>10}  best")
        notes = []
        for stage in pipe.stages:
            st = pipe.studies.status(stage)
            if not st.exists:
                state = "not yet"
            elif st.done:
                state = "NOTHING" if st.found_nothing else "done"
            elif st.running:
                state = "running"
            elif st.finished or st.waiting:
                state = "queued" if st.stage.kind == "once" else "paused"
            else:
                state = "pending"
            best = ""
            if st.best_trial is not None:
                attrs, params = st.best_trial.user_attrs, st.best_trial.params
                if stage.searches == "trees":
                    best = ", ".join(sorted(set(attrs.get("formulas", {}).values())))
                elif stage.kind == "search":
                    best = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in params.items())
                elif "test_accuracy" in attrs:
                    best = f"test {attrs['test_accuracy']:.2f}%"
            value = f"{st.best_value:.2f}" if st.best_value is not None else "—"
            epochs = "" if stage.kind == "once" else (str(st.epochs) if st.epochs is not None else "auto")
            print(f"{stage.name:<12} {state:<9} {st.finished:>3}/{st.budget:<3} {st.running:>7} {st.failed:>6} "
                  f"{epochs:>6} {value:>10}  {best}")
            if st.epochs_reason:
                notes.append(f"{stage.name} epochs: {st.epochs_reason}")
            if st.found_nothing:
                notes.append(f"WARNING {st.found_nothing}")
            if st.last_error:
                notes.append(f"{stage.name}: {st.failed} failed; last, {st.last_error}")
        for note in notes:
            print(note)
        print(compute_line(pipe))
        density = density_table(pipe)
        if density:
            print("\n" + density)
        print()
    # Workers on other machines need the object store: say now if it cannot be written, not at
    # the first checkpoint. Checked once, without waiting out an outage.
    check_artifacts(_config(args).artifacts, retry_seconds=0)
    return 0


def _watch(cfgs: list, interval: float) -> int:
    """``status --watch``: the live stage view, from the storage, until every stage is done."""
    from .pipeline.results import view_lines
    from .progress import LiveView

    pipes = [_pipeline(c, must_exist=True) for c in cfgs]
    view = LiveView(lambda: [line for p in pipes for line in view_lines(p)], stream=sys.stdout,
                    interval=interval)
    with view:
        while not all(p.studies.status(s).done for p in pipes for s in p.stages):
            time.sleep(interval)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .pipeline.compute import compute_line
    from .pipeline.results import column_trials, density_table

    cfgs = _configs(args)
    pipes = [_pipeline(c, must_exist=True) for c in cfgs]
    cfg = _config(args)
    seeds = f", {len(pipes)} seeds" if len(pipes) > 1 else ""
    print(f"## {cfg.name}: {cfg.model.name} on {cfg.data.name}, sparsity {cfg.sparsity.ratio:g} "
          f"({cfg.sparsity.scope}){seeds}; test accuracy %\n")
    print(_results(pipes))
    for pipe in pipes:
        print("\n" + (f"{pipe.cfg.name}: " if len(pipes) > 1 else "") + compute_line(pipe))
    density = density_table(pipes[0])
    if density:
        print("\n" + density + (" (seed {})".format(pipes[0].cfg.seed) if len(pipes) > 1 else ""))
    for pipe in pipes:
        trials = column_trials(pipe)
        best = trials.get("SAFS") or trials.get("stage 1")
        if best is not None:
            formulas = best.user_attrs.get("formulas", {})
            print(f"\n{pipe.cfg.name} activations:\n" + "\n".join(f"  {s}: {f}" for s, f in formulas.items()))
            print(f"{pipe.cfg.name} protocol: {best.user_attrs.get('hparams')}"
                  f", learn α/β: {best.user_attrs.get('learn_scale')}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna_dashboard

    from .storage import make_artifact_store, redact

    cfg = _config(args)
    storage = _pipeline(cfg, must_exist=True, same_config=False).studies.storage  # shows any study
    print(f"optuna-dashboard on {redact(cfg.storage)}: http://{args.host}:{args.port}/ (Ctrl-C stops)")
    optuna_dashboard.run_server(storage, host=args.host, port=args.port,
                                artifact_store=make_artifact_store(cfg.artifacts, cfg.storage_retry_seconds))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import export_program, program_accuracy
    from .sparsity import finalize, sparsity_report

    cfgs = _configs(args)
    if len(cfgs) != 1:
        raise UserError(f"export writes one model: give one seed (--seeds N), got {args.seeds!r}", EXIT_USAGE)
    cfg = cfgs[0]
    pipe = _pipeline(cfg, must_exist=True)
    stage = next((s for s in pipe.stages if s.name == args.stage and s.kind == "once"), None)
    if stage is None:
        valid = ", ".join(s.name for s in pipe.stages if s.kind == "once")
        raise UserError(f"--stage {args.stage!r} is not a stage with a model; valid: {valid}", EXIT_USAGE)
    if not pipe.studies.status(stage).done:
        raise UserError(f"stage {args.stage!r} of {cfg.name} has not finished; see `safs-optuna status`")
    model, _ = pipe.res.load(args.stage)
    model = finalize(model).eval()
    test = pipe.res.splits.test
    example = torch.stack([test[i][0] for i in range(min(4, len(test)))])
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_program(model, example, out)
    # Measure the written file itself, as a user will load it.
    acc = program_accuracy(torch.export.load(str(out)).module(), test)
    report = sparsity_report(model)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {args.stage} model of {cfg.name}")
    print(f"sparsity {100 * report.ratio:.2f}% ({report.zeros}/{report.total} weights are zero)")
    print(f"test accuracy {acc:.2f}% (of the exported file, on {len(test)} test images)")
    splits = pipe.res.splits
    print(f"load it with plain PyTorch: torch.export.load({str(out)!r}).module()(images), images "
          f"N x {splits.in_channels} x {splits.image_size} x {splits.image_size} normalised with "
          f"mean {splits.mean} and std {splits.std}")
    return 0


# ---------------------------------------------------------------------- parser
def _common(p: argparse.ArgumentParser, overrides: bool = True) -> None:
    p.add_argument("config", help="the study config (a TOML file, e.g. studies/quickstart.toml)")
    if overrides:
        p.add_argument("--storage", help="storage URL instead of the config's (sqlite:///… or postgresql://…); "
                       "a relative sqlite path, like every relative path, is taken from the config's folder")
        p.add_argument("--device", help="torch device: cpu, cuda, cuda:1, mps")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. --set activations.trials=40 (repeatable)")
        p.add_argument("--seeds", metavar="LIST",
                       help="run or read the whole pipeline once per seed, e.g. 0,1,2 or 0-4 (studies "
                            "<name>/seed<N>/<stage> in the same storage; report shows mean ± sd)")


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
    p.add_argument("--rerun", action="append", metavar="STAGE",
                   help="run a finished once-stage again (e.g. its checkpoint was lost); repeatable")
    p.add_argument("--verbose", action="store_true",
                   help="print every worker's per-epoch lines instead of the live stage view")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="join a study as one more worker (any machine, same storage)",
                       description="Work on the study's stages until all are done, alongside other workers.")
    _common(p)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--worker-id", type=int, default=0, help="a number shown in progress lines")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="where each stage stands, best so far")
    _common(p)
    p.add_argument("--watch", action="store_true",
                   help="redraw one live line per stage until the study is done (Ctrl-C stops)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between redraws with --watch")
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


def _one_line(exc: BaseException) -> str:
    # Messages that carry a library's text (torch's load_state_dict lists keys on lines of their
    # own) still print as one line, so scripts can read the cause from stderr's last line.
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _chain_find(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """``exc`` or the first exception of ``kinds`` among its causes and contexts."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _storage_failure(args: argparse.Namespace, exc: BaseException) -> str:
    """One line for a storage that failed while a command was using it: the file's damage, found
    by the full check, or else the database's own message."""
    from .storage import StorageError, check_storage, redact

    cause: BaseException = exc
    while cause.__cause__ is not None:  # Optuna wraps SQLAlchemy, which wraps the driver
        cause = cause.__cause__
    try:
        url = _config(args).storage
    except UserError:  # the config itself went away meanwhile: say what the database said
        return f"the storage failed during the command ({_one_line(cause)})"
    try:
        check_storage(url)
    except StorageError as damaged:
        return f"the storage failed during the command: {_one_line(damaged)}"
    return (f"storage {redact(url)} failed during the command ({_one_line(cause)}); run the same "
            "command again to resume")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    catch_interrupts()
    try:
        return args.func(args)
    except UserError as exc:
        print(f"safs-optuna: {_one_line(exc)}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:
        # Whoever read the output stopped reading (`status | head`): end quietly, as shell tools
        # do, with stdout pointed at nothing so that the interpreter's last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as exc:
        if interrupted():  # what failed after Ctrl-C failed because of it (a storage call not waited out)
            return _interrupted()
        line = _failure_line(args, exc)
        if line is None:
            raise
        if getattr(args, "verbose", False):  # what the one line sums up, for a bug report
            traceback.print_exception(exc)
        print(f"safs-optuna: {line}", file=sys.stderr)
        return _failure_code(exc)


def _interrupted() -> int:
    print("\nsafs-optuna: interrupted; run the same command again to resume", file=sys.stderr)
    return 128 + signal.SIGINT


def _failure_code(exc: Exception) -> int:
    """2 for data the config names that is not on this machine and could not be fetched (the fix
    is in the config or in that folder, as for a config mistake); 1 for everything else."""
    from .data import DatasetNotFoundError

    return EXIT_USAGE if isinstance(exc, DatasetNotFoundError) else 1


def _failure_line(args: argparse.Namespace, exc: Exception) -> str | None:
    """The one line that says what stopped a command; None for an error nobody expects (a bug:
    its traceback is what helps)."""
    from .checkpoint import CheckpointError
    from .data import DatasetFormatError, DatasetNotFoundError
    from .pipeline import PipelineError
    from .sources import SourceError
    from .storage import StorageError
    from .training import UserFitError

    import optuna.exceptions  # loaded with .storage already
    import sqlalchemy.exc

    if isinstance(exc, (UserError, PipelineError, StorageError, DatasetNotFoundError, DatasetFormatError,
                        CheckpointError, UserFitError, SourceError)):
        return _one_line(exc)
    # A storage that fails mid-command can surface as another error raised while Optuna
    # handled it (e.g. its trial loop's UnboundLocalError); the storage error is the cause.
    failure = _chain_find(exc, (sqlalchemy.exc.DatabaseError, optuna.exceptions.StorageInternalError))
    return None if failure is None else _storage_failure(args, failure)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
