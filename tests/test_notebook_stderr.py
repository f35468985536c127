"""No executed notebook of the book writes to stderr (a warning is fixed at its source).

Reads the notebooks the book build executed (``_build/jupyter_execute``, written
by ``make book``) and fails on any stderr stream output: a ``UserWarning``, a
progress bar drawn on stderr, a library's log line. Each of these would reach
a reader on the published page, often with a temporary path that changes on
every build. A cell that shows one on purpose says so with the tag
``show-stderr``. Hiding the output with ``remove-stderr`` does not count: the
warning is still raised, and the fix belongs where it is raised.

Without a build the test is skipped, unless ``GF_REQUIRE_BUILD=1`` (as
``make test`` sets after building the book).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "_build" / "jupyter_execute"
ALLOW_TAG = "show-stderr"


def _notebooks() -> list[Path]:
    return sorted(EXECUTED.rglob("*.ipynb")) if EXECUTED.is_dir() else []


def stderr_outputs(nb: dict) -> list[tuple[int, str, str]]:
    """(cell number, first source line, stderr text) of every offending cell of ``nb``."""
    found = []
    for i, cell in enumerate(nb.get("cells", []), 1):
        if cell.get("cell_type") != "code":
            continue
        if ALLOW_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        text = "".join(
            "".join(o.get("text", "")) for o in cell.get("outputs", [])
            if o.get("output_type") == "stream" and o.get("name") == "stderr")
        if text.strip():
            source = "".join(cell.get("source", "")).strip().splitlines() or [""]
            found.append((i, source[0][:60], text.strip()[:300]))
    return found


def test_the_check_finds_stderr_and_honours_the_tag():
    warn = {"output_type": "stream", "name": "stderr", "text": ["UserWarning: x\n"]}
    out = {"output_type": "stream", "name": "stdout", "text": ["fine\n"]}
    nb = {"cells": [
        {"cell_type": "code", "source": "a = 1", "metadata": {}, "outputs": [out]},
        {"cell_type": "code", "source": "warn()", "metadata": {}, "outputs": [warn]},
        {"cell_type": "code", "source": "hidden()", "metadata": {"tags": ["remove-stderr"]},
         "outputs": [warn]},
        {"cell_type": "code", "source": "shown()", "metadata": {"tags": [ALLOW_TAG]},
         "outputs": [warn]},
        {"cell_type": "markdown", "source": "text", "metadata": {}},
    ]}
    assert [i for i, _, _ in stderr_outputs(nb)] == [2, 3]


def test_the_build_executed_notebooks():
    if not _notebooks():
        if os.environ.get("GF_REQUIRE_BUILD") == "1":
            pytest.fail(f"no executed notebooks in {EXECUTED}: build the book first (make book)")
        pytest.skip("the book is not built (make book writes _build/jupyter_execute)")


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: str(p.relative_to(EXECUTED)))
def test_no_stderr_reaches_the_reader(path):
    found = stderr_outputs(json.loads(path.read_text()))
    report = "\n".join(f"  cell {i} ({src!r}): {text}" for i, src, text in found)
    assert not found, (f"{path.relative_to(EXECUTED)} writes to stderr (fix it at the source, "
                       f"or tag the cell {ALLOW_TAG!r} if it is shown on purpose):\n{report}")
