"""Sphinx configuration of the fastinfl site (build: see the README, "Documentation")."""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("FASTINFL_COMPILE_NOTICE", "0")  # no compile notice in the gallery's outputs

try:  # the installed package (`pip install '.[docs]'`), whose shipped kernels the gallery then loads
    import fastinfl
except ImportError:  # else the checkout's sources (kernels compile on first use)
    sys.path.insert(0, str(ROOT))
    import fastinfl

project = "fastinfl"
author = "the fastinfl authors"
copyright = "2026, the fastinfl authors"
release = version = fastinfl.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
# The validation scripts and the generated pages' sources are not pages of their own.
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.py", "auto_examples/*.ipynb",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.json"]

nitpicky = True
# Empty: every cross-reference resolves. Add only genuine gaps of third-party inventories, each with
# its reason (there is no intersphinx, so docstrings name other libraries' objects in ``literals``).
nitpick_ignore = []

# autodoc / autosummary: one page per public name.
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": False}
autodoc_typehints = "none"  # the types are in the numpydoc sections

# numpydoc: class pages list their members through the autosummary template, not numpydoc.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False  # types such as "array-like (n, d)" carry shapes: plain text

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# No intersphinx: the build runs offline (CI and this machine), so nothing links to other sites' inventories.

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "matplotlib_animations": False,
    "plot_gallery": "True",
    "abort_on_example_error": True,
    "reset_modules": ("matplotlib",),
}

html_theme = "pydata_sphinx_theme"
html_title = "fastinfl"
html_theme_options = {
    "github_url": None,
    "navbar_end": ["navbar-icon-links"],
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path = []
html_show_sourcelink = False
