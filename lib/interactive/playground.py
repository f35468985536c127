"""The playground: every combination of a few design choices, measured at initialisation.

:func:`playground_grid` measures one forward/backward pass of an MLP for every
combination of activation, initialisation, depth, width, normalisation and
residual connections; :func:`playground_figure` draws four linked views of the
chosen combination: the weight-gradient norm per layer, the dead and saturated
fractions per layer, and histograms of the activations and of the
backpropagated gradients of the first and the last hidden layer.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from torch import Tensor

from lib import networks as _networks
from lib.interactive import figure as _fig
from lib.interactive._probe import init_states, stacked_stats
from lib.interactive.grids import INIT_LABELS, Grid, _check_xy, _log_domain, _names, _seed

__all__ = ["playground_grid", "playground_figure", "KEYS"]

#: The controls of the playground, in the order the rows are keyed.
KEYS = ("act", "init", "depth", "width", "norm", "res")

_ACT_EDGES = np.linspace(-3, 3, 25)
_GRAD_EDGES = np.linspace(-10, 0, 21)


def playground_grid(x: Tensor, y: Tensor, *, activations: Sequence[str], inits: Sequence[str],
                    depths: Sequence[int], widths: Sequence[int], norms: Sequence[str],
                    seed: int) -> Grid:
    """Measure every (act, init, depth, width, norm, residual) network on ``(x, y)``.

    Each architecture (depth, width, norm, residual) is one stacked computation
    over activations and inits, from one seed (the row's ``seed``: the row is
    ``lib.networks.mlp(depth, width, act, init=init, norm=norm, residual=res,
    seed=seed)``). A residual
    network of depth D has D blocks (two Linear layers each) after an input
    layer. Each row holds ``layer``/``g`` (every weight layer and its
    weight-gradient norm), ``hl``/``dead``/``sat`` (per hidden activation: %
    dead, % saturated) and ``bin``/``act_first``/``act_last``/``gbin``/
    ``grad_first``/``grad_last`` (histograms, % of the values per bin).
    """
    _check_xy(x, y)
    inits = _names(inits, "inits")
    t0 = time.process_time()
    grid = Grid(KEYS)
    ab = (_ACT_EDGES[:-1] + _ACT_EDGES[1:]) / 2
    gb = (_GRAD_EDGES[:-1] + _GRAD_EDGES[1:]) / 2
    acts = _names(activations, "activations")
    for width in _names(widths, "widths"):
        for norm in _names(norms, "norms"):
            for res in (False, True):
                for depth in _names(depths, "depths"):
                    # One architecture is one stacked computation over activations and
                    # inits; every activation starts from the same draws of each init.
                    s = _seed(seed, f"playground-{width}-{norm}-{res}-{depth}")
                    net = _networks.mlp(depth, width, acts[0], norm=norm, residual=res,
                                        seed=s, in_features=x.shape[1])
                    n_act = len(net.hidden())
                    st = stacked_stats(net, x, y, states=init_states(net, inits, seed=s)
                                       * len(acts),
                                       activations=[a for a in acts for _ in inits],
                                       hist_layers=[0, n_act - 1],
                                       act_edges=_ACT_EDGES, grad_edges=_GRAD_EDGES)
                    for k, (act, i) in enumerate((a, i) for a in acts for i in inits):
                        grid.rows.append({
                            "act": act, "init": i, "depth": depth, "width": width,
                            "norm": norm, "res": res, "seed": s,
                            "layer": list(range(1, len(st.names) + 1)), "g": st.grad[k],
                            "hl": list(range(1, n_act + 1)), "dead": 100 * st.dead[k],
                            "sat": 100 * st.saturated[k],
                            "bin": ab, "act_first": 100 * st.hist_act[0][k],
                            "act_last": 100 * st.hist_act[n_act - 1][k],
                            "gbin": gb, "grad_first": 100 * st.hist_grad[0][k],
                            "grad_last": 100 * st.hist_grad[n_act - 1][k]})
    grid.cpu_seconds = time.process_time() - t0
    return grid


def _filtered(*more: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"filter": _fig.matches(*KEYS)}, *more]


def playground_figure(grid: Grid) -> _fig.Figure:
    """Four linked views of the network the controls pick (see the module docstring)."""
    values = {k: list(dict.fromkeys(r[k] for r in grid.rows)) for k in KEYS}
    first, last = "layer 1", "last hidden layer"
    layer_colour = {"field": "which", "type": "nominal", "title": "",
                    "scale": {"domain": [first, last], "range": ["#1f77b4", "#d62728"]}}
    grads = {
        "title": "weight-gradient norm per layer", "width": 280, "height": 200,
        "transform": _filtered({"flatten": ["layer", "g"]},
                               {"filter": "isValid(datum.g) && datum.g > 0"}),
        "mark": {"type": "line", "point": True, "color": "#1f77b4"},
        "encoding": {
            "x": {"field": "layer", "type": "quantitative",
                  "title": "weight layer (1 = input side)",
                  "axis": {"tickMinStep": 1, "format": "d"}},
            "y": {"field": "g", "type": "quantitative", "title": "gradient norm (log)",
                  "axis": {"format": ".0e"},
                  "scale": {"type": "log", "domain": _log_domain([r["g"] for r in grid.rows])}},
            "tooltip": [{"field": "layer"}, {"field": "g", "format": ".2e"}]}}
    fractions = {
        "title": "dead and saturated units per layer", "width": 280, "height": 200,
        "transform": _filtered({"flatten": ["hl", "dead", "sat"]},
                               {"fold": ["dead", "sat"], "as": ["kind", "pct"]},
                               {"filter": "isValid(datum.pct)"},
                               {"calculate": "datum.kind == 'dead' ? 'dead (zero on the batch)'"
                                " : 'saturated (|z| in the flat tail)'", "as": "what"}),
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "hl", "type": "quantitative", "title": "hidden layer / block",
                  "axis": {"tickMinStep": 1, "format": "d"}},
            "y": {"field": "pct", "type": "quantitative", "title": "% of units / values",
                  "scale": {"domain": [0, 100]}},
            "color": {"field": "what", "type": "nominal", "title": "",
                      "scale": {"domain": ["dead (zero on the batch)",
                                           "saturated (|z| in the flat tail)"],
                                "range": ["#7f7f7f", "#ff7f0e"]}},
            "tooltip": [{"field": "hl", "title": "layer"}, {"field": "what"},
                        {"field": "pct", "format": ".1f", "title": "%"}]}}

    def hist(bins: str, a: str, b: str, title: str, xtitle: str) -> dict[str, Any]:
        return {
            "title": title, "width": 280, "height": 170,
            "transform": _filtered({"flatten": [bins, a, b]},
                                   {"fold": [a, b], "as": ["which_key", "pct"]},
                                   {"calculate": f"datum.which_key == '{a}' ? '{first}' : '{last}'",
                                    "as": "which"}),
            "mark": {"type": "line", "interpolate": "step", "strokeWidth": 2},
            "encoding": {
                "x": {"field": bins, "type": "quantitative", "title": xtitle},
                "y": {"field": "pct", "type": "quantitative", "title": "% of values"},
                "color": layer_colour,
                "tooltip": [{"field": bins, "format": ".2f"},
                            {"field": "pct", "format": ".1f", "title": "%"}]}}

    spec = {"data": {"values": grid.rows},
            "resolve": {"scale": {"color": "independent"}},
            "vconcat": [{"hconcat": [grads, fractions]},
                        {"hconcat": [hist("bin", "act_first", "act_last",
                                          "activation values", "activation (clipped to ±3)"),
                                     hist("gbin", "grad_first", "grad_last",
                                          "backpropagated gradients",
                                          "log10 |∂ℓ/∂activation| (clipped)")]}]}
    controls = [
        _fig.select("act", values["act"], label="activation"),
        _fig.select("init", values["init"], label="initialisation",
                    labels=[INIT_LABELS.get(i, i) for i in values["init"]]),
        _fig.radio("depth", sorted(values["depth"]), label="depth"),
        _fig.radio("width", sorted(values["width"]), label="width"),
        _fig.radio("norm", values["norm"], label="normalisation"),
        _fig.checkbox("res", label="residual connections"),
    ]
    return _fig.Figure(spec, controls, title="the playground: one network at initialisation")
