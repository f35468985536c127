"""lib's structure: the layer order stated in lib/__init__.py holds, and __all__ is complete.

lib/__init__.py lists the modules lowest first; a module may import only
modules above it in that list. The imports are read with ``ast`` (no module is
imported), including imports inside functions: a lazy import that points
upwards still inverts the layering, it only hides the cycle until run time.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parent.parent / "lib"
DOC = ast.get_docstring(ast.parse((LIB / "__init__.py").read_text()))
#: lib's modules, lowest first, as lib/__init__.py's docstring lists them.
ORDER = re.findall(r"^\* :mod:`lib\.([A-Za-z_][\w]*)`", DOC or "", re.M)
#: Largest module (lines) the conventions allow; over it a module has several jobs.
MAX_LINES = 400


def _top_module(path: Path) -> str:
    """``lib/probes/stats.py`` -> ``probes``; ``lib/init.py`` -> ``init``."""
    rel = path.relative_to(LIB)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _sources() -> list[Path]:
    return sorted(p for p in LIB.rglob("*.py") if p.name != "__init__.py" or p.parent != LIB)


def _lib_imports(path: Path) -> set[str]:
    """The top-level lib modules that ``path`` imports (absolute or relative)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = list(path.relative_to(LIB.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package[:-1]  # the package a plain module sits in
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "lib" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                parts = base + (node.module.split(".") if node.module else [])
            else:
                parts = (node.module or "").split(".")
            if parts[0] != "lib":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from lib import a, b
                found.update(alias.name for alias in node.names)
    return found


def test_the_docstring_lists_the_modules():
    assert len(ORDER) >= 10 and len(set(ORDER)) == len(ORDER), ORDER
    assert ORDER[0] == "_checks", "the shared checks sit below everything"


def test_every_module_is_placed_in_the_layer_order():
    present = {_top_module(p) for p in _sources()}
    missing = present - set(ORDER)
    assert not missing, (f"lib modules {sorted(missing)} are not in lib/__init__.py's layer "
                         f"list: add each where it belongs (above everything it imports)")


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(LIB)))
def test_no_module_imports_upwards(path):
    me = _top_module(path)
    if me not in ORDER:
        pytest.skip(f"{me} is not placed yet (see the test above)")
    upward = sorted(m for m in _lib_imports(path) - {me}
                    if m in ORDER and ORDER.index(m) > ORDER.index(me))
    assert not upward, (f"lib.{me} ({path.relative_to(LIB)}) imports {upward}, which "
                        f"lib/__init__.py lists above... below it: the order is {ORDER}")


def test_the_ast_reader_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "lib" / "pkg"
    pkg.mkdir(parents=True)
    src = pkg / "mod.py"
    src.write_text("import lib.seeds\nfrom lib import data, init as i\nfrom lib.plots import x\n"
                   "from . import sibling\nfrom .. import stats\n"
                   "def f():\n    from lib import training\n")
    global LIB
    saved, LIB = LIB, tmp_path / "lib"
    try:
        assert _lib_imports(src) == {"seeds", "data", "init", "plots", "pkg", "stats",
                                     "training"}
    finally:
        LIB = saved


def _public_modules() -> list[str]:
    names = []
    for p in _sources():
        rel = p.relative_to(LIB).with_suffix("")
        parts = [s for s in rel.parts if s != "__init__"]
        if any(s.startswith("_") for s in parts) or parts[-1] == "__main__":
            continue
        names.append("lib." + ".".join(parts))
    return sorted(set(names))


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_name_is_in_all(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names {missing}, which {name} does not define"
    path = Path(module.__file__)
    tree = ast.parse(path.read_text())
    defined = {node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               and not node.name.startswith("_")}
    left_out = sorted(defined - set(module.__all__))
    assert not left_out, f"{name} defines public {left_out} but leaves them out of __all__"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(LIB)))
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES * 1.25, (f"{path.relative_to(LIB)} has {lines} lines; split it "
                                       f"(the convention is < ~{MAX_LINES})")
