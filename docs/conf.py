"""Sphinx configuration for pyro_flows (builds offline: no intersphinx, no remote themes)."""

from __future__ import annotations

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

project = "pyro_flows"
author = "pyro_flows contributors"
copyright = "pyro_flows contributors"  # noqa: A001 - Sphinx's name

try:
    from pyro_flows import __version__ as release
except Exception:  # noqa: BLE001 - the docs still build the prose pages
    release = "0.1.0"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "gallery",  # docs/_ext/gallery.py: runs examples/ (quick modes) into docs/gallery/
]

# -- examples gallery ------------------------------------------------------------------------
# The repository whose examples/ the gallery runs (default: the one holding this docs folder;
# ``-D gallery_root=...`` when building a copy of docs/ elsewhere).
gallery_root = ""

# -- autodoc ---------------------------------------------------------------------------------
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autoclass_content = "class"
autodoc_inherit_docstrings = False
autodoc_preserve_defaults = True
python_use_unqualified_type_names = True

# Unresolved cross-references (torch, pyro types) are not errors: there is no intersphinx,
# because it would need the network at build time.
nitpicky = False

# -- general ---------------------------------------------------------------------------------
templates_path: list[str] = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
pygments_style = "sphinx"
highlight_language = "python3"

# -- HTML ------------------------------------------------------------------------------------
html_theme = "alabaster"
html_theme_options = {
    "description": "Normalizing flows for Pyro: correct in both directions, fast where it matters.",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_static_path: list[str] = []
html_title = f"pyro_flows {release}"


# -- cross-references to re-exported names ---------------------------------------------------
# Docstrings refer to public names such as ``pyro_flows.transforms.Reverse`` or
# ``pyro_flows.nn.MLP``, while the API pages document each class in its family module
# (``pyro_flows.transforms.permutation.Reverse``). Resolve such references to the documented
# (defining) location instead of leaving them as plain text.


def _canonical_name(target: str) -> str | None:
    """``pkg.Name[.member]`` -> ``defining_module.Name[.member]``, or ``None``."""
    import importlib

    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:split]))
        except Exception:  # noqa: BLE001 - not a module prefix
            continue
        obj = getattr(module, parts[split], None)
        if getattr(obj, "__module__", None) is None or getattr(obj, "__qualname__", None) is None:
            return None
        return ".".join([f"{obj.__module__}.{obj.__qualname__}", *parts[split + 1 :]])
    return None


def _resolve_alias(app, env, node, contnode):  # type: ignore[no-untyped-def]
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target:
        return None
    candidates = [target]
    module = node.get("py:module")
    if module and not target.startswith("pyro_flows"):
        candidates.append(f"{module}.{target}")
    if not target.startswith("pyro_flows"):
        candidates.append(f"pyro_flows.{target}")
    domain = env.get_domain("py")
    names: list[str] = []
    for candidate in candidates:
        if candidate.startswith("pyro_flows"):
            names += [candidate, _canonical_name(candidate) or candidate]
    for name in dict.fromkeys(names):
        if name == target:
            continue
        new = node.deepcopy()
        new["reftarget"] = name
        resolved = domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], name, new, contnode
        )
        if resolved is not None:
            return resolved
    return None


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("missing-reference", _resolve_alias)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
