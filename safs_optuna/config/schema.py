"""The schema of a study config: one frozen dataclass per TOML table, every rule on its field.

Each field is a key of the file; its :func:`~safs_optuna.config.spec.key` metadata holds the
one line of meaning, the range or choices, and is the only copy of them: the loader enforces
it and the config reference is generated from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safs_optuna.training import HParams

from .names import PRUNERS, SAMPLERS
from .spec import Choices, Pattern, Spec, key

AUTO = "auto"
"""``epochs = "auto"`` of a search stage: measured by its start trial (see the pipeline)."""

ACCURACY_METRIC = "val_accuracy"
"""``[training] metric`` of the built-in loop: validation accuracy in percent."""

DIRECTIONS: tuple[str, ...] = ("maximize", "minimize")

FINAL = "final"
"""``[hpo] epochs = "final"``: every stage-2 trial trains as long as the full fine-tune."""

STORAGE_SCHEMES: tuple[str, ...] = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
"""Database URL schemes (SQLAlchemy dialects, optionally ``+driver``) accepted for ``storage``."""

SEED_LIMIT = 2**32  # numpy's seeds must be below this
# Upper bounds that catch a typo (an extra digit or three) before it books a machine for years.
MAX_EPOCHS = 100_000
_MAX_TRIALS = 100_000
_MAX_SIZE = 65_536
_MIN_FRACTION = 1e-4

NAME = Pattern(r"[A-Za-z0-9_.-]+", 'letters, digits, "_", "." and "-"',
               '{value!r} may only contain letters, digits, "_", "." and "-"')
_DEVICE = Pattern(r"cpu|cuda(:[0-9]+)?|mps", "cpu, cuda, cuda:N or mps",
                  "unknown device {value!r}; valid: cpu, cuda, cuda:N, mps")
_EPOCHS = (1, MAX_EPOCHS)
_FRACTION = dict(range=(_MIN_FRACTION, 1.0), note="a smaller search subset holds almost no images")
_OPTIMIZERS = Choices("safs_optuna.training:OPTIMIZERS", "optimizer")
_SCHEDULES = Choices("safs_optuna.training:SCHEDULES", "schedule")


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: which network to sparsify (see :func:`safs_optuna.models.build_model`)."""

    name: str = key("lenet5", "the network: a built-in name or a source such as torchvision:<name>",
                    choices=Choices("safs_optuna.models:MODELS", "model",
                                    forms="safs_optuna.models:MODEL_SOURCES"))
    kwargs: dict[str, Any] = key(doc="more keyword arguments for the model's builder (not for "
                                     "built-in names)", factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: the dataset (see :mod:`safs_optuna.data`) and its validation split.

    A ``"<module>:<callable>"`` returns ``Splits`` or ``(train, val, test)`` datasets;
    ``idx:<dir>`` and ``folder:<dir>`` (an ``ImageFolder`` layout) are folders resolved against
    the config's folder.
    """

    name: str = key("quickstart", "the dataset: a built-in name, idx:<dir>, folder:<dir> or "
                                  "<module>:<callable>",
                    choices=Choices("safs_optuna.data:DATASETS", "dataset",
                                    forms=("imagenet16-<classes>", "idx:<dir>", "folder:<dir>",
                                           "<module>:<callable>")))
    root: str | None = key(None, "where datasets are looked for (unset: the data module's default)",
                           path="any")
    val_size: float = key(0.1, "fraction of the training split held out for validation",
                          range=(0.0, 1.0), closed="()")
    download: bool = key(False, "let torchvision fetch mnist, fashion_mnist or cifar10 into root")
    image_size: int | None = key(None, "side of the images a folder: is read at (unset: their own)",
                                 range=(1, _MAX_SIZE))
    channels: int | None = key(None, "channels a folder: is read with (unset: the first image's)",
                               choices=Choices((1, 3), "channel count"), note="1 grayscale, 3 RGB")
    num_classes: int | None = key(None, "number of classes (unset: the largest label + 1)",
                                  range=(2, 1_000_000))
    loader_workers: int = key(0, "DataLoader processes for data not held in memory",
                              range=(0, 256))


@dataclass(frozen=True)
class SparsityConfig:
    """``[sparsity]``: magnitude pruning of the dense network (ratio of weights set to zero).

    ``scope`` is the allocation (:data:`safs_optuna.sparsity.SCOPES`): ``layer`` (every layer
    loses ``ratio``, the paper's), ``global`` (one magnitude threshold), ``erk``
    (Erdős–Rényi-Kernel densities) or ``lamp`` (layer-adaptive magnitude scores). Layers of
    ``min_density`` count towards ``ratio`` (the others are pruned harder so that the total
    holds); layers of ``skip`` do not (see :func:`safs_optuna.sparsity.magnitude_prune`).

    ``gradual_epochs = N > 0`` is gradual magnitude pruning (Zhu & Gupta 2017): before epoch
    ``e`` (from 0) the sparsity rises to ``cubic_sparsity(e + 1, N, final=ratio)``, then the
    network fine-tunes one epoch with the default ``[protocol]`` (a fresh optimizer each epoch),
    reaching ``ratio`` in the last epoch; it costs N epochs, once per study.

    ``checkpoint`` is the user's already-sparse network (a ``state_dict`` with zeros, or with
    ``torch.nn.utils.prune``'s ``weight_orig``/``weight_mask``): the dense and sparse stages are
    skipped, its masks are kept exactly, and ``ratio``, ``scope``, ``skip``, ``min_density`` do
    not apply (:func:`safs_optuna.checkpoint.load_pruned_weights`).
    """

    ratio: float = key(0.99, "fraction of the weights set to zero", range=(0.0, 1.0), closed="()",
                       note="0 would prune nothing, leaving SAFS nothing to recover; the paper's is 0.99")
    scope: str = key("layer", "how the ratio is allocated to layers",
                     choices=Choices("safs_optuna.sparsity:SCOPES", "scope"))
    skip: tuple[str, ...] = key((), "module paths left dense and outside the ratio")
    min_density: dict[str, float] = key(
        doc="module-path glob -> least fraction of weights those layers keep (1 keeps them dense)",
        factory=dict, range=(0.0, 1.0), closed="(]", note="1 keeps the layer dense")
    gradual_epochs: int = key(0, "epochs of gradual pruning; 0 prunes in one shot",
                              range=(0, MAX_EPOCHS), note="0 = one-shot pruning")
    checkpoint: str | None = key(None, "the user's pruned network: no dense or sparse stage",
                                 path="file")


@dataclass(frozen=True)
class DenseConfig:
    """``[dense]``: train the dense network for ``epochs``, or load ``checkpoint`` instead."""

    epochs: int = key(10, "epochs of dense training (0 only with a checkpoint)", range=(0, MAX_EPOCHS))
    checkpoint: str | None = key(None, "a state_dict of the dense model, trained elsewhere",
                                 path="file")


# The [protocol] keys are the fields of training.HParams; these are their rules as config keys
# (HParams itself keeps its own, looser checks for callers of the Python API).
_PROTOCOL_KEYS: dict[str, Spec] = {
    "optimizer": Spec("the optimizer", choices=_OPTIMIZERS),
    "lr": Spec("initial (peak, for linear_warmup) learning rate", range=(0.0, 10.0), closed="(]"),
    "momentum": Spec("momentum of sgd only", range=(0.0, 1.0), closed="[)"),
    "weight_decay": Spec("L2 penalty (decoupled for adamw)", range=(0.0, 1.0)),
    "schedule": Spec("the learning-rate schedule", choices=_SCHEDULES),
    "batch_size": Spec("training batch size", range=(1, _MAX_SIZE)),
    "nesterov": Spec("Nesterov momentum (sgd with momentum > 0 only)"),
    "augment": Spec("random crop and flip of training images of at least 32 px"),
}


@dataclass(frozen=True)
class ProtocolConfig:
    """``[protocol]``: the default fine-tuning protocol, whose keys are the fields of
    :class:`~safs_optuna.training.HParams`.

    It trains the dense network, fine-tunes the magnitude-pruning baseline and scores every
    stage-1 candidate. Its keys also read as attributes (``config.protocol.lr``).

    Example:

        .. code::

            hparams = config.protocol.hparams()   # a safs_optuna.training.HParams
    """

    values: HParams = key(doc="the protocol", factory=HParams, keys=_PROTOCOL_KEYS)

    def hparams(self) -> HParams:
        """This protocol as :class:`safs_optuna.training.HParams` (validated)."""
        return self.values

    def __getattr__(self, name: str) -> Any:
        # config.protocol.lr: the [protocol] keys are what users write and read.
        if name in _PROTOCOL_KEYS:
            return getattr(self.values, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _stage_keys(sampler: str, epochs: int | str, word: str, epochs_doc: str, trials: int) -> dict[str, Any]:
    """The keys both search stages have (a dataclass field cannot be shared between classes)."""
    return dict(
        sampler=key(sampler, "the Optuna sampler", choices=Choices(SAMPLERS, "sampler")),
        pruner=key("incumbent", "the Optuna pruner (early stopping of trials)",
                   choices=Choices(PRUNERS, "pruner")),
        trials=key(trials, "trials of the stage, shared by all workers", range=(1, _MAX_TRIALS)),
        epochs=key(epochs, epochs_doc, range=_EPOCHS, words=(word,)),
        fraction=key(1.0, "fraction of the training split each trial trains on", **_FRACTION),
    )


# Stage 1's default: the surrogate sampler with 7 candidates reached the stage-1 gain of LAHC
# with 20 within one sd, with at most a third of its epochs, on two datasets over 3 seeds
# (benchmarks/results/stage1_cost_*.md).
_ACTIVATIONS_STAGE = _stage_keys("surrogate", AUTO, AUTO,
                                 'epochs per candidate; "auto": measured by the start trial', 7)
_HPO_STAGE = _stage_keys("tpe", FINAL, FINAL, 'epochs per protocol; "final": as long as the full fine-tune', 20)


@dataclass(frozen=True)
class ActivationsConfig:
    """``[activations]``: stage 1, the per-site activation search.

    The space is ``ActivationSpace.preset(preset)``, unless ``unary`` (and optionally
    ``binary``) name the operators of a custom space; ``history`` and ``lahc`` are used by the
    ``lahc`` sampler only (see :class:`~safs_optuna.samplers.lahc.LAHCSampler`).

    ``epochs = "auto"`` lets the start trial (the network's own activations) measure it: it
    trains until it leaves chance level, and candidates train that many epochs plus one, at
    least 2 and at most ``[final] epochs``; the value is recorded on the study and shown by
    ``status``.
    """

    preset: str = key("safs", "the activation space, unless unary is given",
                      choices=Choices("safs_optuna.space:ActivationSpace.PRESETS", "preset"))
    unary: tuple[str, ...] | None = key(None, "unary operators of a custom space", distinct=True,
                                        choices=Choices("safs_optuna.operators:UNARY", "unary operator"))
    binary: tuple[str, ...] | None = key(None, "binary operators of a custom space", distinct=True,
                                         choices=Choices("safs_optuna.operators:BINARY", "binary operator"))
    sampler: str = _ACTIVATIONS_STAGE["sampler"]
    pruner: str = _ACTIVATIONS_STAGE["pruner"]
    trials: int = _ACTIVATIONS_STAGE["trials"]
    epochs: int | str = _ACTIVATIONS_STAGE["epochs"]
    fraction: float = _ACTIVATIONS_STAGE["fraction"]
    history: int = key(3, "LAHC history length", range=(1, 1000))
    lahc: str = key("textbook", 'LAHC rules: "textbook" (Burke & Bykov) or the SAFS code\'s',
                    choices=Choices("safs_optuna.samplers.lahc:VARIANTS", "LAHC variant"))
    warm_start: tuple[str, ...] = key((), "earlier winners queued first: study names in this storage, or "
                                          '.toml/.json files of site = "formula"')
    surrogate_features: tuple[str, ...] = key(
        (), "zero-cost features the surrogate sampler adds to the operators ([]: the operators alone)",
        choices=Choices("safs_optuna.zero_cost:FEATURES", "zero-cost feature"))


@dataclass(frozen=True)
class HPOSpace:
    """``[hpo.space]``: what stage 2 tunes: choices, and ``[low, high]`` ranges."""

    optimizers: tuple[str, ...] = key(("sgd", "adam", "adamw", "rmsprop"), "optimizers to choose from",
                                      choices=_OPTIMIZERS, distinct=True)
    lr: tuple[float, float] = key((1e-4, 1e-1), "learning-rate range, searched on a log scale",
                                  pair="log")
    momentum: tuple[float, float] = key((0.5, 0.99), "momentum range (sgd only), searched linearly",
                                        pair="linear", range=(0.0, 1.0), closed="[)")
    weight_decay: tuple[float, float] = key((1e-6, 1e-2), "weight-decay range, searched on a log scale",
                                            pair="log")
    schedules: tuple[str, ...] = key(("constant", "cosine", "step", "plateau"), "schedules to choose from",
                                     choices=_SCHEDULES, distinct=True)
    learn_scale: tuple[bool, ...] = key((True,), "whether the activations' α and β are learned "
                                                 "([true, false] searches it)",
                                        choices=Choices((True, False), "choice"), distinct=True)


@dataclass(frozen=True)
class HPOConfig:
    """``[hpo]``: stage 2, the fine-tuning hyperparameter search with the activations fixed.

    ``epochs = "final"`` (the default) trains every protocol for ``[final] epochs``, its
    learning-rate schedule spread over them, exactly as the full fine-tune will, as the paper's
    code does; the pruner stops protocols that fall clearly behind the best one early. A number
    trains that many epochs instead: cheaper, but a protocol that wins a short run can lose the
    full one (``benchmarks/fidelity_rank.py`` measures it).
    """

    sampler: str = _HPO_STAGE["sampler"]
    pruner: str = _HPO_STAGE["pruner"]
    trials: int = _HPO_STAGE["trials"]
    epochs: int | str = _HPO_STAGE["epochs"]
    fraction: float = _HPO_STAGE["fraction"]
    space: HPOSpace = key(doc="what stage 2 tunes", factory=HPOSpace)


@dataclass(frozen=True)
class FinalConfig:
    """``[final]``: every full fine-tune (the baseline, the SAFS winner and, with ``ablations``,
    "stage 1 alone" and "stage 2 alone"), each reported on the test split."""

    epochs: int = key(10, "epochs of every full fine-tune", range=_EPOCHS)


@dataclass(frozen=True)
class TrainingConfig:
    """``[training]``: the training loop and what it reports.

    ``fit`` has the contract of :data:`safs_optuna.training.FitFunction`; ``evaluate`` is
    ``evaluate(model, dataset) -> float``. The built-in metric ``"val_accuracy"`` (percent) is
    the only one with a chance level (the chance band, "auto" epochs).
    """

    fit: str | None = key(None, "<module>:<callable>, your own training loop (unset: the built-in fit)")
    evaluate: str | None = key(None, "<module>:<callable> giving the test metric of a model "
                                     "(unset: top-1 accuracy)")
    metric: str = key(ACCURACY_METRIC, "name of the validation metric the loop reports",
                      pattern=Pattern(NAME.regex, NAME.valid,
                                      '{value!r}: a metric name may only contain letters, digits, '
                                      '"_", "." and "-"'))
    direction: str = key("maximize", "whether a larger metric is better",
                         choices=Choices(DIRECTIONS, "direction"))

    @property
    def is_accuracy(self) -> bool:
        """Whether the metric is the built-in accuracy (in percent), which has a chance level."""
        return self.metric == ACCURACY_METRIC


@dataclass(frozen=True)
class StudyConfig:
    """A whole pipeline: names, storage, and one section per stage.

    Build it with :func:`~safs_optuna.config.load_config` (or
    :func:`~safs_optuna.config.parse_config`), which validate everything and resolve relative
    paths; ``storage`` and ``artifacts`` are then always set.

    Example:

        .. code::

            from safs_optuna.config import load_config

            config = load_config("studies/quickstart.toml", {"activations.trials": 5})
            config.study_name("activations")  # "quickstart/activations"
            config.activations.trials  # 5
    """

    name: str = key(doc="the study's name: studies <name>/<stage> in the storage", pattern=NAME)
    path: Path | None = dataclasses.field()  # where the file was read from: not a key
    storage: str = key(doc="database URL: sqlite:///<file> (relative to the config) or a server's",
                       computed="sqlite:///<config folder>/<name>.db",
                       note=f"schemes {', '.join(STORAGE_SCHEMES)}, each with an optional +driver")
    artifacts: str = key(doc="folder of checkpoints and plots, or an object store: s3://bucket/prefix, "
                             "gs://bucket/prefix", path="any",
                         computed="<config folder>/<name>.artifacts")
    seed: int = key(0, "seed of every stage", range=(0, SEED_LIMIT), closed="[)",
                    note="numpy's seeds")
    device: str = key("cpu", "torch device (syntax checked, not availability)", pattern=_DEVICE)
    threads: int = key(0, "torch threads per worker; 0 = the cores split between workers",
                       range=(0, 1024), note="0 = automatic")
    lend_threads: bool = key(True, "a waiting worker lends its threads to working ones on this machine")
    ablations: bool = key(True, 'also run the "stage 1 alone" and "stage 2 alone" columns')
    baseline_long: bool = key(False, 'also fine-tune the network\'s own activations for as long as stages 1 '
                                     'and 2 trained together (the "ReLU, same compute" column)')
    storage_retry_seconds: int = key(300, "seconds a worker waits out an outage of the storage or the "
                                          "artifact store", range=(0, 86_400),
                                     note="0 = a lost connection stops the worker at once")
    model: ModelConfig = key(doc="the network", factory=ModelConfig)
    data: DataConfig = key(doc="the dataset", factory=DataConfig)
    sparsity: SparsityConfig = key(doc="network pruning", factory=SparsityConfig)
    dense: DenseConfig = key(doc="dense training", factory=DenseConfig)
    protocol: ProtocolConfig = key(doc="the default fine-tuning protocol", factory=ProtocolConfig)
    activations: ActivationsConfig = key(doc="stage 1", factory=ActivationsConfig)
    hpo: HPOConfig = key(doc="stage 2", factory=HPOConfig)
    final: FinalConfig = key(doc="the full fine-tunes", factory=FinalConfig)
    training: TrainingConfig = key(doc="the training loop", factory=TrainingConfig)

    def study_name(self, stage: str) -> str:
        """The Optuna study of ``stage`` in the storage, e.g. ``"quickstart/activations"``."""
        return f"{self.name}/{stage}"

    def for_seed(self, seed: int) -> "StudyConfig":
        """The same pipeline with another seed, in studies of its own (``<name>/seed<N>/<stage>``)."""
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
            raise ValueError(f"seed must be an integer in [0, {SEED_LIMIT}), got {seed!r}")
        return dataclasses.replace(self, seed=seed, name=f"{self.name}/seed{seed}")

