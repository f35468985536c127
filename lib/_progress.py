"""The book's progress bar: one rule for every training loop in lib (private).

Kept below every other module so that low modules (``lib.recurrent_population``)
and high ones (``lib.training``, ``lib.population``) share it without importing
each other.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Iterable

with warnings.catch_warnings():
    # In a notebook without ipywidgets tqdm.auto warns once at import and falls
    # back to the text bar, which is all we want; the warning would otherwise
    # print on every page.
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable[Any] | None, desc: str, enabled: bool = True,
                 total: int | None = None) -> Any:
    """A tqdm bar over ``iterable`` (or of ``total`` steps, advanced by ``update``).

    Silent if not ``enabled`` or if ``TQDM_DISABLE`` is set.

    TQDM_DISABLE is read here, not left to tqdm: its notebook bar sets
    disable=False itself, and builds use the variable to keep progress widgets
    (whose script comes from a CDN) out of the published pages.
    """
    quiet = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(iterable, desc=desc, leave=False, disable=quiet, total=total)
