"""The pages of the documentation that are generated, not written: written by ``conf.py`` at the
start of every build, and never committed (see ``docs/.gitignore``).

- ``cli.md``: the command-line reference, from the argument parser of ``safs_optuna.cli``;
- ``configuration.md``: the configuration reference, from the config schema;
- ``api.md``: the API reference, one autodoc entry per name of ``safs_optuna.__all__``;
- ``benchmark_results/``: every file of ``benchmarks/results/`` as a page, with its plots.

Each ``*_markdown`` function returns the page's text, so that tests can call it directly.
"""

from __future__ import annotations

import argparse
import inspect
import shutil
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_PAGES = "benchmark_results"
GENERATED = ("cli.md", "configuration.md", "api.md", RESULTS_PAGES)


# ---------------------------------------------------------------------------- command line
def _cell(text: object) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _arguments_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | value | default | meaning |", "|---|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"`{name}`" for name in action.option_strings) or f"`{action.dest}`"
        if action.nargs == 0:
            value = ""
        else:
            metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
            kind = getattr(action.type, "__name__", "") if action.type else ""
            value = f"`{metavar}`" + (f" ({kind})" if kind and kind != "str" else "")
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else f"`{default}`"
        repeat = (" Repeatable." if isinstance(action, argparse._AppendAction)
                  and "repeatable" not in (action.help or "").lower() else "")
        rows.append(f"| {names} | {_cell(value)} | {_cell(shown)} | {_cell(action.help or '')}{repeat} |")
    return rows


def cli_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The command-line reference: every subcommand of ``safs-optuna``, its usage and arguments."""
    if parser is None:
        from safs_optuna import cli

        parser = cli.build_parser()
    lines = [
        "# Command-line reference",
        "",
        "Generated from the argument parser of `safs_optuna/cli.py` when the documentation is built.",
        "",
        f"{parser.description}",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        *_arguments_table(parser),
        "",
    ]
    helps = _help_of(parser)
    for name, sub in _subcommands(parser).items():
        lines += [
            f"## `{parser.prog} {name}`",
            "",
            helps.get(name, "").rstrip(".").capitalize() + "." if helps.get(name) else "",
            "",
            sub.description or "",
            "",
            "```text",
            sub.format_usage().strip(),
            "```",
            "",
            *_arguments_table(sub),
            "",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- configuration
def configuration_markdown() -> str:
    """The configuration reference, from the schema of ``safs_optuna.config``."""
    import safs_optuna.config as config

    return config.reference_markdown()


# ---------------------------------------------------------------------------- API
def api_markdown() -> str:
    """The API reference: each public name of ``safs_optuna``, documented where it is defined."""
    import safs_optuna

    lines = [
        "# API reference",
        "",
        "The public names of `safs_optuna` (`import safs_optuna as so`), in the order of "
        "`safs_optuna.__all__`. Each is loaded on first use, so `import safs_optuna` stays fast "
        "and the samplers and pruners import without torch.",
        "",
    ]
    for name in safs_optuna.__all__:
        value = getattr(safs_optuna, name)
        lines += [f"## `so.{name}`", ""]
        if inspect.ismodule(value):
            lines += ["```{eval-rst}", f".. automodule:: {value.__name__}", "   :members:",
                      "   :no-index:", "```", ""]
            continue
        if inspect.isclass(value):
            directive = "autoclass"
        elif callable(value):
            directive = "autofunction"
        else:
            directive = "autodata"
        options = ["   :members:"] if directive == "autoclass" else []
        target = f"safs_optuna.{name}"
        if directive == "autodata":  # its docstring is in the source of the module that defines it
            options = ["   :no-value:"]
            target = f"safs_optuna.{safs_optuna._EXPORTS[name]}.{name}"
        lines += ["```{eval-rst}", f".. {directive}:: {target}", *options, "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- results
def results_pages(target: Path) -> list[str]:
    """Copies every results file and plot of ``benchmarks/results/`` into ``target`` as pages;
    returns the page names."""
    target.mkdir(parents=True, exist_ok=True)
    pages, files = [], {"index.md"}
    for path in sorted(RESULTS.iterdir()):
        if path.suffix == ".svg":
            if not (target / path.name).exists() or (target / path.name).read_bytes() != path.read_bytes():
                shutil.copy2(path, target / path.name)
            files.add(path.name)
        elif path.suffix == ".md":
            _write(target / path.name, path.read_text())
            pages.append(path.stem)
        elif path.suffix == ".txt":
            title = path.stem.replace("_", " ")
            _write(target / f"{path.stem}.md",
                   f"# {title}\n\nThe file `benchmarks/results/{path.name}`:\n\n```text\n{path.read_text()}\n```\n")
            pages.append(path.stem)
        files.add(f"{path.stem}.md" if path.suffix == ".txt" else path.name)
    for stale in target.iterdir():  # a results file that was removed
        if stale.name not in files:
            stale.unlink()
    index = ["# Result files", "",
             "Every file of `benchmarks/results/`, as the benchmark that measured it wrote it. "
             "Each names the command that made it; [Results](../results.md) says what they show.", "",
             "```{toctree}", ":maxdepth: 1", "", *pages, "```", ""]
    _write(target / "index.md", "\n".join(index))
    return pages


def _write(path: Path, text: str) -> None:
    # Rewritten only when changed, so that Sphinx rebuilds only the pages that changed.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_all(docs: Path = DOCS) -> None:
    """Writes every generated page into ``docs``."""
    _write(docs / "cli.md", cli_markdown())
    _write(docs / "configuration.md", configuration_markdown())
    _write(docs / "api.md", api_markdown())
    results_pages(docs / RESULTS_PAGES)
