"""Study configs: one TOML file describes a whole SAFS pipeline, validated before anything runs.

A config file has top-level keys and one table per part of the pipeline; every key is optional
except ``name``, and a missing key takes the default of the matching dataclass below::

    name = "quickstart"        # required: letters, digits, "_", "." and "-"
    storage = "sqlite:///quickstart.db"   # default: sqlite:///<config dir>/<name>.db
    artifacts = "quickstart.artifacts"   # default: <config dir>/<name>.artifacts; or s3://bucket/prefix, gs://…
    seed = 0
    device = "cpu"             # cpu, cuda, cuda:N or mps (syntax is checked, not availability)
    threads = 0                # torch threads per worker; 0 = the cores split between workers
    lend_threads = true        # a waiting worker lends its threads to working ones on this machine
    ablations = true           # also run the paper's "stage 1 alone" / "stage 2 alone" columns
    storage_retry_seconds = 300   # how long a worker waits out a storage or artifact store outage

    [model]        name, kwargs
    [data]         name, root, val_size, download, image_size, channels, num_classes, loader_workers
    [sparsity]     ratio, scope, skip, min_density, gradual_epochs, checkpoint
    [dense]        epochs, checkpoint
    [protocol]     optimizer, lr, momentum, weight_decay, schedule, batch_size, nesterov, augment
    [activations]  preset, unary, binary, sampler, pruner, trials, epochs, fraction, history, lahc
    [hpo]          sampler, pruner, trials, epochs, fraction
    [hpo.space]    optimizers, lr, momentum, weight_decay, schedules, learn_scale
    [final]        epochs
    [training]     fit, evaluate, metric, direction

Valid ranges (a value outside fails with the range; ``[a, b)`` includes a, excludes b)::

    seed                          [0, 2**32)             numpy's seeds must be below 2**32
    threads                       [0, 1024]              0 = the cores split between workers
    storage_retry_seconds         [0, 86 400]            0 = a lost connection stops the worker at once
    [data] val_size               (0, 1)
    [data] image_size             [1, 65 536]            folder: only; default the images' own size
    [data] channels               1 or 3                 folder: only; default from the first image
    [data] num_classes            [2, 1 000 000]         default the largest label + 1
    [data] loader_workers         [0, 256]               DataLoader processes for data not in memory
    [sparsity] ratio              (0, 1)                 0 prunes nothing: nothing to recover
    [sparsity] skip               module paths of the model (checked by ``run`` before it starts)
    [sparsity] min_density        module-path glob -> (0, 1]; globs and reachability checked by ``run``
    [sparsity] gradual_epochs     [0, 100 000]           0 = one-shot pruning; N = N epochs of gradual pruning
    [sparsity] checkpoint         a file                 the user's pruned network: no dense or sparse stage
    [dense] epochs                [1, 100 000]           [0, 100 000] with a checkpoint
    [protocol] lr                 (0, 10]
    [protocol] momentum           [0, 1)
    [protocol] weight_decay       [0, 1]
    [protocol] batch_size         [1, 65 536]            and at most the training images (``run``)
    [activations] trials          [1, 100 000]
    [activations] epochs          [1, 100 000] or "auto"
    [activations] fraction        [0.0001, 1]            and a subset of at least one batch (``run``)
    [activations] history         [1, 1000]
    [hpo] trials                  [1, 100 000]
    [hpo] epochs                  [1, 100 000] or "final"
    [hpo] fraction                [0.0001, 1]            and a subset of at least one batch (``run``)
    [final] epochs                [1, 100 000]

Relative paths are resolved against the folder of the config file (the current directory for
:func:`parse_config` without a path), never against the directory a command runs in, so that
every worker finds the same files: a ``sqlite:///relative.db`` URL, ``artifacts``,
``data.root``, ``dense.checkpoint``, ``sparsity.checkpoint`` and the folder of
``data.name = "idx:<dir>"`` or ``"folder:<dir>"``. Import paths (``"my_model:build"`` in
``[model] name``, ``[data] name``, ``[training] fit`` and ``evaluate``) are looked for in the
config's folder first, then on ``sys.path``; they are imported by ``run``, not by the config. ``~`` is
expanded. Other database URLs (``postgresql://user@host/db``, any scheme of
:data:`STORAGE_SCHEMES` with an optional ``+driver``) are used unchanged; other schemes fail.

Any problem raises :class:`ConfigError` naming the file, the key, the bad value and what is
valid (an unknown key gets the closest valid one suggested). Names of models, datasets,
operators, optimizers and schedules are checked against the registries of the modules that
implement them, imported only when a config is validated.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from safs_optuna.training import HParams

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "STORAGE_SCHEMES",
    "ActivationsConfig",
    "ConfigError",
    "DataConfig",
    "DenseConfig",
    "FinalConfig",
    "HPOConfig",
    "HPOSpace",
    "ModelConfig",
    "ProtocolConfig",
    "SparsityConfig",
    "StudyConfig",
    "TrainingConfig",
    "load_config",
    "parse_config",
    "to_dict",
]

SAMPLERS: tuple[str, ...] = ("lahc", "random", "tpe")
"""Samplers a stage can use: ``lahc`` (:class:`~safs_optuna.samplers.lahc.LAHCSampler`),
Optuna's ``random`` and ``tpe``."""

PRUNERS: tuple[str, ...] = (
    "none",
    "median",
    "hyperband",
    "incumbent",
    "divergence",
    "divergence+median",
    "divergence+hyperband",
)
"""Optuna pruners (early stopping of trials). ``incumbent``
(:class:`~safs_optuna.pruners.IncumbentPruner`) stops a trial whose learning curve is clearly
behind the one it must beat (for the ``lahc`` sampler); ``divergence`` also stops trials whose
accuracy stays at chance level for 2 epochs (an absolute rule, unfit for 99 % sparsity, where
every network starts at chance); ``divergence+X`` wraps X in a DivergencePruner."""

AUTO = "auto"
"""``epochs = "auto"`` of a search stage: measured by its start trial (see the pipeline)."""

ACCURACY_METRIC = "val_accuracy"
"""``[training] metric`` of the built-in loop: validation accuracy in percent."""

DIRECTIONS: tuple[str, ...] = ("maximize", "minimize")

FINAL = "final"
"""``[hpo] epochs = "final"``: every stage-2 trial trains as long as the full fine-tune."""


STORAGE_SCHEMES: tuple[str, ...] = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
"""Database URL schemes (SQLAlchemy dialects, optionally ``+driver``) accepted for ``storage``."""

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?|mps")
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_IMAGENET16_CLASSES = re.compile(r"imagenet16-([0-9]+)")
_SEED_LIMIT = 2**32  # numpy's seeds must be below this
# Upper bounds that catch a typo (an extra digit or three) before it books a machine for years.
_MAX_EPOCHS = 100_000
_MAX_TRIALS = 100_000
_MAX_BATCH_SIZE = 65_536
_MAX_THREADS = 1024
_MAX_RETRY_SECONDS = 86_400  # a day: longer is a typo, or a database nobody is restarting
_MAX_HISTORY = 1000
_MAX_LR = 10.0
_MAX_WEIGHT_DECAY = 1.0
_MIN_FRACTION = 1e-4


# --- the config -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: which network to sparsify.

    ``name`` is a name of :data:`safs_optuna.models.MODELS`, ``"torchvision:<name>"``,
    ``"timm:<name>"`` or ``"<module>:<callable>"`` (see :func:`safs_optuna.models.build_model`);
    ``kwargs`` are more keyword arguments for its builder.
    """

    name: str = "lenet5"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: the dataset (see :mod:`safs_optuna.data`) and its validation split.

    ``name`` is one of :data:`safs_optuna.data.DATASETS`, ``imagenet16-<classes>``,
    ``idx:<dir>``, ``folder:<dir>`` (an ``ImageFolder`` layout) or ``"<module>:<callable>"``
    (a function returning ``Splits`` or ``(train, val, test)`` datasets); ``root`` is where
    datasets are looked for (``None``: the data module's default); ``download`` lets torchvision
    fetch mnist, fashion_mnist or cifar10 into it. ``image_size`` and ``channels`` say how a
    ``folder:`` is read; ``num_classes`` overrides the count inferred from the labels;
    ``loader_workers`` are the ``DataLoader`` processes for data not held in memory.
    """

    name: str = "quickstart"
    root: str | None = None
    val_size: float = 0.1
    download: bool = False
    image_size: int | None = None
    channels: int | None = None
    num_classes: int | None = None
    loader_workers: int = 0


@dataclass(frozen=True)
class SparsityConfig:
    """``[sparsity]``: magnitude pruning of the dense network (ratio of weights set to zero).

    ``scope`` is the allocation (:data:`safs_optuna.sparsity.SCOPES`): ``layer`` (every layer
    loses ``ratio``, the paper's), ``global`` (one magnitude threshold), ``erk``
    (Erdős–Rényi-Kernel densities) or ``lamp`` (layer-adaptive magnitude scores); ``skip``
    names modules left dense and outside the ratio. ``min_density`` maps module-path globs to
    the least fraction of weights those layers keep (``{ conv1 = 0.3 }``; ``1.0`` keeps them
    dense): unlike ``skip`` they count towards ``ratio``, and the other layers are pruned harder
    so that the total still holds (see :func:`safs_optuna.sparsity.magnitude_prune`).

    ``gradual_epochs`` chooses how the dense network becomes sparse (the pipeline's ``sparse``
    stage): ``0`` prunes it in one shot; ``N > 0`` is gradual magnitude pruning (Zhu & Gupta
    2017) over N epochs: before epoch ``e`` (from 0) the sparsity rises to
    ``cubic_sparsity(e + 1, N, final=ratio)`` with the allocation above, then the network
    fine-tunes one epoch with the default ``[protocol]`` (a fresh optimizer each epoch, so its
    LR schedule runs within the epoch), reaching ``ratio`` in the last epoch. It costs N epochs,
    once per study; every later stage starts from its weights.

    ``checkpoint`` is the user's already-sparse network (a ``state_dict`` with zeros, or with
    ``torch.nn.utils.prune``'s ``weight_orig``/``weight_mask``): the dense and sparse stages are
    skipped, its masks are kept exactly, and ``ratio``, ``scope``, ``skip``, ``min_density`` do
    not apply (:func:`safs_optuna.checkpoint.load_pruned_weights`)."""

    ratio: float = 0.99
    scope: str = "layer"
    skip: tuple[str, ...] = ()
    min_density: dict[str, float] = dataclasses.field(default_factory=dict)
    gradual_epochs: int = 0
    checkpoint: str | None = None


@dataclass(frozen=True)
class DenseConfig:
    """``[dense]``: train the dense network for ``epochs``, or load ``checkpoint`` instead.

    ``checkpoint`` is the path of a ``state_dict`` of the model; ``epochs`` is ignored then.
    """

    epochs: int = 10
    checkpoint: str | None = None


@dataclass(frozen=True)
class ProtocolConfig(HParams):
    """``[protocol]``: the default fine-tuning protocol — exactly the fields of ``training.HParams``.

    It trains the dense network, fine-tunes the magnitude-pruning baseline and scores every
    stage-1 candidate.

    Example:

        .. code::

            hparams = config.protocol.hparams()   # a safs_optuna.training.HParams
    """

    def __post_init__(self) -> None:
        # Checked by _check_protocol instead, so that errors name the file and the key.
        pass

    def hparams(self) -> HParams:
        """This protocol as :class:`safs_optuna.training.HParams` (validated)."""
        return HParams(**dataclasses.asdict(self))


@dataclass(frozen=True)
class ActivationsConfig:
    """``[activations]``: stage 1, the per-site activation search.

    The space is ``ActivationSpace.preset(preset)``, unless ``unary`` (and optionally
    ``binary``) name the operators of a custom space. Each of ``trials`` candidates is
    fine-tuned for ``epochs`` on a ``fraction`` of the training split; ``history`` is the
    LAHC history length and ``lahc`` its rule set, ``"textbook"`` (Burke & Bykov) or
    ``"paper-code"`` (the rules of the SAFS paper's code; see
    :class:`~safs_optuna.samplers.lahc.LAHCSampler`), both used by the ``lahc`` sampler only.

    ``epochs = "auto"`` lets the start trial (the network's own activations) measure it: it
    trains until it leaves chance level, and candidates train that many epochs plus one, at
    least 2 and at most ``[final] epochs``; the value is recorded on the study and shown by
    ``status``.
    """

    preset: str = "safs"
    unary: tuple[str, ...] | None = None
    binary: tuple[str, ...] | None = None
    sampler: str = "lahc"
    pruner: str = "incumbent"
    trials: int = 20
    epochs: int | str = "auto"
    fraction: float = 1.0
    history: int = 3
    lahc: str = "textbook"


@dataclass(frozen=True)
class HPOSpace:
    """``[hpo.space]``: what stage 2 tunes: choices, and ``[low, high]`` ranges.

    ``lr`` and ``weight_decay`` are searched on a log scale, ``momentum`` (SGD only) linearly;
    ``learn_scale`` chooses whether the activations' α and β are learned (always, as in the
    paper, by default; ``[true, false]`` searches it).
    """

    optimizers: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop")
    lr: tuple[float, float] = (1e-4, 1e-1)
    momentum: tuple[float, float] = (0.5, 0.99)
    weight_decay: tuple[float, float] = (1e-6, 1e-2)
    schedules: tuple[str, ...] = ("constant", "cosine", "step", "plateau")
    learn_scale: tuple[bool, ...] = (True,)


@dataclass(frozen=True)
class HPOConfig:
    """``[hpo]``: stage 2, the fine-tuning hyperparameter search with the activations fixed.

    ``epochs = "final"`` (the default) trains every protocol for ``[final] epochs``, its
    learning-rate schedule spread over them, exactly as the full fine-tune will, as the paper's
    code does; the pruner stops protocols that fall clearly behind the best one early. A number
    trains that many epochs instead, the schedule spread over them: cheaper, but a protocol
    that wins a short run can lose the full one (``benchmarks/fidelity_rank.py`` measures it).
    """

    sampler: str = "tpe"
    pruner: str = "incumbent"
    trials: int = 20
    epochs: int | str = FINAL
    fraction: float = 1.0
    space: HPOSpace = HPOSpace()


@dataclass(frozen=True)
class FinalConfig:
    """``[final]``: epochs of every full fine-tune, each reported on the test split.

    These are the magnitude-pruning baseline, the SAFS winner and, with ``ablations``, the
    "stage 1 alone" and "stage 2 alone" columns.
    """

    epochs: int = 10


@dataclass(frozen=True)
class TrainingConfig:
    """``[training]``: the training loop and what it reports.

    ``fit`` is ``"<module>:<callable>"``, the user's own loop with the contract of
    :data:`safs_optuna.training.FitFunction` (``None``: the built-in
    :func:`~safs_optuna.training.fit`). ``metric`` names the validation metric it reports and
    ``direction`` whether larger (``"maximize"``) or smaller is better; the built-in metric is
    ``"val_accuracy"`` (percent), the only one with a chance level (the chance band, "auto"
    epochs). ``evaluate`` is ``"<module>:<callable>"`` returning that metric of a model on a
    dataset, ``evaluate(model, dataset) -> float``, for the report's test column (``None``: the
    built-in top-1 accuracy).
    """

    fit: str | None = None
    evaluate: str | None = None
    metric: str = "val_accuracy"
    direction: str = "maximize"

    @property
    def is_accuracy(self) -> bool:
        """Whether the metric is the built-in accuracy (in percent), which has a chance level."""
        return self.metric == ACCURACY_METRIC


@dataclass(frozen=True)
class StudyConfig:
    """A whole pipeline: names, storage, and one section per stage.

    Build it with :func:`load_config` (or :func:`parse_config`), which validate everything and
    resolve relative paths; ``storage`` and ``artifacts`` are then always set.

    Example:

        .. code::

            from safs_optuna.config import load_config

            config = load_config("studies/quickstart.toml", {"activations.trials": 5})
            config.study_name("activations")  # "quickstart/activations"
            config.activations.trials  # 5
    """

    name: str
    path: Path | None
    storage: str
    artifacts: str
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    lend_threads: bool = True
    ablations: bool = True
    storage_retry_seconds: int = 300
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    sparsity: SparsityConfig = SparsityConfig()
    dense: DenseConfig = DenseConfig()
    protocol: ProtocolConfig = ProtocolConfig()
    activations: ActivationsConfig = ActivationsConfig()
    hpo: HPOConfig = HPOConfig()
    final: FinalConfig = FinalConfig()
    training: TrainingConfig = TrainingConfig()

    def study_name(self, stage: str) -> str:
        """The Optuna study of ``stage`` in the storage, e.g. ``"quickstart/activations"``."""
        return f"{self.name}/{stage}"

    def for_seed(self, seed: int) -> "StudyConfig":
        """The same pipeline with another seed, in studies of its own (``<name>/seed<N>/<stage>``)."""
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < _SEED_LIMIT:
            raise ValueError(f"seed must be an integer in [0, {_SEED_LIMIT}), got {seed!r}")
        return dataclasses.replace(self, seed=seed, name=f"{self.name}/seed{seed}")


# The file's tables, in the order they are validated (and the first problem reported).
_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "sparsity": SparsityConfig,
    "dense": DenseConfig,
    "protocol": ProtocolConfig,
    "activations": ActivationsConfig,
    "hpo": HPOConfig,
    "final": FinalConfig,
    "training": TrainingConfig,
}
_TOP_LEVEL = ("name", "storage", "artifacts", "seed", "device", "threads", "lend_threads", "ablations",
              "storage_retry_seconds")


class ConfigError(ValueError):
    """A problem in a study config: the file, the key, the bad value and what would be valid.

    The message reads ``<file>: [section] key: problem`` (``<file>: key: problem`` for
    top-level keys); ``(override)`` follows the key when the value came from an override.

    Attributes:
        source: The config file as given, or ``"<config>"`` for a config without a file.
        key: The dotted key (``"activations.trials"``); ``""`` when about the whole file.
        problem: What is wrong, with the valid choices or range.
    """

    def __init__(self, source: str, key: str, problem: str, *, override: bool = False) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        self.override = override
        where = _where(key) + (" (override)" if override else "")
        super().__init__(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")

    def __reduce__(self) -> tuple:
        # Picklable, so that the error of a config loaded in a worker process (multiprocessing,
        # concurrent.futures) reaches the parent as itself, not as a broken pool.
        return (_config_error, (self.source, self.key, self.problem, self.override))


def _config_error(source: str, key: str, problem: str, override: bool) -> ConfigError:
    return ConfigError(source, key, problem, override=override)


def _where(key: str) -> str:
    if not key:
        return ""
    if key in _SECTIONS or key == "hpo.space":
        return f"[{key}]"
    if "." in key:
        section, name = key.rsplit(".", 1)
        return f"[{section}] {name}"
    return key


# --- public functions -----------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> StudyConfig:
    """Read, validate and resolve the study config at ``path``.

    Args:
        path: A TOML file.
        overrides: Values that replace the file's, by dotted key (``{"device": "cuda",
            "activations.trials": 5}``), validated like file values; errors about them say
            ``(override)`` after the key.

    Raises:
        ConfigError: The file cannot be read or parsed, or a value is invalid.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the config: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8 text; this is another kind of file
        raise ConfigError(source, "", f"not valid TOML: not UTF-8 text (byte {exc.start}); "
                                      "save the config as UTF-8") from exc
    return _parse(data, Path(source), source, overrides or {})


def parse_config(data: Mapping[str, Any], path: Path | None = None) -> StudyConfig:
    """Validate a config given as a mapping (parsed TOML, or :func:`to_dict`'s output).

    Args:
        data: Top-level keys and tables, as in a config file.
        path: The file the data came from: relative paths resolve against its folder (the
            current directory when ``None``) and it starts every error message.

    Raises:
        ConfigError: A value is invalid.
    """
    source = os.fspath(path) if path is not None else "<config>"
    return _parse(data, Path(path) if path is not None else None, source, {})


def to_dict(config: Any) -> dict[str, Any]:
    """A config (or one of its sections) as plain JSON-compatible data.

    Tuples become lists and ``StudyConfig.path`` is left out (it is where the file was read
    from, not part of the study), so ``parse_config(to_dict(c), c.path) == c`` and the result
    compares equal to itself after a JSON round trip (e.g. through study user attrs).
    """

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            skip = ("path",) if isinstance(value, StudyConfig) else ()
            fields = [f.name for f in dataclasses.fields(value) if f.name not in skip]
            return {name: plain(getattr(value, name)) for name in fields}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise TypeError(f"to_dict expects a config dataclass, got {type(config).__name__}")
    return plain(config)


# --- validation -----------------------------------------------------------------------------


class _Context:
    """Where values come from: the file (for messages), its folder, and the overridden keys."""

    def __init__(self, source: str, base_dir: Path, overridden: frozenset[str]) -> None:
        self.source = source
        self.base_dir = base_dir
        self.overridden = overridden

    def is_override(self, key: str) -> bool:
        return key in self.overridden or any(k.startswith(key + ".") for k in self.overridden)

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(self.source, key, problem, override=self.is_override(key))

    def resolve(self, path: str) -> str:
        """An absolute, normalised path; a relative one is taken from the config's folder."""
        return os.path.abspath(self.base_dir / Path(path).expanduser())

    def check_keys(self, table: Mapping[str, Any], valid: Iterable[str], prefix: str) -> None:
        valid = list(valid)
        for key in table:
            if key not in valid:
                full = f"{prefix}.{key}" if prefix else str(key)
                close = difflib.get_close_matches(str(key), valid, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                where = f"[{prefix}]" if prefix else "the top level"
                self.fail(full, f"unknown key{hint}; valid keys of {where}: {', '.join(valid)}")


class _Section:
    """Checks for the values of one table; failures name ``[table] key``."""

    def __init__(self, ctx: _Context, prefix: str) -> None:
        self.ctx = ctx
        self.prefix = prefix

    def fail(self, name: str, problem: str) -> NoReturn:
        self.ctx.fail(f"{self.prefix}.{name}" if name else self.prefix, problem)

    def choice(
        self, name: str, value: str, valid: Iterable[str], what: str, extra: Iterable[str] = ()
    ) -> None:
        valid = list(valid)
        if value not in valid:
            close = difflib.get_close_matches(value, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            shown = ", ".join([*valid, *extra])
            self.fail(name, f"unknown {what} {value!r}{hint}; valid: {shown}")

    def choices(
        self, name: str, values: tuple[Any, ...], valid: Iterable[Any] | None, what: str
    ) -> None:
        if not values:
            self.fail(name, f"needs at least one {what}, got []")
        if valid is not None:
            for value in values:
                self.choice(name, value, valid, what)
        for i, value in enumerate(values):
            if value in values[:i]:
                self.fail(name, f"{_show(value)} is listed twice in {_show(values)}")

    def at_least(self, name: str, value: float, low: float) -> None:
        if value < low:
            self.fail(name, f"must be >= {low}, got {_show(value)}")

    def at_most(self, name: str, value: float, high: float) -> None:
        if value > high:
            shown = f"{high:,}".replace(",", " ")  # 100 000: the digits a typo adds stand out
            self.fail(name, f"must be <= {shown}, got {_show(value)}")

    def interval(
        self, name: str, value: float, low: float, high: float, closed: str = "[)"
    ) -> None:
        """``value`` in the interval; ``closed`` gives its brackets: "[)", "(]", "()" or "[]"."""
        above = value >= low if closed[0] == "[" else value > low
        below = value <= high if closed[1] == "]" else value < high
        if not (above and below):
            self.fail(name, f"must be in {closed[0]}{low}, {high}{closed[1]}, got {_show(value)}")

    def span(
        self,
        name: str,
        pair: tuple[float, float],
        *,
        log: bool,
        within: tuple[float, float] | None = None,
    ) -> None:
        low, high = pair
        if not low < high:
            self.fail(name, f"expected [low, high] with low < high, got {_show(pair)}")
        if log and low <= 0:
            self.fail(name, f"is searched on a log scale, so low must be > 0, got {_show(pair)}")
        if within is not None and not (within[0] <= low and high < within[1]):
            self.fail(name, f"must lie in [{within[0]}, {within[1]}), got {_show(pair)}")


def _parse(
    data: Mapping[str, Any], path: Path | None, source: str, overrides: Mapping[str, Any]
) -> StudyConfig:
    base_dir = Path(os.path.abspath(path.parent if path is not None else Path.cwd()))
    flat = dict(_flatten(overrides))
    ctx = _Context(source, base_dir, frozenset(flat))
    if not isinstance(data, Mapping):
        ctx.fail("", f"expected a table of keys, got {_type_name(data)}")
    data = _apply_overrides(data, flat, ctx)
    ctx.check_keys(data, (*_TOP_LEVEL, *_SECTIONS), "")

    if "name" not in data:
        ctx.fail("name", 'is required: add name = "my-study" (letters, digits, "_", "." and "-")')
    name = _convert(str, data["name"], "name", ctx)
    if not _NAME.fullmatch(name):
        ctx.fail("name", f'{name!r} may only contain letters, digits, "_", "." and "-"')
    storage = data.get("storage", f"sqlite:///{base_dir / (name + '.db')}")
    storage = _check_storage(_convert(str, storage, "storage", ctx), ctx)
    artifacts = data.get("artifacts", f"{name}.artifacts")
    artifacts = _check_artifacts(_convert(str, artifacts, "artifacts", ctx), ctx)
    hints = _hints(StudyConfig)
    top = {
        k: _convert(hints[k], data[k], k, ctx)
        for k in ("seed", "device", "threads", "lend_threads", "ablations", "storage_retry_seconds")
        if k in data
    }
    if not 0 <= top.get("seed", 0) < _SEED_LIMIT:
        ctx.fail("seed", f"must be in [0, 2**32), got {top['seed']}")
    if not _DEVICE.fullmatch(top.get("device", "cpu")):
        ctx.fail("device", f"unknown device {top['device']!r}; valid: cpu, cuda, cuda:N, mps")
    if top.get("threads", 0) < 0:
        ctx.fail("threads", f"must be >= 0 (0 = automatic), got {top['threads']}")
    if not 0 <= top.get("storage_retry_seconds", 0) <= _MAX_RETRY_SECONDS:
        ctx.fail("storage_retry_seconds", f"must be in [0, {_MAX_RETRY_SECONDS}] (0 = do not wait out an "
                                          f"outage), got {top['storage_retry_seconds']}")
    if top.get("threads", 0) > _MAX_THREADS:
        ctx.fail("threads", f"must be in [0, {_MAX_THREADS}] (0 = automatic), got {top['threads']}")

    sections = {k: _parse_section(cls, data.get(k, {}), k, ctx) for k, cls in _SECTIONS.items()}
    if not sections["training"].is_accuracy and sections["activations"].epochs == AUTO:
        # "auto" waits for the start point to leave the chance band, which only accuracy has.
        ctx.fail("activations.epochs", f'"auto" needs [training] metric = "{ACCURACY_METRIC}" (it waits '
                                       "for the start point to leave chance level); give a number of epochs")
    return StudyConfig(
        name=name,
        path=Path(os.path.abspath(path)) if path is not None else None,
        storage=storage,
        artifacts=artifacts,
        **top,
        **sections,
    )


# Keys whose value is a table of their own (its keys may hold dots: module paths).
_TABLE_VALUED = frozenset({"sparsity.min_density", "model.kwargs"})


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    # {"hpo.space": {"lr": [..]}} and {"hpo.space.lr": [..]} set the same key.
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value and full not in _TABLE_VALUED:
            yield from _flatten(value, full)
        else:
            yield full, value


def _apply_overrides(
    data: Mapping[str, Any], flat: Mapping[str, Any], ctx: _Context
) -> dict[str, Any]:
    merged = _copy_tables(data)
    for key, value in flat.items():
        parts = key.split(".")
        if not all(parts):
            ctx.fail(key, "is not a dotted key such as activations.trials")
        table = merged
        for i, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                ctx.fail(".".join(parts[: i + 1]), f"is not a table, so {key} cannot be set")
        table[parts[-1]] = value
    return merged


def _copy_tables(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_tables(v) if isinstance(v, Mapping) else v for k, v in data.items()}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_section(cls: type, table: Any, prefix: str, ctx: _Context) -> Any:
    """``cls`` from a TOML table: unknown keys and wrong types fail, then its value checks run."""
    if not isinstance(table, Mapping):
        ctx.fail(prefix, f"expected a table [{prefix}], got {_show(table)} ({_type_name(table)})")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    ctx.check_keys(table, names, prefix)
    values: dict[str, Any] = {}
    for name in names:
        if name in table:
            key, tp = f"{prefix}.{name}", hints[name]
            if dataclasses.is_dataclass(tp):
                values[name] = _parse_section(tp, table[name], key, ctx)
            else:
                values[name] = _convert(tp, table[name], key, ctx)
    return _CHECKS[cls](cls(**values), _Section(ctx, prefix))


# --- types ----------------------------------------------------------------------------------


def _convert(tp: Any, value: Any, key: str, ctx: _Context) -> Any:
    """``value`` as type ``tp`` (ints pass as floats; arrays become tuples), else fail."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # "X | None": None means not set; "int | str"
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        converted = next((c for c in (_as(t, value) for t in options) if c is not _BAD), _BAD)
        if converted is _BAD:
            ctx.fail(key, f"expected {' or '.join(_describe(t) for t in options)}, got {_show(value)} "
                          f"({_type_name(value)})")
        return converted
    converted = _as(tp, value)
    if converted is _BAD:
        ctx.fail(key, f"expected {_describe(tp)}, got {_show(value)} ({_type_name(value)})")
    if converted is _NOT_FINITE:
        ctx.fail(key, f"expected a finite number, got {_show(value)}")
    return converted


_BAD = object()
_NOT_FINITE = object()


def _as(tp: Any, value: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:  # keyword arguments for user code: whatever TOML holds
        return value
    if tp is bool:
        return value if isinstance(value, bool) else _BAD
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _BAD
        return float(value) if math.isfinite(value) else _NOT_FINITE
    if tp is str:
        return value if isinstance(value, str) else _BAD
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            return _BAD
        items = {k: _as(args[1], v) for k, v in value.items()}
        if _NOT_FINITE in items.values():
            return _NOT_FINITE
        return _BAD if any(item is _BAD for item in items.values()) else items
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _BAD
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            return _BAD
        items = [_as(t, v) for t, v in zip(item_types, value)]
        if _NOT_FINITE in items:
            return _NOT_FINITE
        return _BAD if any(item is _BAD for item in items) else tuple(items)
    raise TypeError(f"config fields of type {tp!r} are not supported")  # a bug in this module


def _describe(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    plurals = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    if tp in names:
        return names[tp]
    args = typing.get_args(tp)
    if typing.get_origin(tp) is dict:
        if args[1] is Any:
            return "a table such as { width = 16 }"
        return f"a table of {plurals[args[1]]} such as {{ conv1 = 0.3 }}"
    if args[-1] is Ellipsis:
        return f"an array of {plurals[args[0]]}"
    return f"an array of {len(args)} {plurals[args[0]]} [low, high]"


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string")):
        if isinstance(value, kind):
            return name
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


def _show(value: Any) -> str:
    """A value as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


# --- value checks, one per table ------------------------------------------------------------


def _check_storage(url: str, ctx: _Context) -> str:
    from safs_optuna.storage import StorageError, check_url, redact  # messages never show a password

    match = _URL.fullmatch(url)
    if match is None:
        ctx.fail(
            "storage",
            "expected a database URL such as sqlite:///study.db or postgresql://user@host/db, "
            f"got {redact(url)!r}",
        )
    scheme, rest = match.groups()
    dialect = scheme.split("+", 1)[0].lower()
    if dialect not in STORAGE_SCHEMES:
        close = difflib.get_close_matches(dialect, STORAGE_SCHEMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        valid = ", ".join(STORAGE_SCHEMES)
        ctx.fail("storage", f"unknown storage scheme {scheme!r} in {redact(url)!r}{hint}; valid: {valid}")
    if dialect != "sqlite":
        try:  # a bad port or IPv6 bracket fails here, not deep inside the driver at the first open
            check_url(url)
        except StorageError as exc:
            ctx.fail("storage", str(exc))
        return url  # servers are used as given
    if rest == "":
        return url  # "sqlite://" is an in-memory database
    if not rest.startswith("/"):
        ctx.fail(
            "storage",
            f"{url!r} is not a SQLite URL: write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db",
        )
    file, sep, query = rest[1:].partition("?")
    if file in ("", ":memory:") or file.startswith("file:"):
        return url
    return f"{scheme}:///{ctx.resolve(file)}{sep}{query}"


def _check_artifacts(location: str, ctx: _Context) -> str:
    """A folder (resolved like every path) or an object store URL, used as given."""
    from safs_optuna.object_store import parse_bucket_url

    if _URL.fullmatch(location) is None:
        return ctx.resolve(location)
    try:
        parse_bucket_url(location)
    except ValueError as exc:
        ctx.fail("artifacts", str(exc))
    return location


def _check_model(c: ModelConfig, s: _Section) -> ModelConfig:
    from safs_optuna.models import MODEL_SOURCES, MODELS
    from safs_optuna.sources import is_import_path

    prefix, _, rest = c.name.partition(":")
    if prefix in ("torchvision", "timm") and rest:
        return c
    if is_import_path(c.name):
        return c
    if c.kwargs and c.name in MODELS:
        s.fail("kwargs", f"the built-in model {c.name!r} takes no keyword arguments")
    s.choice("name", c.name, MODELS, "model", extra=MODEL_SOURCES)
    return c


def _check_data(c: DataConfig, s: _Section) -> DataConfig:
    from safs_optuna.data import DATASETS
    from safs_optuna.sources import is_import_path

    name = c.name
    folders = {"idx:": ("IDX files", "data/my_mnist"), "folder:": ("images", "data/my_images")}
    prefix = next((p for p in folders if name.startswith(p)), None)
    if prefix is not None:  # a folder of IDX files, or of images: resolved against the config's folder
        folder = name[len(prefix) :].strip()
        if not folder:
            what, example = folders[prefix]
            s.fail("name", f'{prefix} needs a folder of {what}, as in "{prefix}{example}"')
        name = prefix + s.ctx.resolve(folder)
        if not os.path.isdir(name[len(prefix) :]):
            s.fail("name", f"{c.name!r}: no folder {name[len(prefix):]}")
    elif (match := _IMAGENET16_CLASSES.fullmatch(name)) is not None:
        if not 1 <= int(match.group(1)) <= 1000:
            s.fail("name", f"{name!r}: imagenet16 has 1 to 1000 classes")
    elif not is_import_path(name):
        s.choice("name", name, DATASETS, "dataset",
                 extra=("imagenet16-<classes>", "idx:<dir>", "folder:<dir>", "<module>:<callable>"))
    s.interval("val_size", c.val_size, 0.0, 1.0, "()")
    if c.image_size is not None:
        s.at_least("image_size", c.image_size, 1)
        s.at_most("image_size", c.image_size, _MAX_BATCH_SIZE)
    if c.channels is not None and c.channels not in (1, 3):
        s.fail("channels", f"must be 1 (grayscale) or 3 (RGB), got {_show(c.channels)}")
    if c.num_classes is not None:
        s.at_least("num_classes", c.num_classes, 2)
        s.at_most("num_classes", c.num_classes, 1_000_000)
    s.at_least("loader_workers", c.loader_workers, 0)
    s.at_most("loader_workers", c.loader_workers, 256)
    root = s.ctx.resolve(c.root) if c.root is not None else None
    return dataclasses.replace(c, name=name, root=root)


def _check_sparsity(c: SparsityConfig, s: _Section) -> SparsityConfig:
    from safs_optuna.sparsity import SCOPES

    s.interval("ratio", c.ratio, 0.0, 1.0, "[)")
    if c.ratio == 0.0:
        s.fail("ratio", "must be in (0.0, 1.0), got 0.0: a ratio of 0 prunes nothing, so there is "
                        "nothing for SAFS to recover; the paper's is 0.99")
    s.choice("scope", c.scope, SCOPES, "scope")
    if "" in c.skip:
        s.fail("skip", f"module names must not be empty, got {_show(c.skip)}")
    for pattern, density in c.min_density.items():
        if not pattern:
            s.fail("min_density", f"module names must not be empty, got {_show(c.min_density)}")
        if not 0.0 < density <= 1.0:
            s.fail("min_density", f"{pattern!r}: a density must be in (0, 1] (1 keeps the layer dense), "
                                  f"got {density!r}")
    if not 0 <= c.gradual_epochs <= _MAX_EPOCHS:
        most = f"{_MAX_EPOCHS:,}".replace(",", " ")  # 100 000, as at_most writes it
        s.fail("gradual_epochs", f"must be in [0, {most}] (0 = one-shot pruning), got {c.gradual_epochs!r}")
    if c.checkpoint is None:
        return c
    if c.gradual_epochs:
        s.fail("checkpoint", "a pruned checkpoint is already sparse; gradual_epochs needs a dense network "
                             "(set gradual_epochs = 0, or give [dense] checkpoint instead)")
    checkpoint = s.ctx.resolve(c.checkpoint)
    if not os.path.isfile(checkpoint):
        s.fail("checkpoint", f"no file {checkpoint}")
    return dataclasses.replace(c, checkpoint=checkpoint)


def _check_dense(c: DenseConfig, s: _Section) -> DenseConfig:
    s.at_most("epochs", c.epochs, _MAX_EPOCHS)
    if c.checkpoint is None:
        s.at_least("epochs", c.epochs, 1)
        return c
    s.at_least("epochs", c.epochs, 0)
    checkpoint = s.ctx.resolve(c.checkpoint)
    if not os.path.isfile(checkpoint):
        s.fail("checkpoint", f"no file {checkpoint}")
    return dataclasses.replace(c, checkpoint=checkpoint)


def _check_protocol(c: ProtocolConfig, s: _Section) -> ProtocolConfig:
    from safs_optuna.training import OPTIMIZERS, SCHEDULES

    s.choice("optimizer", c.optimizer, OPTIMIZERS, "optimizer")
    if not c.lr > 0:
        s.fail("lr", f"must be > 0, got {_show(c.lr)}")
    s.at_most("lr", c.lr, _MAX_LR)
    s.interval("momentum", c.momentum, 0.0, 1.0, "[)")
    s.at_least("weight_decay", c.weight_decay, 0.0)
    s.at_most("weight_decay", c.weight_decay, _MAX_WEIGHT_DECAY)
    s.choice("schedule", c.schedule, SCHEDULES, "schedule")
    s.at_least("batch_size", c.batch_size, 1)
    s.at_most("batch_size", c.batch_size, _MAX_BATCH_SIZE)
    try:  # whatever else HParams demands (e.g. of combinations) is a config error too
        c.hparams()
    except (TypeError, ValueError) as exc:
        s.fail("", str(exc))
    return c


def _check_stage(c: ActivationsConfig | HPOConfig, s: _Section, words: tuple[str, ...]) -> None:
    """The keys both search stages have; ``words``: what ``epochs`` may say instead of a number."""
    s.choice("sampler", c.sampler, SAMPLERS, "sampler")
    s.choice("pruner", c.pruner, PRUNERS, "pruner")
    s.at_least("trials", c.trials, 1)
    s.at_most("trials", c.trials, _MAX_TRIALS)
    if isinstance(c.epochs, str):
        if c.epochs not in words:
            valid = "an integer >= 1 or " + " or ".join(f'"{w}"' for w in words)
            s.fail("epochs", f"expected {valid}, got {_show(c.epochs)}")
    else:
        s.at_least("epochs", c.epochs, 1)
        s.at_most("epochs", c.epochs, _MAX_EPOCHS)
    s.interval("fraction", c.fraction, 0.0, 1.0, "(]")
    if c.fraction < _MIN_FRACTION:
        s.fail("fraction", f"must be in [{_MIN_FRACTION}, 1.0], got {_show(c.fraction)}: "
                           "a search subset that small holds almost no images")


def _check_activations(c: ActivationsConfig, s: _Section) -> ActivationsConfig:
    from safs_optuna.operators import BINARY, UNARY
    from safs_optuna.samplers.lahc import VARIANTS
    from safs_optuna.space import ActivationSpace

    s.choice("preset", c.preset, ActivationSpace.PRESETS, "preset")
    if c.unary is not None:
        s.choices("unary", c.unary, UNARY, "unary operator")
    if c.binary is not None:
        s.choices("binary", c.binary, BINARY, "binary operator")
    _check_stage(c, s, (AUTO,))
    s.at_least("history", c.history, 1)
    s.at_most("history", c.history, _MAX_HISTORY)
    s.choice("lahc", c.lahc, VARIANTS, "LAHC variant")
    return c


def _check_space(c: HPOSpace, s: _Section) -> HPOSpace:
    from safs_optuna.training import OPTIMIZERS, SCHEDULES

    s.choices("optimizers", c.optimizers, OPTIMIZERS, "optimizer")
    s.span("lr", c.lr, log=True)
    s.span("momentum", c.momentum, log=False, within=(0.0, 1.0))
    s.span("weight_decay", c.weight_decay, log=True)
    s.choices("schedules", c.schedules, SCHEDULES, "schedule")
    s.choices("learn_scale", c.learn_scale, None, "choice")
    return c


def _check_hpo(c: HPOConfig, s: _Section) -> HPOConfig:
    _check_stage(c, s, (FINAL,))
    return c


def _check_final(c: FinalConfig, s: _Section) -> FinalConfig:
    s.at_least("epochs", c.epochs, 1)
    s.at_most("epochs", c.epochs, _MAX_EPOCHS)
    return c


def _check_training(c: TrainingConfig, s: _Section) -> TrainingConfig:
    from safs_optuna.sources import is_import_path

    for key in ("fit", "evaluate"):
        value = getattr(c, key)
        if value is not None and not is_import_path(value):
            s.fail(key, f"{_show(value)} is not an import path such as \"my_train:fit\"")
    if not _NAME.fullmatch(c.metric):
        s.fail("metric", f'{_show(c.metric)}: a metric name may only contain letters, digits, "_", "." and "-"')
    s.choice("direction", c.direction, DIRECTIONS, "direction")
    if not c.is_accuracy and c.fit is None:
        s.fail("metric", f"the built-in loop reports {ACCURACY_METRIC!r}; another metric needs your own "
                         "[training] fit that reports it")
    if c.is_accuracy and c.direction != "maximize":
        s.fail("direction", f"{ACCURACY_METRIC!r} is accuracy, which is maximized; name your own metric "
                            "to minimize it")
    return c


_CHECKS: dict[type, Callable[[Any, _Section], Any]] = {
    ModelConfig: _check_model,
    DataConfig: _check_data,
    SparsityConfig: _check_sparsity,
    DenseConfig: _check_dense,
    ProtocolConfig: _check_protocol,
    ActivationsConfig: _check_activations,
    HPOSpace: _check_space,
    HPOConfig: _check_hpo,
    FinalConfig: _check_final,
    TrainingConfig: _check_training,
}
