"""scripts/build_book.py: the parallel build's page scheduling."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import build_book  # noqa: E402


@pytest.fixture
def pages(tmp_path, monkeypatch):
    monkeypatch.setattr(build_book, "ROOT", tmp_path)
    sizes = {"big": 9000, "mid": 5000, "small": 1000, "tiny": 10}
    for name, n in sizes.items():
        (tmp_path / f"{name}.md").write_text("x" * n)
    (tmp_path / "api.md").write_text(".. automodule:: lib\n" * 3)
    return [*sizes, "api"]


def test_every_page_once_heaviest_started_first(pages):
    chunks = build_book.balanced_chunks(pages, 2)
    assert sorted(d for c in chunks for d in c) == sorted(pages)
    assert all(len(c) == 1 for c in chunks)
    assert [c[0] for c in chunks[:2]] == ["big", "api"]
    # the waiting pages are popped last-in first-out: heaviest of the rest next
    assert chunks[-1] == ["mid"]


def test_autodoc_pages_weigh_more_than_their_source(pages):
    per_second = build_book.SOURCE_BYTES_PER_SECOND
    assert build_book._cost("api") * per_second > 3 * build_book.AUTOMODULE_COST - 1
    assert build_book._cost("missing") == 0


def test_a_recorded_time_outranks_the_size_estimate(pages):
    assert build_book._cost("tiny") < build_book._cost("big")
    path = build_book._times_file("tiny")
    path.parent.mkdir(parents=True)
    path.write_text("42.5\n")
    assert build_book._cost("tiny") == 42.5
    assert build_book.balanced_chunks(pages, 2)[0] == ["tiny"]
    for junk in ("not a number", "-1", "nan", "1e9"):
        path.write_text(junk)
        assert build_book._cost("tiny") < build_book._cost("big"), junk


def test_reading_a_page_records_its_time(pages, monkeypatch):
    from sphinx.builders import Builder

    monkeypatch.setattr(Builder, "read_doc", lambda self, docname, **kw: None)
    build_book._record_read_times()
    Builder.read_doc(object(), "book/sub/page")
    assert 0 <= build_book.recorded_seconds("book/sub/page") < 1
    assert build_book._times_file("book/sub/page").name == "book__sub__page.txt"


def test_pybtex_plugin_lookup_is_memoised_and_unchanged(monkeypatch):
    import pybtex.plugin

    original = pybtex.plugin.find_plugin
    monkeypatch.setattr(pybtex.plugin, "find_plugin", original)
    expected = original("pybtex.backends", "plaintext")
    build_book._memoise_pybtex_plugins()
    find = pybtex.plugin.find_plugin
    assert find is not original and find.cache_info().currsize == 0
    assert find("pybtex.backends", "plaintext") is expected
    assert find("pybtex.backends", "plaintext") is expected
    assert find.cache_info().hits == 1
    build_book._memoise_pybtex_plugins()  # idempotent: no cache around a cache
    assert pybtex.plugin.find_plugin is find
