"""Serve the interactive figures' JavaScript from the book itself (no CDN).

The chapters' interactive figures (``lib.interactive``) are Vega-Lite
specifications inside ``<div class="gf-interactive">`` blocks. This extension

* adds vega, vega-lite and vega-embed (installed from npm by ``make``, pinned
  in the Makefile, into ``.cache/vega``; the ``gf_vega_dir`` setting) and the
  small loader ``_ext/static/gf/gf_interactive.js`` to the pages that have such
  a block, and only to those, so other pages carry no extra weight;
* copies those three files into ``_static/gf/vega/`` of the built site, so a
  page needs no network: it works from ``file://``, ``make book`` and any host.

A page with a figure but no vega files installed fails the build with a
message naming the command that installs them.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sphinx.errors import ExtensionError

#: The files served, by their path in the npm packages.
VEGA_FILES = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js",
              "vega-embed/build/vega-embed.min.js")
STATIC = Path(__file__).resolve().parent / "static"
MARKER = 'class="gf-interactive"'


def _vega_dir(app: Any) -> Path:
    return (Path(app.confdir) / app.config.gf_vega_dir).resolve()


def _missing(app: Any) -> list[str]:
    root = _vega_dir(app)
    return [f for f in VEGA_FILES if not (root / f).is_file()]


def add_static(app: Any) -> None:
    app.config.html_static_path.append(str(STATIC))


def add_scripts(app: Any, pagename: str, templatename: str, context: dict,
                doctree: Any) -> None:
    if MARKER not in (context.get("body") or ""):
        return
    missing = _missing(app)
    if missing:
        raise ExtensionError(
            f"page {pagename} has an interactive figure, but {', '.join(missing)} "
            f"is missing under {_vega_dir(app)}: run `make setup` (it installs vega from npm)")
    for f in VEGA_FILES:
        app.add_js_file(f"gf/vega/{Path(f).name}", loading_method="defer")
    app.add_js_file("gf/gf_interactive.js", loading_method="defer")
    app.add_css_file("gf/gf_interactive.css")


def copy_vega(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html" or _missing(app):
        return
    out = Path(app.outdir) / "_static" / "gf" / "vega"
    out.mkdir(parents=True, exist_ok=True)
    for f in VEGA_FILES:
        shutil.copyfile(_vega_dir(app) / f, out / Path(f).name)


def setup(app: Any) -> dict:
    app.add_config_value("gf_vega_dir", ".cache/vega/node_modules", "html")
    app.connect("builder-inited", add_static)
    # Before book_html's de-duplication (priority 900) sees the page's script list.
    app.connect("html-page-context", add_scripts, priority=800)
    app.connect("build-finished", copy_vega)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
