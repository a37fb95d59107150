"""The config reference, generated from the schema: every table and key with its type, default,
range or choices and one line of meaning.

Write it with ``python -m safs_optuna.config > config.md``; the documentation builds it with
:func:`reference_markdown`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

from .errors import show
from .spec import Spec
from .walker import describe, interval, keys, tables

__all__ = ["reference_markdown"]


def reference_markdown(root: type | None = None) -> str:
    """The reference of every key under ``root`` (the study config) as CommonMark/MyST markdown.

    One section per TOML table (the top-level keys first), one table row per key.
    """
    from .schema import StudyConfig

    root = root or StudyConfig
    lines = ["# Config reference", "",
             "Every key of a study config, generated from the schema. A key left out takes its "
             "default; ranges include an end written `[` or `]` and exclude one written `(` or `)`.",
             ""]
    for title, cls in [("Top level", root), *((f"[{t}]", c) for t, c in tables(root).items())]:
        lines += [f"## {title}", ""]
        if cls is not root and cls.__doc__:
            lines += [_intro(cls.__doc__), ""]
        lines += ["| key | type | default | valid | meaning |", "|---|---|---|---|---|"]
        for name, (tp, spec, default) in keys(cls).items():
            if dataclasses.is_dataclass(tp) and spec.keys is None:
                continue  # a table of its own, listed under its heading
            cells = (f"`{name}`", _type(tp, spec), _default(spec, default), _valid(tp, spec), _text(spec.doc))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _intro(doc: str) -> str:
    """A section docstring's first paragraph as markdown, without its ``[table]:`` label."""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    text = re.sub(r"^``\[[a-z.]+\]``: ", "", text)
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"``\1``", text)  # Sphinx roles as plain code
    return text[:1].upper() + text[1:]


def _text(text: str) -> str:
    """Plain text for a markdown table cell: ``<`` would open raw HTML and ``|`` a new cell."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("<", "\\<").replace("|", "\\|") for i, p in enumerate(parts))


def _type(tp: Any, spec: Spec) -> str:
    options = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        options = [tp]
    words = [" or ".join(f'"{w}"' for w in spec.words)] if spec.words else []
    names = [describe(a).removeprefix("an ").removeprefix("a ") for a in options if a is not str or not words]
    return _text(" or ".join(names + words))


def _default(spec: Spec, default: Any) -> str:
    if spec.computed:
        return f"`{spec.computed}`"
    if default is dataclasses.MISSING:
        return "required"
    if default is None:
        return "unset"
    return f"`{show(default)}`"


def _valid(tp: Any, spec: Spec) -> str:
    parts = []
    if spec.range is not None:
        is_float = float in (tp, *getattr(tp, "__args__", ()))
        parts.append(f"`{interval(spec, is_float or bool(spec.pair))}`")
    if spec.pair:
        parts.append("low < high" + (", low > 0 (log scale)" if spec.pair == "log" else ""))
    if spec.choices is not None:
        shown = ", ".join(f"`{c}`" for c in spec.choices.shown())
        parts.append(("each of " if spec.distinct else "") + shown)
    if spec.pattern is not None:
        parts.append(_text(spec.pattern.valid))
    if spec.path:
        parts.append("a path (relative to the config's folder)" if spec.path == "any"
                     else "an existing file (relative to the config's folder)")
    if spec.note:
        parts.append(_text(spec.note))
    return "; ".join(parts) or "—"


def main() -> None:
    """Print the reference (``python -m safs_optuna.config``)."""
    print(reference_markdown(), end="")
