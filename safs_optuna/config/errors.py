"""ConfigError, and how values are written in its messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "show", "type_name"]


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
    from .schema import StudyConfig  # the schema knows which keys are tables
    from .walker import tables

    if not key:
        return ""
    if key in tables(StudyConfig):
        return f"[{key}]"
    if "." in key:
        section, name = key.rsplit(".", 1)
        return f"[{section}] {name}"
    return key


def type_name(value: Any) -> str:
    """The TOML name of a value's type, for "got 5 (integer)"."""
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


def show(value: Any) -> str:
    """A value as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def number(value: float) -> str:
    """A bound as messages and the reference write it: 100 000 (a typo's extra digits stand out)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 2**20 and value & (value - 1) == 0:  # a power of two reads as one: 2**32
            return f"2**{value.bit_length() - 1}"
        return f"{value:,}".replace(",", " ") if value >= 10_000 else str(value)
    return repr(value)
