"""Sphinx configuration of the safs-optuna documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (``pip install -e ".[docs]"``),
then open ``docs/_build/html/index.html``. The CLI, configuration and API references and the
pages of ``benchmarks/results/`` are generated at the start of every build (``generate.py``).
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS)]

import generate  # noqa: E402
import safs_optuna  # noqa: E402

generate.write_all(DOCS)

project = "safs-optuna"
author = "The safs-optuna authors"
copyright = "the safs-optuna authors, MIT License"
release = version = safs_optuna.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
# The result files are the benchmarks' own output: their headings start at any level.
suppress_warnings = ["myst.header"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"undoc-members": False, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = f"safs-optuna {release}"
html_theme_options = {
    "description": "Activation functions and fine-tuning hyperparameters for sparse networks, as an Optuna plugin",
    "fixed_sidebar": True,
    "page_width": "1180px",
    "sidebar_width": "230px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
html_static_path = []
html_copy_source = False
