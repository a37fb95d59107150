"""User code named in a config: import paths ``"package.module:callable"``, found and called.

A config names the user's model factory, data function or training loop by an import path. The
module is looked for in the config file's folder first, then on ``sys.path``, so a project's
``model.py`` beside its ``study.toml`` works without installing anything. Only paths that the
worker's own config (or the Python call) names are imported: a path read back from the storage is
compared with it, never imported (see :mod:`safs_optuna.pipeline.studies`).

Everything that can go wrong — no such module, no such attribute, the import itself raising —
is a :class:`SourceError` whose one-line message names the path and where it looked.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SourceError", "call_accepting", "is_import_path", "resolve"]

# "module.sub:attr.inner" — the form of setuptools entry points.
_IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:"
                          r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# Prefixes that name a registry of ours or a library's, not a module of the user's.
RESERVED_PREFIXES: tuple[str, ...] = ("torchvision", "timm", "idx", "folder")


class SourceError(ValueError):
    """A user source (model, data, training loop) that cannot be imported or does not fit."""


def is_import_path(name: str) -> bool:
    """Whether ``name`` reads as ``"module:callable"`` (and not ``"torchvision:…"`` and the like)."""
    return bool(_IMPORT_PATH.fullmatch(name)) and name.split(":", 1)[0] not in RESERVED_PREFIXES


def resolve(path: str, search_dir: str | os.PathLike[str] | None = None, what: str = "source") -> Any:
    """The object that ``"module:attr"`` names, importing the module if needed.

    Args:
        path: The import path, e.g. ``"my_project.models:make_net"``.
        search_dir: A folder searched before ``sys.path`` (the config file's folder); it stays on
            ``sys.path`` afterwards, as the module may import its siblings later.
        what: How messages name the source (``"[model] name"``).

    Raises:
        SourceError: Not an import path, module not found, import failed, or attribute missing.
    """
    if not _IMPORT_PATH.fullmatch(path):
        raise SourceError(f"{what} {path!r} is not an import path such as 'my_module:make_model'")
    module_name, attr = path.split(":", 1)
    looked = [str(search_dir)] if search_dir is not None else []
    if search_dir is not None:
        folder = os.path.abspath(search_dir)
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and module_name.split(".")[0] == exc.name.split(".")[0]:
            where = "; ".join(looked + ["sys.path"])
            raise SourceError(f"{what} {path!r}: no module {exc.name!r} (looked in {where})") from None
        raise SourceError(f"{what} {path!r}: importing {module_name!r} failed: {_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything on import
        raise SourceError(f"{what} {path!r}: importing {module_name!r} failed: {_line(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None)))
            hint = f"; callables there: {', '.join(names[:12])}" if names else ""
            raise SourceError(f"{what} {path!r}: {module_name!r} ({_file_of(module)}) has no attribute "
                              f"{part!r}{hint}")
        obj = getattr(obj, part)
    return obj


def call_accepting(fn: Callable[..., Any], offered: Mapping[str, Any], given: Mapping[str, Any],
                   what: str) -> Any:
    """Call ``fn`` with the ``offered`` keywords its signature accepts, plus all of ``given``.

    ``offered`` are what the pipeline knows (``num_classes``, ``in_channels``, ``image_size``);
    ``given`` are the user's own (``[model.kwargs]``), passed whether or not the signature
    names them, so that a typo fails loudly.

    Raises:
        SourceError: ``fn`` raised (its message in the line) or does not take ``given``.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: offer nothing
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items() if takes_any or k in params}
    kwargs.update(given)
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's factory may raise anything
        raise SourceError(f"{what}: calling {_name(fn)}({', '.join(kwargs)}) failed: {_line(exc)}") from None


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _file_of(module: Any) -> str:
    file = getattr(module, "__file__", None)
    return str(Path(file)) if file else "built in"


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
