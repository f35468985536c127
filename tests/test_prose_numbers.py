"""Every number in the book's prose is computed on the page, or is a principled exception.

The book promises that every number a reader sees in the text comes from the
code that runs on that page (myst-nb ``glue``), so that changing the code
changes the sentence. This test reads every page of ``book/`` (markdown cells
of the MyST notebooks; whole files for plain pages) and fails on any number
in the prose that is neither produced by a ``{glue}`` role nor covered by one
of the exceptions below. What is not prose is removed first: code cells and
fenced code, math (``$...$``, ``$$...$$``), inline code, every MyST role
(``{glue:text}``, ``{ref}``, ``{cite}``, ...), directive lines and their
options, link targets, labels and HTML.

The exceptions, each a rule rather than a sentence:

* **0 and 1**, and exact fractions of small integers written ``a/b``
  (``1/4``, ``11/48``): mathematical values, not measurements;
* **mathematical constants** at the printed precision (two decimals or
  more): ``2.30`` for :math:`\\ln 10`, ``2.72`` for :math:`e`, SELU's
  ``1.0507`` and ``1.6733``, and the few others in :data:`CONSTANTS`; and
  the argument of a function written out in words ("ln 10");
* **numbers the page's own code also uses**: a setting named in the prose
  ("width 64", "slope 0.01", "learning rate 0.05") is allowed when the same
  value is a numeric literal in a code cell of that page, so prose and code
  cannot drift apart silently (change the code and the number in the prose
  no longer matches any literal). A percentage ``p %`` matches a literal
  ``p`` or ``p / 100``;
* **citation years** (``Hendrycks & Gimpel 2016``, ``(2017)``) and
  **numbered references** (chapter, section, part, exercise, equation,
  figure, table, claim numbers);
* **what a paper reports**: a paper's published number is not an experiment
  of ours, so a table column whose header says so ("what they report",
  "what the paper reports", "reported", see :data:`REPORTED_COLUMNS`) may
  quote it as printed. Only that column: the book's own measurement of the
  same quantity, in the next column, is glued.

A failure names the page, the line and the number: glue the value, or name
the code literal it stands for, or rewrite the sentence.
"""
from __future__ import annotations

import io
import math
import re
import tokenize
from pathlib import Path

import jupytext
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"

#: Mathematical constants the prose may quote, by name; matched at the printed precision.
CONSTANTS = {
    "ln 10": math.log(10), "ln 2": math.log(2), "e": math.e, "pi": math.pi,
    "sqrt 2": math.sqrt(2), "sqrt 3": math.sqrt(3), "sqrt 6": math.sqrt(6),
    "SELU lambda": 1.0507009873554805, "SELU alpha": 1.6732632423543772,
}

#: Table headers (lower case) of the columns that quote a paper's published results.
REPORTED_COLUMNS = ("what they report", "what the paper reports", "reported",
                    "paper reports", "published")

_REF_WORDS = ("chapter", "chapters", "section", "sections", "part", "exercise", "exercises",
              "equation", "eq.", "eq", "figure", "fig.", "fig", "table", "tab.", "claim",
              "claims", "appendix", "sec.", "sec", "algorithm", "theorem", "lemma")
_NUMBER = re.compile(r"(?<![\w.,/^])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
                     r"(?![\w/]|\.\d|,\d{3})")
_FRACTION = re.compile(r"(?<![\w.])\d{1,3}/\d{1,3}(?![\w.])")


def _pages() -> list[Path]:
    return sorted(p for p in BOOK.glob("*.md"))


def _split(path: Path) -> tuple[list[tuple[int, str]], str]:
    """(prose lines with their line numbers in the file, all code of the page)."""
    text = path.read_text(encoding="utf-8")
    if text.startswith("---\njupytext:") or "\nkernelspec:" in text.split("\n---", 2)[0]:
        nb = jupytext.reads(text, fmt="md:myst")
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    else:
        code = ""
    lines = text.splitlines()
    prose: list[tuple[int, str]] = []
    in_front = lines[:1] == ["---"]
    fence: str | None = None
    prose_fence = False
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if in_front:
            if i > 1 and s == "---":
                in_front = False
            continue
        m = re.match(r"^(`{3,}|~{3,})(.*)$", s)
        if fence is not None:
            if m and s.startswith(fence) and not m.group(2).strip():
                fence = None
            elif prose_fence and not s.startswith(":"):
                prose.append((i, line))
            continue
        if m:
            fence = m.group(1)
            info = m.group(2).strip()
            # Directives whose body is prose (exercises, admonitions) stay in the scan.
            prose_fence = bool(re.match(r"\{(exercise|solution|note|tip|warning|important|"
                                        r"admonition|hint|seealso|caution|attention)", info))
            continue
        prose.append((i, line))
    return prose, code


def _code_values(code: str) -> set[float]:
    """Every numeric literal of the page's code (numbers and strings, not comments)."""
    values: set[float] = set()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        tokens = []
    for tok in tokens:
        if tok.type == tokenize.NUMBER:
            try:
                values.add(float(tok.string.replace("_", "").rstrip("jJ")))
            except ValueError:
                pass
        elif tok.type == tokenize.STRING:
            # Labels such as "Leaky 0.01" or "lr 0.05" name a setting too.
            for s in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])", tok.string):
                values.add(float(s))
    return values


def _cells(line: str) -> list[str]:
    return line.strip().strip("|").split("|")


def _blank_reported(lines: list[str]) -> list[str]:
    """The lines with every cell of a "what the paper reports" column blanked.

    A table is a header row, a ``|---|`` separator and rows; a cell is blanked
    (same length, so positions keep their line) when its column's header is
    one of :data:`REPORTED_COLUMNS`. A row whose cell count differs from the
    header's (a ``|`` inside a cell) is left as it is, and so still scanned.
    """
    out = list(lines)
    cols: set[int] = set()
    width = 0
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("|"):
            cols = set()
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if re.fullmatch(r"\s*\|?(\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*\|?\s*", nxt):
            head = [c.strip().lower() for c in _cells(line)]
            cols, width = {j for j, h in enumerate(head) if h in REPORTED_COLUMNS}, len(head)
            continue
        cells = _cells(line)
        if not cols or len(cells) != width:
            continue
        lead = line[:len(line) - len(line.lstrip())] + ("|" if line.lstrip().startswith("|")
                                                        else "")
        cells = [" " * len(c) if j in cols else c for j, c in enumerate(cells)]
        rest = line.strip()[1:]
        trail = "|" if rest.endswith("|") else ""
        out[i] = lead + "|".join(cells) + trail
    return out


def _blank(m: re.Match) -> str:
    """Replace a match by spaces, keeping its newlines, so positions keep their line."""
    return re.sub(r"[^\n]", " ", m.group(0))


def _clean(text: str) -> str:
    """The prose of a page: roles, math, code, links and labels blanked out."""
    para = r"(?:(?!\n\s*\n)[\s\S])"  # any character, but never across a blank line
    s = re.sub(r"\$\$[\s\S]*?\$\$", _blank, text)
    s = re.sub(rf"(?<!\\)\$(?!\$){para}*?(?<!\\)\$", _blank, s)
    s = re.sub(rf"\{{[\w:-]+\}}`{para}*?`", _blank, s)  # MyST roles: glue, ref, cite, ...
    s = re.sub(rf"``{para}*?``|`{para}*?`", _blank, s)
    s = re.sub(r"\]\([^)]*\)", _blank, s)  # link targets
    s = re.sub(r"<[^>\n]+>", _blank, s)  # HTML tags and autolinks
    s = re.sub(r"(?m)^\s*\([\w-]+\)=\s*$", _blank, s)  # labels
    s = re.sub(r"(?m)^\s*:[\w-]+:.*$", _blank, s)  # directive options
    s = re.sub(r"https?://\S+", _blank, s)
    return s


def _is_constant(token: str, value: float) -> bool:
    decimals = len(token.split(".")[1]) if "." in token else 0
    if decimals < 2:  # one decimal would match too much by chance
        return False
    return any(abs(value - c) <= 0.5 * 10**-decimals + 1e-12 for c in CONSTANTS.values())


def _is_reference(before: str, token: str, after: str) -> bool:
    words = before.lower().rstrip().split()
    if words and words[-1] in ("ln", "log", "log2", "log10", "sqrt", "exp"):
        return True  # the argument of a function written out: "ln 10"
    if words and words[-1].rstrip("s") in {w.rstrip("s") for w in _REF_WORDS}:
        return True
    year = re.fullmatch(r"(19|20)\d\d", token)
    if year and (re.search(r"(et al\.?|[A-Z][\w'-]+|&|and)\s*,?\s*$", before)
                 or re.search(r"\(\s*$", before)):
        return True
    return False


def _matches_code(token: str, value: float, after: str, code_values: set[float]) -> bool:
    def close(v: float) -> bool:
        return any(math.isclose(v, c, rel_tol=1e-9, abs_tol=1e-12) for c in code_values)

    if close(value):
        return True
    return bool(re.match(r"\s*%", after)) and close(value / 100)


def offending_numbers(path: Path) -> list[tuple[int, str, str]]:
    """(line, number, context) for every number in ``path``'s prose that no rule allows."""
    prose, code = _split(path)
    code_values = _code_values(code)
    numbers = [n for n, _ in prose]
    lines = _blank_reported([line for _, line in prose])
    text = _FRACTION.sub(_blank, _clean("\n".join(lines)))
    starts = [0]
    for line in text.split("\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    bad = []
    for m in _NUMBER.finditer(text):
        token = m.group(1)
        value = float(token.replace(",", ""))
        row = max(i for i, s in enumerate(starts) if s <= m.start())
        before, after = text[starts[row]:m.start()], text[m.end():m.end() + 5]
        if value in (0.0, 1.0) and "." not in token:
            continue
        if _is_constant(token, value) or _is_reference(before, token, after):
            continue
        if _matches_code(token, value, after, code_values):
            continue
        bad.append((numbers[row], token, prose[row][1].strip()[:100]))
    return bad


#: Pages allowed to fail the scan while their typed numbers are being glued
#: (expected failures). Empty since 2026-12-02: every page passes; a new page
#: goes here only with a note on the issue that tracks it.
NOT_YET_GLUED: set[str] = set()


@pytest.mark.parametrize(
    "page",
    [pytest.param(p, marks=pytest.mark.xfail(reason="typed numbers not yet glued",
                                             strict=False))
     if p.name in NOT_YET_GLUED else p for p in _pages()],
    ids=lambda p: p.name)
def test_prose_numbers_are_glued(page: Path) -> None:
    bad = offending_numbers(page)
    assert not bad, f"{page.name}: numbers typed into the prose (glue them, or use the " \
        "code's literal):\n" + "\n".join(f"  line {n}: {tok!r} in: {ctx}" for n, tok, ctx in bad)


def _typed_numbers(tmp_path: Path, text: str) -> list[str]:
    """The numbers :func:`offending_numbers` flags in a page holding ``text``."""
    page = tmp_path / "page.md"
    page.write_text(text)
    return [tok for _, tok, _ in offending_numbers(page)]


def test_the_scan_finds_a_typed_number(tmp_path: Path) -> None:
    bad = _typed_numbers(tmp_path, "---\njupytext:\n  text_representation:\n    extension: .md\n"
                    "    format_name: myst\nkernelspec:\n  display_name: Python 3\n"
                    "  language: python\n  name: python3\n---\n\n"
                    "```{code-cell} ipython3\nlr = 0.05\n```\n\n"
                    "At learning rate 0.05 the loss fell to 0.37 "
                    "({glue:text}`loss:.2f` measured), $0.25^{19}$ in math, "
                    "`0.9` in code, ln 10 = 2.30, Xu et al. 2015, chapter 3, 1/4.\n")
    assert bad == ["0.37"], bad


def test_a_papers_reported_column_may_quote_it(tmp_path: Path) -> None:
    bad = _typed_numbers(tmp_path, "# Results\n\n"
                    "| paper | what they report | what the book measures |\n"
                    "|---|---|---|\n"
                    "| Xu et al. 2015 | 4.7 % error at 50 layers | 6.2 % at 20 layers |\n"
                    "\nAfter the table, 7.5 is typed again.\n")
    # the paper's numbers pass; ours in the next column and after the table do not
    assert bad == ["6.2", "20", "7.5"], bad
