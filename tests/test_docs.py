"""The documentation site builds with warnings as errors, and what it must hold is in it.

The site is built once per session with the README's own command (into a temporary folder);
then: every section of the README as it was before the site existed is a heading of the site,
every internal link and image resolves (file and anchor), the figures are there, the generated
references follow the code (a flag added to the parser appears in the CLI reference), and the
generated pages are not committed.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import re
import shlex
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# The section titles of the README before the documentation site existed, when everything was
# in it; each must still be somewhere in the site.
OLD_README_SECTIONS = [
    "safs-optuna",
    "Quick start",
    "Does the search find something, on more than the quick-start data?",
    "Stage 2 at the fine-tune's fidelity, and does LAHC earn its place?",
    "Which allocation, and does SAFS still pay on top of it?",
    "Your own network, data, pruned weights and loop",
    "The command line",
    "Studies and stages",
    "How candidates are compared, and when a search found nothing",
    "Parallel workers, the dashboard, resume",
    "Speed",
    "Scale out on PostgreSQL",
    "Inside your own Optuna study",
    "From OptunaHub",
    "Presets of the activation space",
    "Layout",
]


def _generate_module():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Page(HTMLParser):
    """The ids, links, images and headings of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attrs_ = dict(attrs)
        if attrs_.get("id"):
            self.ids.add(attrs_["id"])
        if tag == "a" and attrs_.get("href"):
            self.links.append(attrs_["href"])
        if tag in ("img", "script") and attrs_.get("src"):
            (self.images if tag == "img" else self.links).append(attrs_["src"])
        if tag == "link" and attrs_.get("href"):
            self.links.append(attrs_["href"])
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            text = "".join(self._heading).replace("¶", "").replace("\u2019", "'")  # Sphinx's smart quotes
            self.headings.append(" ".join(text.split()))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Builds the site with the README's command, into a temporary folder; returns the html folder."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "sphinx-build" in line)
    args = shlex.split(line.split("&&")[-1])
    assert args[0] == "sphinx-build" and "-W" in args and args[-2:] == ["docs", "docs/_build/html"], args
    out = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "sphinx", *args[1:-1], str(out / "html"), "-d", str(out / "doctrees"), "-q"]
    start = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(f"docs build: {time.monotonic() - start:.1f} s")
    assert proc.returncode == 0, proc.stderr[-5000:]
    return out / "html"


def test_old_readme_sections_are_in_the_site(site):
    headings = {heading for page in site.rglob("*.html") for heading in _parse(page).headings}
    missing = [title for title in OLD_README_SECTIONS if title not in headings]
    assert not missing, missing


def test_internal_links_and_images_resolve(site):
    pages = {path: _parse(path) for path in site.rglob("*.html")}
    broken = []
    for path, page in pages.items():
        for target in page.links + page.images:
            parts = urlsplit(target)
            if parts.scheme or parts.netloc:
                continue  # external: not checked (no internet here)
            file = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if not file.exists():
                broken.append(f"{path.relative_to(site)}: {target} (no file)")
            elif parts.fragment and file.suffix == ".html":
                ids = pages[file].ids if file in pages else _parse(file).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(site)}: {target} (no anchor)")
    assert not broken, broken


def test_results_pages_show_every_plot(site):
    shown = {Path(src).name for page in site.rglob("*.html") for src in _parse(page).images}
    plots = {path.name for path in (ROOT / "benchmarks" / "results").glob("*.svg")}
    assert plots <= shown, plots - shown
    results = {Path(src).name for src in _parse(site / "results.html").images}
    assert {"samplers_quickstart.svg", "samplers_fashion_mnist.svg", "sparsity_sweep_quickstart.svg",
            "sparsity_sweep_fashion_mnist.svg"} <= results
    assert "sparsity_gain.svg" in {Path(src).name for src in _parse(site / "index.html").images}


def test_cli_reference_lists_every_subcommand_and_flag(site):
    from safs_optuna.cli import build_parser

    text = html.unescape((site / "cli.html").read_text())
    parser = build_parser()
    generate = _generate_module()
    for name, sub in generate._subcommands(parser).items():
        assert f"safs-optuna {name}" in text, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue  # every command takes --help; the reference does not list it
            for option in action.option_strings:
                assert option in text, (name, option)


def test_a_new_cli_flag_appears_in_the_cli_reference(monkeypatch):
    from safs_optuna import cli

    build = cli.build_parser

    def with_fake_flag() -> argparse.ArgumentParser:
        parser = build()
        generate._subcommands(parser)["run"].add_argument("--fake-docs-flag", help="a flag only this test adds")
        return parser

    generate = _generate_module()
    monkeypatch.setattr(cli, "build_parser", with_fake_flag)
    text = generate.cli_markdown()
    assert "`--fake-docs-flag`" in text and "a flag only this test adds" in text
    assert "--fake-docs-flag" not in generate.cli_markdown(build())


def test_configuration_reference_comes_from_the_config_package(monkeypatch):
    import safs_optuna.config as config

    generate = _generate_module()
    monkeypatch.setattr(config, "reference_markdown", lambda: "# Configuration reference\n\nfake-key\n",
                        raising=False)
    assert "fake-key" in generate.configuration_markdown()


def test_api_reference_documents_every_public_name(site):
    import safs_optuna

    text = html.unescape((site / "api.html").read_text())
    for name in safs_optuna.__all__:
        assert f"so.{name}" in text, name
    # each entry carries its docstring: autodoc resolved the lazily exported names
    assert text.count('class="sig sig-object py"') >= len(safs_optuna.__all__) - 1


def test_generated_pages_are_not_committed():
    generated = ["docs/cli.md", "docs/configuration.md", "docs/api.md", "docs/benchmark_results/index.md",
                 "docs/_build/html/index.html"]
    proc = subprocess.run(["git", "check-ignore", *generated], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.split() == generated, proc.stdout


def test_readme_figure_is_what_its_script_draws(tmp_path):
    out = tmp_path / "gain.svg"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sparsity_gain_plot.py"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_text() == (ROOT / "benchmarks" / "results" / "sparsity_gain.svg").read_text()


@pytest.mark.slow
def test_index_and_results_render_in_chromium(site, tmp_path):
    """docs/screenshot.py: the pages open in headless Chromium from the file system, with their figures."""
    import shutil

    if not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    proc = subprocess.run([sys.executable, str(DOCS / "screenshot.py"), "--site", str(site), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout, proc.stderr[-2000:])
    assert "index.html" in proc.stdout and "results.html" in proc.stdout
    assert (tmp_path / "index.png").stat().st_size > 10_000 and (tmp_path / "results.png").stat().st_size > 10_000
