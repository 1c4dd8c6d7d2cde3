"""Sphinx configuration for spanlane's documentation (MyST markdown, furo theme)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath("../src"))

from spanlane import __version__

project = "spanlane"
author = "spanlane developers"
copyright = "2026, spanlane developers"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

# Resolved offline: no inventories are fetched (the build must not need the network).
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
nitpicky = False
suppress_warnings = ["myst.xref_missing"]

html_theme = "furo"
html_title = f"spanlane {release}"
