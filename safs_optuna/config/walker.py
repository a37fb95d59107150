"""The one walker: a TOML table into a schema dataclass, every key's :class:`~.spec.Spec` enforced.

Unknown keys fail first (with the closest valid key), then each key in field order: its type
(integers pass as numbers; arrays become tuples), then its pattern, choices, range, words and
``[low, high]`` rules. Checks that involve several keys run afterwards, in
:mod:`~safs_optuna.config.checks`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from .errors import ConfigError, number, show, type_name
from .spec import Choices, Spec, spec_of

__all__ = ["Context", "build", "describe", "hints", "keys", "tables", "value"]


class Context:
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

    def choice(self, key: str, value: Any, choices: Choices, note: str = "") -> None:
        """Fail unless ``value`` is one of ``choices`` (the message lists them, forms included)."""
        valid = choices.valid()
        if value in valid and type(value) in (type(v) for v in valid):
            return
        close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        note = f" ({note})" if note else ""
        self.fail(key, f"unknown {choices.what} {value!r}{hint}; valid: {', '.join(choices.shown())}{note}")


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a schema dataclass."""
    return typing.get_type_hints(cls)


def keys(cls: type) -> dict[str, tuple[Any, Spec, Any]]:
    """The config keys of ``cls``: name -> (type, spec, default), in file order.

    A field whose spec has ``keys`` contributes its own dataclass's fields instead.
    """
    found: dict[str, tuple[Any, Spec, Any]] = {}
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if spec is None:
            continue
        if spec.keys is not None:
            inner = hints(hints(cls)[f.name])
            for g in dataclasses.fields(hints(cls)[f.name]):
                found[g.name] = (inner[g.name], spec.keys[g.name], _default(g))
        else:
            found[f.name] = (hints(cls)[f.name], spec, _default(f))
    return found


def tables(cls: type, prefix: str = "") -> dict[str, type]:
    """The TOML tables under ``cls`` by dotted name (``"hpo.space"``), in file order."""
    found: dict[str, type] = {}
    for name, (tp, spec, _) in keys(cls).items():
        if dataclasses.is_dataclass(tp) and spec.keys is None:
            full = f"{prefix}.{name}" if prefix else name
            found[full] = tp
            found.update(tables(tp, full))
    return found


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def build(cls: type, table: Any, prefix: str, ctx: Context,
          checks: Mapping[type, Callable[[Any, Context, str], Any]],
          given: Mapping[str, Any] | None = None) -> Any:
    """``cls`` from a TOML table: unknown keys and wrong values fail, then ``checks[cls]`` runs.

    ``given`` are values the caller has already read (not walked); nested tables are built
    recursively; a check returns the object (with paths resolved, say) or fails.
    """
    if not isinstance(table, Mapping):
        ctx.fail(prefix, f"expected a table [{prefix}], got {show(table)} ({type_name(table)})")
    given = given or {}
    valid = keys(cls)
    ctx.check_keys(table, valid, prefix)
    values: dict[str, Any] = {}
    for name, (tp, spec, _) in valid.items():
        if name in table and name not in given:
            full = f"{prefix}.{name}" if prefix else name
            if dataclasses.is_dataclass(tp):
                values[name] = build(tp, table[name], full, ctx, checks)
            else:
                values[name] = value(tp, spec, table[name], full, ctx)
    obj = _construct(cls, {**values, **given}, prefix, ctx)
    check = checks.get(cls)
    return check(obj, ctx, prefix) if check is not None else obj


def _construct(cls: type, values: dict[str, Any], prefix: str, ctx: Context) -> Any:
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if spec is not None and spec.keys is not None:  # a section held in one field
            inner = {k: values.pop(k) for k in list(values) if k in spec.keys}
            try:  # whatever else the field's class demands (e.g. of combinations) is a config error too
                values[f.name] = hints(cls)[f.name](**inner)
            except (TypeError, ValueError) as exc:
                ctx.fail(prefix, str(exc))
    return cls(**values)


def value(tp: Any, spec: Spec, raw: Any, key: str, ctx: Context) -> Any:
    """One key's value: converted to ``tp`` and checked against ``spec``."""
    converted = convert(tp, raw, key, ctx)
    if converted is None:
        return None
    if isinstance(converted, str) and spec.words and tp is not str:
        if converted not in spec.words:
            low, high = spec.range or (1, math.inf)
            words = " or ".join(f'"{w}"' for w in spec.words)
            ctx.fail(key, f"expected an integer in [{number(low)}, {number(high)}] or {words}, "
                          f"got {show(converted)}")
        return converted
    if spec.pattern is not None and not re.fullmatch(spec.pattern.regex, converted):
        ctx.fail(key, spec.pattern.problem.format(value=converted))
    if spec.pair:
        _pair(spec, converted, key, ctx)
        return converted
    # The rules hold for a number, or for each item of an array or value of a table.
    items = tuple(converted.values()) if isinstance(converted, dict) else (
        converted if isinstance(converted, tuple) else (converted,))
    if spec.distinct and not items:
        what = spec.choices.what if spec.choices else "value"
        ctx.fail(key, f"needs at least one {what}, got []")
    for i, item in enumerate(items):
        if spec.choices is not None and not spec.choices.forms:  # other forms: checks.py
            ctx.choice(key, item, spec.choices, spec.note)
        if spec.range is not None:
            label = f"{list(converted)[i]!r}: " if isinstance(converted, dict) else ""
            _in_range(spec, item, key, ctx, label)
        if spec.distinct and item in items[:i]:
            ctx.fail(key, f"{show(item)} is listed twice in {show(converted)}")
    if spec.path and not isinstance(converted, dict):
        converted = ctx.resolve(converted)
        if spec.path == "file" and not os.path.isfile(converted):
            ctx.fail(key, f"no file {converted}")
    return converted


def interval(spec: Spec, is_float: bool) -> str:
    """``spec.range`` written with its brackets, e.g. ``(0.0, 1.0]``."""
    assert spec.range is not None
    low, high = (float(b) if is_float else b for b in spec.range)
    return f"{spec.closed[0]}{number(low)}, {number(high)}{spec.closed[1]}"


def _in_range(spec: Spec, item: float, key: str, ctx: Context, label: str = "") -> None:
    low, high = spec.range  # type: ignore[misc]
    above = item >= low if spec.closed[0] == "[" else item > low
    below = item <= high if spec.closed[1] == "]" else item < high
    if not (above and below):
        note = f" ({spec.note})" if spec.note else ""
        ctx.fail(key, f"{label}must be in {interval(spec, isinstance(item, float))}, got {show(item)}{note}")


def _pair(spec: Spec, pair: tuple[float, float], key: str, ctx: Context) -> None:
    low, high = pair
    if not low < high:
        ctx.fail(key, f"expected [low, high] with low < high, got {show(pair)}")
    if spec.pair == "log" and low <= 0:
        ctx.fail(key, f"is searched on a log scale, so low must be > 0, got {show(pair)}")
    if spec.range is not None:
        lo, hi = spec.range
        if not (lo <= low and (high <= hi if spec.closed[1] == "]" else high < hi)):
            ctx.fail(key, f"must lie in {interval(spec, True)}, got {show(pair)}")


# --- types ----------------------------------------------------------------------------------


def convert(tp: Any, value: Any, key: str, ctx: Context) -> Any:
    """``value`` as type ``tp`` (ints pass as floats; arrays become tuples), else fail."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # "X | None": None means not set; "int | str"
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        converted = next((c for c in (_as(t, value) for t in options) if c is not _BAD), _BAD)
        if converted is _BAD:
            ctx.fail(key, f"expected {' or '.join(describe(t) for t in options)}, got {show(value)} "
                          f"({type_name(value)})")
        return converted
    converted = _as(tp, value)
    if converted is _BAD:
        ctx.fail(key, f"expected {describe(tp)}, got {show(value)} ({type_name(value)})")
    if converted is _NOT_FINITE:
        ctx.fail(key, f"expected a finite number, got {show(value)}")
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
        return _worst(items.values(), items)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _BAD
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            return _BAD
        items = [_as(t, v) for t, v in zip(item_types, value)]
        return _worst(items, tuple(items))
    raise TypeError(f"config fields of type {tp!r} are not supported")  # a bug in the schema


def _worst(items: Iterable[Any], whole: Any) -> Any:
    items = list(items)
    if _NOT_FINITE in items:
        return _NOT_FINITE
    return _BAD if any(item is _BAD for item in items) else whole


def describe(tp: Any) -> str:
    """A type in words: "an integer", "an array of strings"."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    plurals = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    if tp in names:
        return names[tp]
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args if a is not type(None))
    if typing.get_origin(tp) is dict:
        if args[1] is Any:
            return "a table such as { width = 16 }"
        return f"a table of {plurals[args[1]]} such as {{ conv1 = 0.3 }}"
    if args[-1] is Ellipsis:
        return f"an array of {plurals[args[0]]}"
    return f"an array of {len(args)} {plurals[args[0]]} [low, high]"
