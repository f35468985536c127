"""Every label (``(name)=`` targets and directives' ``:label:``) is defined once in the book.

Sphinx reports a duplicate only as a warning, and under a parallel build only
when the two pages happen to be merged in a particular order, so the strict
build fails on some runs and not others; this test fails every time.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

BOOK = Path(__file__).resolve().parent.parent / "book"
_LABEL = re.compile(r"^(?:\((?P<target>[^)\s]+)\)=|:label:\s*(?P<opt>\S+))\s*$", re.M)


def test_labels_are_unique_across_pages() -> None:
    where = defaultdict(list)
    for page in sorted(BOOK.glob("*.md")):
        for m in _LABEL.finditer(page.read_text(encoding="utf-8")):
            where[m.group("target") or m.group("opt")].append(page.name)
    assert where, "no labels found: the pattern no longer matches the book"
    dup = {k: v for k, v in where.items() if len(v) > 1}
    assert not dup, f"labels defined more than once: {dup}"
