"""The built book, looked at in a real browser (Debian's chromium, headless).

Serves ``_build/html`` on 127.0.0.1 and visits every page of the table of
contents, as a reader would: no JavaScript errors, no request that fails and
none that leaves 127.0.0.1 (the book must work offline), every figure loads,
every formula is rendered by the locally served MathJax (no raw TeX left),
launch (Binder, Colab, Live Code) and download buttons point where they
should, and the search page finds a word from a chapter.

Every interactive figure (``lib.interactive``) is driven like a reader would:
each of its controls in turn (menu, radio button, slider, checkbox) is set to
another value, and the drawn marks must change, with no console error and no
request off 127.0.0.1; the static figure beside it must be there too.

Run after ``make book`` (``make test`` does both); ``GF_BOOK_HTML=dir`` points
it at another build (e.g. a throwaway book of a few pages: the pages of
``_toc.yml`` missing from it are skipped). Where chromium is missing the tests
are skipped with a plain message, except in CI, where they fail.
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
HTML = Path(os.environ.get("GF_BOOK_HTML") or ROOT / "_build" / "html")
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


def _local(url: str) -> bool:
    return url.startswith(("http://127.0.0.1:", "data:", "blob:", "about:"))


def _visit(browser, url: str):
    """Open ``url``; return the page and the problems seen while it loaded."""
    if os.environ.get("GF_BOOK_HTML"):
        rel = url.split("/", 3)[3].split("?")[0]
        if rel and not (HTML / rel).exists():
            pytest.skip(f"{rel} is not in the build at {HTML}")
    page = browser.new_page(viewport={"width": 1280, "height": 2000})
    problems: list[str] = []
    # The book works offline: nothing may be fetched from anywhere but the local server.
    page.on("request", lambda r: problems.append(f"request off 127.0.0.1: {r.url}")
            if not _local(r.url) else None)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" or (m.type == "warning" and m.text.startswith("WARN "))
            else None)  # "WARN ...": vega's logger, a figure drawn differently than specified
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    # "load" waits for every image and script; MathJax then typesets asynchronously,
    # so wait for its promise too (it is a deferred script, so it exists by then).
    # A generous timeout: MathJax's typesetting alone takes seconds on a loaded machine.
    page.goto(url, wait_until="load", timeout=120000)
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
            # Live Code (Thebe) is a button; it fetches Thebe only when pressed.
            assert page.query_selector("button.btn-launch-thebe"), "no Live Code (Thebe) button"
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


# -- interactive figures ------------------------------------------------------------------

#: A signature of what a figure has drawn: every mark's geometry and colour.
_DRAWN = """el => Array.from(el.querySelectorAll('svg .role-mark path, svg .role-mark text'))
    .map(m => [m.getAttribute('d'), m.getAttribute('fill'), m.getAttribute('stroke'),
               m.getAttribute('transform'), m.textContent].join(',')).join('|')"""

#: Set control ``i`` of a figure to another value, as a reader would; return what it did.
_CHANGE = """([el, i]) => {
    const inputs = Array.from(el.querySelectorAll('.vega-bind'));
    const bind = inputs[i];
    const name = bind.querySelector('.vega-bind-name').textContent.trim();
    const sel = bind.querySelector('select');
    const radios = Array.from(bind.querySelectorAll('input[type=radio]'));
    const range = bind.querySelector('input[type=range]');
    const box = bind.querySelector('input[type=checkbox]');
    if (sel) {
        sel.selectedIndex = (sel.selectedIndex + 1) % sel.options.length;
        sel.dispatchEvent(new Event('change', {bubbles: true}));
        return name + ': menu -> ' + sel.value;
    }
    if (radios.length) {
        const next = radios.find(r => !r.checked);
        next.click();
        return name + ': radio -> ' + next.value;
    }
    if (range) {
        const v = Number(range.value), lo = Number(range.min), hi = Number(range.max);
        range.value = String(v < hi ? hi : lo);
        range.dispatchEvent(new Event('input', {bubbles: true}));
        return name + ': slider -> ' + range.value;
    }
    box.click();
    return name + ': checkbox -> ' + box.checked;
}"""


def _figure_pages() -> list[str]:
    return sorted(f.relative_to(HTML).as_posix() for f in (HTML / "book").glob("*.html")
                  if 'class="gf-interactive"' in f.read_text(errors="replace"))


FIGURE_PAGES = _figure_pages()


def test_interactive_figures_exist() -> None:
    if not (HTML / "index.html").exists():
        _missing(f"{HTML}/index.html not found: build the book first (make book)")
    want = {"book/playground.html", "book/intro.html", "book/02_chain_rule.html",
            "book/04_dying_relu.html", "book/05_initialisation.html"}
    built = {p for p in want if (HTML / p).exists()}
    assert built <= set(FIGURE_PAGES), f"pages without their interactive figure: " \
        f"{sorted(built - set(FIGURE_PAGES))}"


@pytest.mark.parametrize("path", FIGURE_PAGES or ["(none built)"])
def test_interactive_figure_responds(server, browser, path: str) -> None:
    if path == "(none built)":
        pytest.skip("no page with an interactive figure in this build")
    page, problems = _visit(browser, f"{server}/{path}")
    try:
        figures = page.query_selector_all("div.gf-interactive")
        assert figures, "no interactive figure on the page"
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('div.gf-interactive'))"
            ".every(e => ['ready', 'failed'].includes(e.dataset.gfState))", timeout=30000)
        for fig in figures:
            fid = fig.get_attribute("id")
            assert fig.get_attribute("data-gf-state") == "ready", f"{fid} was not drawn"
            # The static figure (for print and for readers without JavaScript) is beside it.
            fallback = fig.evaluate(
                "el => Array.from((el.closest('section') || document).querySelectorAll('img'))"
                ".filter(i => i.complete && i.naturalWidth > 0 && !el.contains(i)).length")
            assert fallback >= 1, f"{fid}: no static fallback image in its section"
            n_controls = len(fig.query_selector_all(".vega-bind"))
            assert n_controls >= 1, f"{fid} has no control"
            for i in range(n_controls):
                before = fig.evaluate(_DRAWN)
                assert before, f"{fid} has drawn nothing"
                what = page.evaluate(_CHANGE, [fig, i])
                page.wait_for_function(f"([el, b]) => ({_DRAWN})(el) !== b", arg=[fig, before],
                                       timeout=10000)
                assert fig.evaluate(_DRAWN) != before, f"{fid}: {what} changed nothing"
        assert not problems, "\n".join(problems)
    finally:
        page.close()
