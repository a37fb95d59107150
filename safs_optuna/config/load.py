"""Reading a study config: the file, the overrides, the defaults that depend on the name.

Relative paths resolve against the folder of the config file (the current directory for
:func:`parse_config` without a path), never against the directory a command runs in, so that
every worker finds the same files; ``~`` is expanded. Any problem raises
:class:`~safs_optuna.config.ConfigError` naming the file, the key, the bad value and what is
valid; the first problem is reported, top-level keys before tables, tables in file order.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .checks import SECTION_CHECKS, check_artifacts, check_storage
from .errors import ConfigError, type_name
from .schema import StudyConfig
from .walker import Context, build, keys, tables, value

__all__ = ["load_config", "parse_config", "to_dict"]


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
    """A config (or one of its sections) as plain JSON-compatible data, keyed as in the file.

    Tuples become lists and ``StudyConfig.path`` is left out (it is where the file was read
    from, not part of the study), so ``parse_config(to_dict(c), c.path) == c`` and the result
    compares equal to itself after a JSON round trip (e.g. through study user attrs).
    """
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise TypeError(f"to_dict expects a config dataclass, got {type(config).__name__}")
    return _plain(config)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            if f.name == "path" and isinstance(value, StudyConfig):
                continue
            item = _plain(getattr(value, f.name))
            if f.name not in keys(type(value)) and isinstance(item, dict):
                out.update(item)  # a section held in one field ([protocol]): its keys, flat
            else:
                out[f.name] = item
        return out
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _parse(
    data: Mapping[str, Any], path: Path | None, source: str, overrides: Mapping[str, Any]
) -> StudyConfig:
    base_dir = Path(os.path.abspath(path.parent if path is not None else Path.cwd()))
    flat = dict(_flatten(overrides))
    ctx = Context(source, base_dir, frozenset(flat))
    if not isinstance(data, Mapping):
        ctx.fail("", f"expected a table of keys, got {type_name(data)}")
    data = _apply_overrides(data, flat, ctx)
    ctx.check_keys(data, keys(StudyConfig), "")

    # The name comes first: the default storage and artifacts are named after it.
    top = keys(StudyConfig)
    if "name" not in data:
        ctx.fail("name", 'is required: add name = "my-study" (letters, digits, "_", "." and "-")')
    name = value(*top["name"][:2], data["name"], "name", ctx)
    storage = data.get("storage", f"sqlite:///{base_dir / (name + '.db')}")
    storage = check_storage(value(*top["storage"][:2], storage, "storage", ctx), ctx)
    artifacts = data.get("artifacts", f"{name}.artifacts")
    artifacts = check_artifacts(artifacts, ctx) or value(*top["artifacts"][:2], artifacts, "artifacts", ctx)
    given = {"name": name, "storage": storage, "artifacts": artifacts,
             "path": Path(os.path.abspath(path)) if path is not None else None}
    return build(StudyConfig, data, "", ctx, SECTION_CHECKS, given)


def _table_valued() -> frozenset[str]:
    """Keys whose value is a table of their own (its keys may hold dots: module paths)."""
    return frozenset(f"{t}.{k}" for t, cls in tables(StudyConfig).items()
                     for k, (tp, _, _) in keys(cls).items() if typing.get_origin(tp) is dict)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    # {"hpo.space": {"lr": [..]}} and {"hpo.space.lr": [..]} set the same key.
    for key, item in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, Mapping) and item and full not in _table_valued():
            yield from _flatten(item, full)
        else:
            yield full, item


def _apply_overrides(data: Mapping[str, Any], flat: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    merged = _copy_tables(data)
    for key, item in flat.items():
        parts = key.split(".")
        if not all(parts):
            ctx.fail(key, "is not a dotted key such as activations.trials")
        table = merged
        for i, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                ctx.fail(".".join(parts[: i + 1]), f"is not a table, so {key} cannot be set")
        table[parts[-1]] = item
    return merged


def _copy_tables(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_tables(v) if isinstance(v, Mapping) else v for k, v in data.items()}
