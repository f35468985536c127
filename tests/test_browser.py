"""The built book, looked at in a real browser (Debian's chromium, headless).

Serves ``_build/html`` on 127.0.0.1 and visits every page of the table of
contents, as a reader would: no JavaScript errors, no request that fails (the
book must work offline), every figure loads, every formula is rendered by the
locally served MathJax (no raw TeX left), launch and download buttons point
where they should, and the search page finds a word from a chapter.

Run after ``make book`` (``make test`` does both). Where chromium is missing
the tests are skipped with a plain message, except in CI, where they fail.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
sys.path.insert(0, str(ROOT / "scripts"))
from export_notebooks import is_notebook, toc_files  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


PAGES = [(p.relative_to(ROOT).with_suffix(".html").as_posix(), is_notebook(p)) for p in toc_files()]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO = CONFIG["repository"]["url"].removeprefix("https://github.com/")
BRANCH = CONFIG["repository"].get("branch", "main")


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        _missing(f"{HTML}/index.html not found: build the book first (make book)")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output readable
        pass


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        _missing("chromium is not installed (apt-get install chromium); browser checks not run")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -r requirements.txt)")
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    yield b
    b.close()
    pw.stop()


def _visit(browser, url: str):
    """Open ``url``; return the page and the problems seen while it loaded."""
    page = browser.new_page(viewport={"width": 1280, "height": 2000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    # "load" waits for every image and script; MathJax then typesets asynchronously,
    # so wait for its promise too (it is a deferred script, so it exists by then).
    page.goto(url, wait_until="load")
    page.evaluate("() => (window.MathJax && MathJax.startup) ? MathJax.startup.promise : null")
    return page, problems


@pytest.mark.parametrize("path,notebook", PAGES, ids=[p for p, _ in PAGES])
def test_page(server, browser, path: str, notebook: bool) -> None:
    page, problems = _visit(browser, f"{server}/{path}")
    try:
        assert not problems, "\n".join(problems)
        assert page.title(), "page has no title"

        # Every figure has loaded and has a non-zero size.
        imgs = page.eval_on_selector_all(
            "article img", "els => els.map(e => [e.currentSrc || e.src, e.complete, e.naturalWidth])")
        broken = [src for src, complete, width in imgs if not complete or width == 0]
        assert not broken, f"images that did not load: {broken}"

        # Math is rendered by MathJax: every math element holds an mjx-container, no raw TeX shows.
        math = page.eval_on_selector_all(
            "article .math", "els => els.map(e => e.querySelector('mjx-container') !== null)")
        assert all(math), f"{math.count(False)} of {len(math)} formulas were not rendered"
        text = page.inner_text("article")
        for raw in ("\\(", "\\[", "$$"):
            assert raw not in text, f"raw TeX {raw!r} visible on the page"
        assert "Traceback (most recent call last)" not in text, "a traceback is published"

        if notebook and path != "book/intro.html":
            stem = Path(path).with_suffix("").as_posix()
            links = page.eval_on_selector_all("a", "els => els.map(e => e.href)")
            binder = f"https://mybinder.org/v2/gh/{REPO}/{BRANCH}?urlpath=lab/tree/{stem}.md"
            colab = f"https://colab.research.google.com/github/{REPO}/blob/notebooks/{stem}.ipynb"
            assert binder in links, f"no Binder button to {binder}"
            assert colab in links, f"no Colab button to {colab}"
            for ext in (".ipynb", ".md"):
                target = f"{server}/_sources/{stem}{ext}"
                assert target in links, f"no download link to {target}"
                assert page.request.get(target).ok, f"download {target} fails"
        if path == "book/03_relu.html" or (path == "book/intro.html"):
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"{Path(path).stem}.png"), full_page=False)
    finally:
        page.close()


def test_search_finds_a_chapter_word(server, browser) -> None:
    page, problems = _visit(browser, f"{server}/search.html?q=saturation")
    try:
        page.wait_for_selector("#search-results li", timeout=15000)
        hits = page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.href)")
        assert any("/book/" in h for h in hits), f"search for 'saturation' found no chapter: {hits}"
        assert not problems, "\n".join(problems)
    finally:
        page.close()
