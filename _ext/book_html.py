"""Two small fixes to the HTML that Jupyter Book 1 writes.

1. Point the Colab launch button at an executed ``.ipynb`` instead of the ``.md`` source.
   Colab opens only ``.ipynb`` files from GitHub, while the book's sources are
MyST-markdown notebooks. The publishing workflow pushes the executed notebooks
(with a set-up cell for Colab) to the ``notebooks`` branch; this extension
rewrites the Colab link of every page to that branch. Binder keeps opening the
``.md`` source, which jupytext shows as a notebook there.

2. Drop scripts registered twice. Jupyter Book 1.0.4 registers sphinx-thebe's
   inline configuration twice on every page, so the browser reports
   "Identifier 'THEBE_JS_URL' has already been declared" on each load.

3. Give the theme a default colour mode. sphinx-book-theme does not accept
   pydata-sphinx-theme's ``default_mode`` option, so on a first visit the page
   reads an empty mode and logs "Got invalid theme mode" as a console error.
"""
from __future__ import annotations

import re
from typing import Any

NOTEBOOK_BRANCH = "notebooks"


def _rewrite(url: str, branch: str) -> str:
    return re.sub(r"/blob/[^/]+/(.*)\.md$", rf"/blob/{branch}/\1.ipynb", url)


def rewrite_colab_links(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []) if isinstance(group, dict) else []:
            if button.get("text") == "Colab" and "url" in button:
                button["url"] = _rewrite(button["url"], app.config.colab_notebook_branch)


def drop_duplicate_scripts(app: Any, pagename: str, templatename: str, context: dict,
                           doctree: Any) -> None:
    seen: set = set()
    unique = []
    for js in context.get("script_files", []):
        # The second copy has filename '' where the first has None: compare them as equal.
        filename = getattr(js, "filename", js) or ""
        attributes = getattr(js, "attributes", {})
        key = (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def set_default_mode(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    if not context.get("default_mode"):
        context["default_mode"] = "light"


def setup(app: Any) -> dict:
    app.add_config_value("colab_notebook_branch", NOTEBOOK_BRANCH, "html")
    # sphinx-book-theme adds its launch buttons at priority 501; run after it.
    app.connect("html-page-context", rewrite_colab_links, priority=900)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    app.connect("html-page-context", set_default_mode, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
