"""Keep sphinx-exercise's registry from carrying whole doctrees in the environment.

sphinx-exercise records every exercise and solution in
``env.sphinx_exercise_registry`` together with its docutils node. The node
keeps a reference to its document (a solution's node is even the live node,
parent chain and all), so pickling the environment pickles the full doctree
of every page with an exercise: 2.3 of the environment's 3.1 MB here. With
parallel reading, each worker sends the whole environment back to the main
process after every page and the main process unpickles it, one page at a
time (about 1.4 s per 3 MB on this machine), so the bloat sat on the
build's serial path 16 times over.

After a page is read, this extension replaces that page's registry nodes
with detached copies: same class, attributes and children, no document or
parent. sphinx-exercise only reads those nodes' attributes and children
(titles and numbers for references and solution headings), so the built
HTML is byte-for-byte the same (checked by diffing two builds).
"""
from __future__ import annotations

from typing import Any

from docutils import nodes


def detached(node: nodes.Node) -> nodes.Node:
    """A deep copy of ``node`` that references neither its document nor a parent."""
    copy = node.deepcopy()
    for n in copy.findall():
        n._document = None  # noqa: SLF001 - docutils has no public way to unset it
    copy.parent = None
    return copy


def _detach_registry(app: Any, doctree: nodes.document) -> None:
    env = app.env
    registry = getattr(env, "sphinx_exercise_registry", None)
    if not registry:
        return
    for entry in registry.values():
        node = entry.get("node")
        if entry.get("docname") == env.docname and isinstance(node, nodes.Node):
            entry["node"] = detached(node)


def setup(app: Any) -> dict:
    # after sphinx-exercise's own handlers (default priority 500)
    app.connect("doctree-read", _detach_registry, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
