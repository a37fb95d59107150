"""Study configs: one TOML file describes a whole SAFS pipeline, validated before anything runs.

A config file has top-level keys and one table per part of the pipeline; every key is optional
except ``name``, and a missing key takes its default. The keys, their types, defaults, ranges
and meaning are those of the schema dataclasses (:mod:`~safs_optuna.config.schema`); the config
reference lists them all (:func:`reference_markdown`, or ``python -m safs_optuna.config``).

Relative paths (a ``sqlite:///relative.db`` URL, ``artifacts``, ``data.root``, the checkpoints
and the folder of ``data.name = "idx:<dir>"`` or ``"folder:<dir>"``) are resolved against the
folder of the config file. Import paths (``"my_model:build"`` in ``[model] name``,
``[data] name``, ``[training] fit`` and ``evaluate``) are looked for in the config's folder
first, then on ``sys.path``; they are imported by ``run``, not by the config. Names of models,
datasets, operators, optimizers and schedules are checked against the registries of the modules
that implement them, imported only when a config is validated.

Any problem raises :class:`ConfigError` naming the file, the key, the bad value and what is
valid (an unknown key gets the closest valid one suggested).
"""

from __future__ import annotations

from .errors import ConfigError
from .load import load_config, parse_config, to_dict
from .names import PRUNERS, SAMPLERS
from .reference import reference_markdown
from .schema import (
    ACCURACY_METRIC,
    AUTO,
    DIRECTIONS,
    FINAL,
    STORAGE_SCHEMES,
    ActivationsConfig,
    DataConfig,
    DenseConfig,
    FinalConfig,
    HPOConfig,
    HPOSpace,
    ModelConfig,
    ProtocolConfig,
    SparsityConfig,
    StudyConfig,
    TrainingConfig,
)

__all__ = [
    "ACCURACY_METRIC",
    "AUTO",
    "DIRECTIONS",
    "FINAL",
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
    "reference_markdown",
    "to_dict",
]
