"""Interactive figures as Vega-Lite specifications, rendered by the book's own JavaScript.

A figure is a `Vega-Lite <https://vega.github.io/vega-lite/>`_ specification
(a JSON document) with its data inline and *parameters bound to inputs*: a
menu, radio buttons, a slider or a checkbox above the chart. Every view
filters the precomputed rows to the ones that match the current inputs, so a
change redraws at once, in the browser, with no kernel and no server::

    rows = [{"act": "relu", "depth": 10, "layer": [1, 2], "g": [0.1, 0.2]}, ...]
    fig = Figure(
        {"data": {"values": rows},
         "transform": [{"filter": matches("act", "depth")}, {"flatten": ["layer", "g"]}],
         "mark": "line",
         "encoding": {"x": {"field": "layer"}, "y": {"field": "g"}}},
        controls=[select("act", ["relu", "tanh"]), slider("depth", [5, 10, 15])])
    fig                      # in a notebook: the HTML that the book page renders

The HTML holds the specification in a ``<script type="application/json">``
block; the Sphinx extension ``_ext/interactive.py`` serves vega, vega-lite and
vega-embed from the book itself (no CDN) on the pages that have such a block,
and ``_ext/static/gf_interactive.js`` draws each one. Rows hold arrays
(one row per grid point, flattened by the view) and numbers are rounded to
four significant digits, which keeps a page's data small.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
from typing import Any, Iterable, Sequence

from lib import plots as _plots

__all__ = ["Figure", "select", "radio", "slider", "checkbox", "matches", "compact",
           "color_scale", "SCHEMA"]

#: The Vega-Lite schema the specifications are written (and tested) against.
SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"


def compact(value: Any, digits: int = 4) -> Any:
    """``value`` with floats rounded to ``digits`` significant digits and NaN/inf as None.

    JSON has no NaN; a None (``null``) is skipped by the views' validity filters.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        rounded = float(f"{value:.{digits}g}")
        return rounded if math.isfinite(rounded) else value  # rounding up past the largest float
    if isinstance(value, dict):
        return {str(k): compact(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [compact(v, digits) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, 0-d tensors
        return compact(value.tolist(), digits)
    raise TypeError(f"cannot put a {type(value).__name__} into a figure's data")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a control's name must be an identifier (it becomes a Vega "
                         f"parameter), got {name!r}")
    return name


def _options(options: Any, name: str) -> list[Any]:
    if isinstance(options, (str, bytes)) or not isinstance(options, Sequence) or not options:
        raise ValueError(f"control {name!r} needs a non-empty list of options")
    return list(options)


def select(name: str, options: Sequence[Any], *, label: str | None = None,
           value: Any = None, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """A drop-down menu bound to parameter ``name`` (default: the first option)."""
    return _choice("select", name, options, label, value, labels)


def radio(name: str, options: Sequence[Any], *, label: str | None = None,
          value: Any = None, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Radio buttons bound to parameter ``name``."""
    return _choice("radio", name, options, label, value, labels)


def _choice(kind: str, name: str, options: Sequence[Any], label: str | None, value: Any,
            labels: Sequence[str] | None) -> dict[str, Any]:
    name = _check_name(name)
    opts = _options(options, name)
    value = opts[0] if value is None else value
    if value not in opts:
        raise ValueError(f"control {name!r}: value {value!r} is not one of its options {opts}")
    bind: dict[str, Any] = {"input": kind, "options": opts, "name": f"{label or name} "}
    if labels is not None:
        if len(labels) != len(opts):
            raise ValueError(f"control {name!r}: {len(labels)} labels for {len(opts)} options")
        bind["labels"] = [str(v) for v in labels]
    return {"name": name, "value": value, "bind": bind}


def slider(name: str, values: Sequence[float], *, label: str | None = None,
           value: float | None = None) -> dict[str, Any]:
    """A slider over evenly spaced ``values`` (the grid's values along one axis)."""
    name = _check_name(name)
    vals = [float(v) for v in _options(values, name)]
    if len(vals) < 2:
        raise ValueError(f"slider {name!r} needs at least two values")
    step = vals[1] - vals[0]
    if step <= 0 or any(not math.isclose(b - a, step, rel_tol=1e-6, abs_tol=1e-12)
                        for a, b in zip(vals, vals[1:])):
        raise ValueError(f"slider {name!r} needs increasing, evenly spaced values, got {vals}")
    value = vals[0] if value is None else float(value)
    if not any(math.isclose(value, v, abs_tol=1e-12) for v in vals):
        raise ValueError(f"slider {name!r}: value {value!r} is not one of its values {vals}")
    num = compact([vals[0], vals[-1], step, value], 6)
    return {"name": name, "value": num[3], "bind": {"input": "range", "min": num[0],
                                                     "max": num[1], "step": num[2],
                                                     "name": f"{label or name} "}}


def checkbox(name: str, *, label: str | None = None, value: bool = False) -> dict[str, Any]:
    """A checkbox bound to the boolean parameter ``name``."""
    name = _check_name(name)
    if not isinstance(value, bool):
        raise TypeError(f"checkbox {name!r}: value must be a bool, got {type(value).__name__}")
    return {"name": name, "value": value, "bind": {"input": "checkbox",
                                                   "name": f"{label or name} "}}


def matches(*names: str) -> str:
    """A filter expression: the row's field equals the parameter of the same name, for each.

    Numbers compare with a tolerance (a slider reports 0.30000000000000004 for 0.3).
    """
    if not names:
        raise ValueError("matches needs at least one parameter name")
    parts = []
    for n in names:
        n = _check_name(n)
        parts.append(f"(isNumber({n}) ? abs(datum.{n} - {n}) < 1e-9 : datum.{n} === {n})")
    return " && ".join(parts)


def color_scale(keys: Iterable[str]) -> dict[str, Any]:
    """A Vega-Lite colour scale giving each key the house colour of :mod:`lib.plots`."""
    keys = list(keys)
    return {"domain": keys, "range": [_plots.color(k, i) for i, k in enumerate(keys)]}


class Figure:
    """A Vega-Lite figure with bound controls; displays as the HTML the book renders.

    Args:
        spec: a Vega-Lite view or composition (``mark``/``layer``/``hconcat``...),
            data included; ``$schema``, the controls and a house config are added.
        controls: parameters from :func:`select`, :func:`radio`, :func:`slider`,
            :func:`checkbox`; their values drive the views' filters.
        title: a short description, also the text a reader without JavaScript sees.
    """

    def __init__(self, spec: dict[str, Any], controls: Sequence[dict[str, Any]] = (), *,
                 title: str = "interactive figure") -> None:
        if not isinstance(spec, dict):
            raise TypeError(f"spec must be a dict (a Vega-Lite specification), "
                            f"got {type(spec).__name__}")
        if not isinstance(title, str) or not title:
            raise ValueError("title must be a non-empty str")
        names = [c.get("name") for c in controls]
        if len(set(names)) != len(names):
            raise ValueError(f"control names must be distinct, got {names}")
        self.title = title
        self.spec: dict[str, Any] = {
            "$schema": SCHEMA,
            "params": [*spec.get("params", []), *controls],
            **{k: v for k, v in spec.items() if k != "params"},
            "config": {"font": "sans-serif", "axis": {"labelFontSize": 11, "titleFontSize": 12},
                       "legend": {"labelFontSize": 11, "titleFontSize": 12},
                       "view": {"stroke": "#ccc"}, **spec.get("config", {})},
        }

    def to_json(self) -> str:
        """The specification as compact JSON (numbers rounded, see :func:`compact`)."""
        return json.dumps(compact(self.spec), separators=(",", ":"), allow_nan=False)

    @property
    def id(self) -> str:
        """A stable element id: the same figure gets the same id on every build."""
        return "gf-fig-" + hashlib.sha1(self.to_json().encode()).hexdigest()[:10]

    def _repr_html_(self) -> str:
        spec = self.to_json().replace("</", "<\\/")  # never close the script block early
        return (f'<div class="gf-interactive" id="{self.id}" '
                f'aria-label="{html.escape(self.title)}">'
                f'<p class="gf-interactive-note">Interactive figure ({html.escape(self.title)}):'
                f' it needs JavaScript; the static figure beside it shows the same data.</p>'
                f'<script type="application/json" class="gf-spec">{spec}</script></div>')

    def __repr__(self) -> str:
        return f"<interactive figure: {self.title}>"
