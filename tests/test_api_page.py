"""The API reference page is generated from every public lib module's ``__all__``.

book/api.md has one ``automodule`` block per public module, with a bare
``:members:`` option, so autodoc documents exactly the names in that module's
``__all__`` (nothing listed by hand that can fall out of step). This test keeps
the page in step with lib's modules (in the layer order of lib/__init__.py) and
checks that every exported name will actually appear: autodoc leaves out a
member with no docstring, so each function and class needs one, and each
constant a ``#:`` comment or a docstring.
"""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
from sphinx.pycode import ModuleAnalyzer

ROOT = Path(__file__).resolve().parent.parent
API = (ROOT / "book" / "api.md").read_text()
ORDER = re.findall(r"^\* :mod:`lib\.([A-Za-z_]\w*)`", (ROOT / "lib" / "__init__.py").read_text(), re.M)
PUBLIC = [m for m in ORDER if not m.startswith("_")]
BLOCKS = re.findall(r"\.\. automodule:: lib\.([\w.]+)\n((?:   :[^\n]*\n)*)", API)


def test_one_block_per_public_module_in_the_layer_order():
    assert [m for m, _ in BLOCKS] == PUBLIC, (
        "book/api.md must have one automodule block per public module of lib/__init__.py's "
        "layer list, in that order")


@pytest.mark.parametrize("name,options", BLOCKS)
def test_each_block_documents_its_modules_all(name, options):
    assert options.strip() == ":members:", (
        f"lib.{name}: use a bare ':members:' (autodoc then follows __all__), got {options!r}")
    assert hasattr(importlib.import_module(f"lib.{name}"), "__all__"), f"lib.{name} has no __all__"


def _attr_docs(module) -> set[str]:
    """Names with a ``#:`` comment or an attribute docstring, in the module or where defined."""
    names: set[str] = set()
    for mod_name in {module.__name__} | {getattr(v, "__module__", "") for v in vars(module).values()
                                          if getattr(v, "__module__", "").startswith("lib")}:
        try:
            names |= {n for (ns, n) in ModuleAnalyzer.for_module(mod_name).find_attr_docs() if ns == ""}
        except Exception:  # noqa: BLE001 - a module that cannot be analysed has no attr docs
            pass
    return names


@pytest.mark.parametrize("name", PUBLIC)
def test_every_exported_name_has_the_docstring_autodoc_needs(name):
    module = importlib.import_module(f"lib.{name}")
    attr_docs = _attr_docs(module)
    # Sub-packages may re-export constants documented in the submodule that defines them.
    subs = [v for v in vars(module).values()
            if inspect.ismodule(v) and v.__name__.startswith(module.__name__)]
    for sub in subs:
        attr_docs |= _attr_docs(sub)
    undocumented = []
    for member in module.__all__:
        obj = getattr(module, member)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            if not inspect.getdoc(obj):
                undocumented.append(member)
        elif inspect.ismodule(obj):
            if not obj.__doc__:
                undocumented.append(member)
        elif member not in attr_docs:
            undocumented.append(member)
    assert not undocumented, (f"lib.{name} exports {undocumented} without a docstring (or a '#:' "
                              f"comment for a constant), so the API page would leave them out")
