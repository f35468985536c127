"""_ext/lean_env.py: registry nodes are detached from their doctree, nothing else changes."""
from __future__ import annotations

import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

from docutils import nodes
from docutils.frontend import get_default_settings
from docutils.parsers.rst import Parser
from docutils.utils import new_document

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_ext"))
import lean_env  # noqa: E402


def _document(paragraphs: int = 400) -> nodes.document:
    doc = new_document("page", get_default_settings(Parser))
    for i in range(paragraphs):
        doc += nodes.paragraph(text=f"paragraph {i} " * 10)
    return doc


def _exercise(doc: nodes.document) -> nodes.Element:
    node = nodes.admonition(ids=["ex-1"], label="ex-1")
    node += nodes.title(text="Exercise 1")
    node += nodes.paragraph(text="Measure it.")
    doc += node
    node.document = doc
    return node


def test_detached_copy_keeps_content_but_not_the_document():
    doc = _document()
    live = _exercise(doc)
    copy = lean_env.detached(live.deepcopy())
    assert copy.parent is None and all(n.document is None for n in copy.findall())
    assert copy.astext() == live.astext() and copy["label"] == "ex-1"
    assert type(copy.children[0]) is nodes.title
    assert len(pickle.dumps(copy)) * 20 < len(pickle.dumps(live.deepcopy()))


def test_only_this_pages_entries_are_replaced():
    doc, other_doc = _document(10), _document(10)
    mine, theirs = _exercise(doc), _exercise(other_doc)
    registry = {"ex-1": {"docname": "page", "node": mine},
                "ex-2": {"docname": "other", "node": theirs},
                "odd": {"docname": "page"}}
    app = SimpleNamespace(env=SimpleNamespace(docname="page", sphinx_exercise_registry=registry))
    lean_env._detach_registry(app, doc)
    assert registry["ex-1"]["node"] is not mine and registry["ex-1"]["node"].document is None
    assert registry["ex-2"]["node"] is theirs and registry["odd"] == {"docname": "page"}
    assert mine.parent is doc  # the page's own doctree is untouched
