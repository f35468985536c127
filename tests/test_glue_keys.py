"""Every ``{glue}`` reference names a key some ``glue(...)`` call of its page can produce.

A reference to a key nobody glues fails only at the end of a full book build
(myst-nb: "No key ... found in glue data"), a minute and a half after the
edit that broke it. This test reads the pages' code statically: a key glued
as a literal (``glue("ch4_x", ...)``), through an f-string
(``glue(f"ch2_hr_{n}_{d}", ...)``, any text where the braces are), or by
:func:`lib.notebook.glue_summary` (``key`` and ``key_s``) counts as produced.
Cross-page references (``page.md::key:fmt``) are checked against that page,
and must name a format: without one myst-nb splits the reference at its last
colon, reads the key as ``page.md:`` and the strict build fails.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import jupytext
import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"
_REF = re.compile(r"\{glue(?::[a-z]+)?\}`([^`\s]+)`")
_CALL = re.compile(r"""\b(glue|glue_summary)\(\s*(f?)(["'])(.+?)\3""")


@lru_cache(maxsize=None)
def produced(page: str) -> tuple[frozenset[str], tuple[re.Pattern, ...]]:
    """(literal keys, patterns of f-string keys) that ``page``'s code glues."""
    nb = jupytext.read(BOOK / page)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    literal, patterns = set(), []
    for func, is_f, _, key in _CALL.findall(code):
        keys = [key, key + "_s"] if func == "glue_summary" else [key]
        for k in keys:
            if is_f:
                parts = re.split(r"\{[^}]*\}", k)
                patterns.append(re.compile(".+".join(map(re.escape, parts)) + r"\Z"))
            else:
                literal.add(k)
    return frozenset(literal), tuple(patterns)


def _known(page: str, key: str) -> bool:
    literal, patterns = produced(page)
    return key in literal or any(p.match(key) for p in patterns)


def _pages() -> list[Path]:
    return sorted(p for p in BOOK.glob("*.md") if p.read_text().startswith("---"))


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_every_glue_reference_has_a_producer(page: Path) -> None:
    missing, no_format = [], []
    for ref in _REF.findall(page.read_text(encoding="utf-8")):
        if "::" in ref:
            other, key = ref.split("::", 1)
            if ":" not in key:
                no_format.append(ref)
            key = key.rsplit(":", 1)[0] if ":" in key else key
        else:
            other, key = page.name, ref.split(":", 1)[0]
        if not (BOOK / other).is_file() or not _known(other, key):
            missing.append(ref)
    assert not no_format, f"{page.name}: cross-page glue needs `page.md::key:fmt`: {no_format}"
    assert not missing, f"{page.name}: glue references nobody produces: {missing}"


def test_the_check_tells_known_from_unknown_keys() -> None:
    assert _known("04_dying_relu.md", "ch4_rev_nets")  # a literal glue
    assert _known("04_dying_relu.md", "ch4_rev_l3_revived_s")  # glue_summary
    assert not _known("04_dying_relu.md", "no_such_key")
