"""The staged pipeline in one Python call, with the user's objects instead of import paths.

:func:`run` does what ``safs-optuna run`` does — checks, studies in the storage, workers, resume,
the results table — from a script or a notebook, taking the model factory, the data and the
training loop as objects.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import StudyConfig, load_config, parse_config, to_dict
from .results import results_table
from .usercode import UserCode, describe

__all__ = ["Results", "results_table", "run"]


@dataclass
class Results:
    """What :func:`run` returns: the results table and what stands behind it.

    Attributes:
        table: The paper-style Markdown table (one row per seed, their mean ± sd with several).
        warnings: One line per search stage that found nothing.
        pipelines: One :class:`~safs_optuna.pipeline.Pipeline` per seed, for ``status``-like reads
            (:func:`~safs_optuna.pipeline.column_trials` ``(pipelines[0])``) and the models
            (``pipelines[0].res.load("final")``).
    """

    table: str
    warnings: list[str] = field(default_factory=list)
    pipelines: list[Any] = field(default_factory=list)

    def __str__(self) -> str:
        return self.table + "".join(f"\n\nWARNING {w}" for w in self.warnings)


def run(
    config: str | os.PathLike[str] | Mapping[str, Any] | StudyConfig,
    *,
    model: Any = None,
    data: Any = None,
    fit: Callable[..., Any] | None = None,
    evaluate: Callable[..., float] | None = None,
    workers: int = 1,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> Results:
    """Run (or resume) the whole SAFS pipeline of ``config`` and return its results.

    Args:
        config: A TOML file, a mapping of the same keys, or a :class:`StudyConfig`.
        model: Your network: a function (or class) returning an ``nn.Module``, called with
            ``num_classes``, ``in_channels``, ``image_size`` where it accepts them plus
            ``[model.kwargs]``; or an ``nn.Module`` (copied for every build). Replaces
            ``[model] name``.
        data: Your data: :class:`~safs_optuna.data.Splits`, a ``(train, val, test)`` tuple of
            map-style datasets (``val`` may be ``None``), or a function returning either.
            Replaces ``[data] name``.
        fit: Your training loop (:data:`safs_optuna.training.FitFunction`); replaces
            ``[training] fit``.
        evaluate: ``evaluate(model, dataset) -> float``, the test metric; replaces
            ``[training] evaluate``.
        workers: Worker processes on this machine (the first is this process). The others are
            started with ``multiprocessing``'s "spawn", so the objects must be picklable:
            functions and classes defined at the top level of a module (a script's own
            functions work when it runs under ``if __name__ == "__main__":``; a notebook's
            do not — put them in a module, or use one worker).
        seeds: Run the pipeline once per seed (studies ``<name>/seed<N>/…``) and report
            mean ± sd.
        overrides: Values replacing the config's, by dotted key (``{"activations.trials": 5}``).
        log: Where progress lines go (default: stderr).

    The stored config names each object by ``module:qualname``: a study resumes only with an
    object of the same name, and nothing read back from the storage is ever imported.

    Raises:
        ConfigError, InputError, DatasetNotFoundError: Before anything is written.
        PipelineError: A stage could not go on.
    """
    from .preflight import preflight
    from .resources import set_threads, default_threads
    from .results import warnings
    from .worker import Pipeline, work_all

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    given = UserCode(model=model, data=data, fit=fit, evaluate=evaluate)
    named = {key: describe(obj) for key, obj in (("model.name", model), ("data.name", data),
                                                  ("training.fit", fit), ("training.evaluate", evaluate))
             if obj is not None}
    cfg = _config(config, {**named, **(overrides or {})})
    cfgs = [cfg.for_seed(s) for s in seeds] if seeds else [cfg]
    preflight(cfgs, given, warn=lambda line: print(f"safs-optuna: warning: {line}", file=sys.stderr))
    pipes = [Pipeline(c, worker=1, log=log, code=given) for c in cfgs]
    for pipe in pipes:
        pipe.studies.prepare(rearm=True)
    for pipe in pipes:
        pipe.studies.settle(pipe.log)
    threads = cfg.threads or default_threads(workers)
    procs = []
    if workers > 1:
        # Spawned, never forked: a process forked after torch started its thread pool can hang in
        # its first parallel kernel.
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(cfgs, given, i, threads, log), daemon=False)
                 for i in range(2, workers + 1)]
        for p in procs:
            p.start()
    try:
        set_threads(threads)
        work_all(pipes)
    finally:
        for p in procs:
            p.join()
    return Results(table=results_table(pipes), warnings=[w for p in pipes for w in warnings(p)],
                   pipelines=pipes)


def _worker(cfgs: list[StudyConfig], code: UserCode, worker: int, threads: int,
            log: Callable[[str], None] | None) -> None:
    """One more worker process of :func:`run`."""
    from .resources import set_threads
    from .worker import Pipeline, work_all

    set_threads(threads)
    work_all([Pipeline(c, worker=worker, log=log, code=code) for c in cfgs])


def _config(config: Any, overrides: Mapping[str, Any]) -> StudyConfig:
    """``config`` validated with ``overrides`` applied, whatever form it came in."""
    if isinstance(config, StudyConfig):
        data, path = to_dict(config), config.path
        for key in ("storage", "artifacts"):  # resolved already: keep them as they are
            data[key] = getattr(config, key)
        return parse_config(_merged(data, overrides), path)
    if isinstance(config, Mapping):
        return parse_config(_merged(dict(config), overrides))
    return load_config(Path(config), overrides)


def _merged(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        table = out
        *parents, last = key.split(".")
        for part in parents:
            table = table.setdefault(part, {})
        table[last] = value
    return out
