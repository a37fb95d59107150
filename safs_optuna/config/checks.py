"""Checks the schema's metadata cannot say: several keys at once, and names with other forms.

Each section check takes the section the walker built, the :class:`~.walker.Context` and the
section's prefix, and returns the section (with names resolved) or fails naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable
from typing import Any

from .errors import number, show
from .schema import (
    ACCURACY_METRIC,
    AUTO,
    MAX_EPOCHS,
    STORAGE_SCHEMES,
    DataConfig,
    DenseConfig,
    ModelConfig,
    SparsityConfig,
    StudyConfig,
    TrainingConfig,
)
from .spec import Choices, spec_of
from .walker import Context

__all__ = ["SECTION_CHECKS", "check_storage", "check_study"]

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_IMAGENET16_CLASSES = re.compile(r"imagenet16-([0-9]+)")


def _choices(cls: type, name: str) -> Choices:
    spec = spec_of(next(f for f in dataclasses.fields(cls) if f.name == name))
    assert spec is not None and spec.choices is not None
    return spec.choices


def check_storage(url: str, ctx: Context) -> str:
    """The storage URL, a relative SQLite file made absolute against the config's folder."""
    from safs_optuna.storage import StorageError, check_url, redact, resolve_sqlite_url

    match = _URL.fullmatch(url)
    if match is None:  # messages never show a password: redact()
        ctx.fail("storage", "expected a database URL such as sqlite:///study.db or "
                            f"postgresql://user@host/db, got {redact(url)!r}")
    scheme = match.group(1)
    dialect = scheme.split("+", 1)[0].lower()
    if dialect not in STORAGE_SCHEMES:
        close = difflib.get_close_matches(dialect, STORAGE_SCHEMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        ctx.fail("storage", f"unknown storage scheme {scheme!r} in {redact(url)!r}{hint}; "
                            f"valid: {', '.join(STORAGE_SCHEMES)}")
    try:  # a bad port or IPv6 bracket fails here, not deep inside the driver at the first open
        if dialect == "sqlite":
            return resolve_sqlite_url(url, ctx.base_dir)
        check_url(url)
    except StorageError as exc:
        ctx.fail("storage", str(exc))
    return url  # servers are used as given


def check_artifacts(location: Any, ctx: Context) -> str | None:
    """An object store URL (``s3://``, ``gs://``), checked and used as given; ``None`` for
    anything else (a folder, resolved like every path)."""
    from safs_optuna.object_store import parse_bucket_url

    if not isinstance(location, str) or _URL.fullmatch(location) is None:
        return None
    try:
        parse_bucket_url(location)
    except ValueError as exc:
        ctx.fail("artifacts", str(exc))
    return location


def _model(c: ModelConfig, ctx: Context, prefix: str) -> ModelConfig:
    from safs_optuna.models import MODELS
    from safs_optuna.sources import is_import_path

    source, _, rest = c.name.partition(":")
    if (source in ("torchvision", "timm") and rest) or is_import_path(c.name):
        return c
    if c.kwargs and c.name in MODELS:
        ctx.fail(f"{prefix}.kwargs", f"the built-in model {c.name!r} takes no keyword arguments")
    ctx.choice(f"{prefix}.name", c.name, _choices(ModelConfig, "name"))
    return c


def _data(c: DataConfig, ctx: Context, prefix: str) -> DataConfig:
    from safs_optuna.sources import is_import_path

    name, key = c.name, f"{prefix}.name"
    folders = {"idx:": ("IDX files", "data/my_mnist"), "folder:": ("images", "data/my_images")}
    kind = next((p for p in folders if name.startswith(p)), None)
    if kind is not None:  # a folder of IDX files, or of images: resolved against the config's folder
        folder = name[len(kind):].strip()
        if not folder:
            what, example = folders[kind]
            ctx.fail(key, f'{kind} needs a folder of {what}, as in "{kind}{example}"')
        name = kind + ctx.resolve(folder)
        if not os.path.isdir(name[len(kind):]):
            ctx.fail(key, f"{c.name!r}: no folder {name[len(kind):]}")
    elif (match := _IMAGENET16_CLASSES.fullmatch(name)) is not None:
        if not 1 <= int(match.group(1)) <= 1000:
            ctx.fail(key, f"{name!r}: imagenet16 has 1 to 1000 classes")
    elif not is_import_path(name):
        ctx.choice(key, name, _choices(DataConfig, "name"))
    return dataclasses.replace(c, name=name)


def _sparsity(c: SparsityConfig, ctx: Context, prefix: str) -> SparsityConfig:
    if "" in c.skip:
        ctx.fail(f"{prefix}.skip", f"module names must not be empty, got {show(c.skip)}")
    if "" in c.min_density:
        ctx.fail(f"{prefix}.min_density", f"module names must not be empty, got {show(c.min_density)}")
    if c.checkpoint is not None and c.gradual_epochs:
        ctx.fail(f"{prefix}.checkpoint", "a pruned checkpoint is already sparse; gradual_epochs needs a "
                                         "dense network (set gradual_epochs = 0, or give [dense] "
                                         "checkpoint instead)")
    return c


def _dense(c: DenseConfig, ctx: Context, prefix: str) -> DenseConfig:
    if c.checkpoint is None and c.epochs < 1:
        ctx.fail(f"{prefix}.epochs", f"must be in [1, {number(MAX_EPOCHS)}] without a checkpoint "
                                     f"(0 only with [dense] checkpoint), got {show(c.epochs)}")
    return c


def _training(c: TrainingConfig, ctx: Context, prefix: str) -> TrainingConfig:
    from safs_optuna.sources import is_import_path

    for key in ("fit", "evaluate"):
        value = getattr(c, key)
        if value is not None and not is_import_path(value):
            ctx.fail(f"{prefix}.{key}", f"{show(value)} is not an import path such as \"my_train:fit\"")
    if not c.is_accuracy and c.fit is None:
        ctx.fail(f"{prefix}.metric", f"the built-in loop reports {ACCURACY_METRIC!r}; another metric "
                                     "needs your own [training] fit that reports it")
    if c.is_accuracy and c.direction != "maximize":
        ctx.fail(f"{prefix}.direction", f"{ACCURACY_METRIC!r} is accuracy, which is maximized; name "
                                        "your own metric to minimize it")
    return c


def check_study(c: StudyConfig, ctx: Context, prefix: str) -> StudyConfig:
    """Checks across sections, once every section is valid on its own."""
    if not c.training.is_accuracy and c.activations.epochs == AUTO:
        # "auto" waits for the start point to leave the chance band, which only accuracy has.
        ctx.fail("activations.epochs", f'"auto" needs [training] metric = "{ACCURACY_METRIC}" (it waits '
                                       "for the start point to leave chance level); give a number of epochs")
    if c.activations.surrogate_features and c.activations.sampler != "surrogate":
        ctx.fail("activations.surrogate_features", f"only the surrogate sampler reads it, and [activations] "
                                                   f"sampler is {show(c.activations.sampler)}; set sampler = "
                                                   '"surrogate" or leave surrogate_features out')
    return c


SECTION_CHECKS: dict[type, Callable[[Any, Context, str], Any]] = {
    ModelConfig: _model,
    DataConfig: _data,
    SparsityConfig: _sparsity,
    DenseConfig: _dense,
    TrainingConfig: _training,
    StudyConfig: check_study,
}
"""The check of each section that has one, run by the walker after the section is built."""
