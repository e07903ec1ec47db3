"""Sphinx configuration of the sknets documentation.

Build (from the repository root), warnings as errors:

    pip install -e ".[docs]" && python -m sphinx -W -b html docs docs/_build/html
"""

import os
import re
import sys
import warnings

import sknets

project = "sknets"
author = "The sknets developers"
copyright = "The sknets developers"  # noqa: A001
version = release = sknets.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "README.md", "_static/make_readme_plot.py"]
root_doc = "index"

# No network: no intersphinx. References to scikit-learn, numpy, torch and
# pandas objects are written as plain literals.
autosummary_generate = True
autodoc_default_options = {"member-order": "alphabetical"}
numpydoc_show_class_members = False  # autosummary lists the members
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
default_role = "literal"  # `x` renders as code, never a broken reference

html_theme = "pydata_sphinx_theme"
html_static_path = ["_static"]
html_title = f"sknets {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": False,
}
html_show_sourcelink = False

# The gallery runs every example on CPU; examples must not need a GPU.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.abspath(".."))

sphinx_gallery_conf = {
    "examples_dirs": ["../examples"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "plot_gallery": "True",
}

warnings.filterwarnings(
    "ignore",
    category=UserWarning,
    message="Matplotlib is currently using agg",
)

# Shared docstring fragments write array shapes such as ``(n_features_in_,)``
# and ``(filters[0], C, *kernel_size)`` bare in the type of an attribute;
# reStructuredText reads ``name_`` as a link target and ``*`` as emphasis.
# Escape both in the "name : type" lines before numpydoc renders them.
_TYPE_LINE = re.compile(r"^(\s*\w+ : )(.*)$")


def _escape_types(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        match = _TYPE_LINE.match(line)
        if match and "``" not in match.group(2):
            spec = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", match.group(2))
            lines[i] = match.group(1) + spec.replace("*", r"\*")


# Docstrings inherited from scikit-learn (score, set_output, the metadata
# routing setters, the searches' methods) point into scikit-learn's own site
# with :ref: and :term:. Without intersphinx those targets do not exist here:
# show their text as a literal instead.
_SKLEARN_ROLE = re.compile(r":(?:ref|term):`([^`<]*?)\s*(?:<([^>]*)>)?`")


def _literal_sklearn_roles(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        lines[i] = _SKLEARN_ROLE.sub(
            lambda m: f"``{(m.group(1) or m.group(2)).strip()}``", line
        )


def setup(app):
    app.connect("autodoc-process-docstring", _escape_types, priority=100)
    app.connect("autodoc-process-docstring", _literal_sklearn_roles, priority=100)
