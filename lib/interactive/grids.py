"""The book's precomputed grids and the interactive figures drawn from them.

Each ``*_grid`` function measures one family of networks at every point of a
small grid, at build time, seeded, with the models of one shape stacked into
one computation (:func:`lib.interactive.stacked_stats`, or
:func:`lib.population.train` for training). Each returns a :class:`Grid`: one
row per grid point (arrays per layer inside), the CPU seconds it took, and
:meth:`Grid.row` to read a point back, so the numbers a chapter quotes next
to a figure come from the very rows the figure draws. Each ``*_figure``
function turns a grid into a :class:`~lib.interactive.figure.Figure`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from lib import init as _init
from lib import networks as _networks
from lib import seeds as _seeds
from lib.interactive import figure as _fig
from lib.interactive._probe import init_states, stacked_stats

__all__ = ["Grid", "profile_grid", "profile_figure", "phase_grid", "phase_figure",
           "variance_grid", "variance_figure", "dead_grid", "dead_figure", "INIT_LABELS"]

#: How the figures name the init schemes.
INIT_LABELS = {"default": "PyTorch default", "xavier_normal": "Xavier", "he": "He",
               "orthogonal": "orthogonal"}


@dataclass
class Grid:
    """Rows of a precomputed grid: ``keys`` identify a point, other fields hold its data."""

    keys: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    cpu_seconds: float = 0.0

    def row(self, **point: Any) -> dict[str, Any]:
        """The row at ``point`` (every key given), e.g. ``grid.row(act="relu", depth=10)``."""
        if set(point) != set(self.keys):
            raise ValueError(f"give exactly the keys {', '.join(self.keys)}; got "
                             f"{', '.join(point) or 'none'}")
        for r in self.rows:
            if all(r[k] == v or (isinstance(v, float) and math.isclose(r[k], v))
                   for k, v in point.items()):
                return r
        raise ValueError(f"no grid point {point}")


def _seed(seed: int, purpose: str) -> int:
    return _seeds.member_seeds(1, purpose, base=seed)[0]


def _check_xy(x: Any, y: Any) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor of shape (batch, features)")
    if not isinstance(y, Tensor) or y.shape != x.shape[:1] or y.is_floating_point():
        raise TypeError("y must be an integer tensor of class labels of shape (batch,)")


def _names(values: Any, name: str) -> list[Any]:
    if isinstance(values, np.ndarray) and values.ndim == 1:
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty list")
    return list(values)


def _log_domain(values: Any) -> list[float]:
    """A log-axis domain covering every finite positive value, widened to whole decades."""
    v = np.concatenate([np.asarray(u, dtype=float).ravel() for u in values]) if len(values) \
        else np.empty(0)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return [1e-3, 1.0]
    return [10.0 ** math.floor(math.log10(v.min())), 10.0 ** math.ceil(math.log10(v.max()))]


# -- intro: the per-layer gradient profile ---------------------------------------------------

def profile_grid(x: Tensor, y: Tensor, *, activations: Sequence[str], inits: Sequence[str],
                 depths: Sequence[int], width: int, seed: int) -> Grid:
    """Weight-gradient norm of every hidden layer at initialisation, per (act, init, depth).

    The model at ``(act, init, depth)`` is ``lib.networks.mlp(depth, width, act,
    init=init, seed=s)`` with one seed ``s`` per depth; each depth is one stacked
    computation. Rows:
    ``act, init, depth``, ``seed`` and ``layer`` (1..depth), ``g`` (norms), ``ratio`` (first / last).
    """
    _check_xy(x, y)
    t0 = time.process_time()
    grid = Grid(("act", "init", "depth"))
    acts, inits = _names(activations, "activations"), _names(inits, "inits")
    for depth in _names(depths, "depths"):
        # One seed per depth: every activation and init of a depth starts from the same draws.
        s = _seed(seed, f"profile-{depth}")
        net = _networks.mlp(depth, width, acts[0], seed=s, in_features=x.shape[1])
        states = init_states(net, inits, seed=s)
        st = stacked_stats(net, x, y, states=states * len(acts),
                           activations=[a for a in acts for _ in inits])
        for k, (act, i) in enumerate((a, i) for a in acts for i in inits):
            g = st.grad[k, :depth]
            grid.rows.append({"act": act, "init": i, "depth": depth, "seed": s,
                              "layer": list(range(1, depth + 1)), "g": g,
                              "ratio": float(g[0] / g[-1])})
    grid.cpu_seconds = time.process_time() - t0
    return grid


def profile_figure(grid: Grid) -> _fig.Figure:
    """Gradient norm per layer for the chosen activation, init and depth (log axis)."""
    acts = list(dict.fromkeys(r["act"] for r in grid.rows))
    inits = list(dict.fromkeys(r["init"] for r in grid.rows))
    depths = sorted({r["depth"] for r in grid.rows})
    spec = {
        "data": {"values": grid.rows},
        "transform": [{"filter": _fig.matches("act", "init", "depth")},
                      {"flatten": ["layer", "g"]}, {"filter": "isValid(datum.g) && datum.g > 0"}],
        "mark": {"type": "line", "point": True},
        "width": 520, "height": 260,
        "encoding": {
            "x": {"field": "layer", "type": "quantitative", "title": "layer l (1 = input side)",
                  "axis": {"tickMinStep": 1, "format": "d"},
                  "scale": {"domain": [1, depths[-1]]}},
            "y": {"field": "g", "type": "quantitative", "title": "gradient norm of layer l (log)",
                  "axis": {"format": ".0e"},
                  "scale": {"type": "log", "domain": _log_domain([r["g"] for r in grid.rows])}},
            "color": {"field": "act", "type": "nominal", "title": "activation",
                      "scale": _fig.color_scale(acts)},
            "tooltip": [{"field": "layer"}, {"field": "g", "format": ".2e"}]},
    }
    controls = [_fig.select("act", acts, label="activation"),
                _fig.select("init", inits, label="initialisation",
                            labels=[INIT_LABELS.get(i, i) for i in inits]),
                _fig.slider("depth", depths, label="depth", value=depths[len(depths) // 2])]
    return _fig.Figure(spec, controls, title="gradient norm per layer at initialisation")


# -- chapter 2: the phase picture -------------------------------------------------------------

def phase_grid(x: Tensor, y: Tensor, *, sigmas: Sequence[float], bias_scales: Sequence[float],
               depths: Sequence[int], width: int, seed: int,
               activation: str = "tanh") -> Grid:
    """log10 ||delta_1|| / ||delta_D|| for weights N(0, sigma^2/n), biases N(0, sigma_b^2).

    Runs in float64 (the ratios span tens of decades); every (sigma, sigma_b) of one
    depth is one stacked computation. The point (sigma, 0) of a depth is
    ``lib.networks.mlp(depth, width, activation, init="normal", seed=seed,
    init_params={"std": sigma / sqrt(width)})`` in float64 with zero biases.
    Rows: ``sb, depth``, ``seed`` and ``sigma`` (list),
    ``ratio`` (log10 of the first / last error-signal norm), ``first`` (log10 of
    the first layer's weight-gradient norm).
    """
    _check_xy(x, y)
    t0 = time.process_time()
    sigmas = [float(s) for s in _names(sigmas, "sigmas")]
    sbs = [float(s) for s in _names(bias_scales, "bias_scales")]
    grid = Grid(("sb", "depth"))
    xd = x.double()
    for depth in _names(depths, "depths"):
        s = _seed(seed, f"phase-{depth}")
        net = _networks.mlp(depth, width, activation, seed=s, in_features=x.shape[1])
        # N(0, sigma^2/n) is sigma times the N(0, 1/n) draws, so one draw serves every sigma;
        # the biases are the same N(0, 1) draws times sigma_b at every point of one depth.
        # Drawn in float32 and then widened, as mlp(...).double() would be.
        (unit,) = init_states(net, ["normal"], seed=s,
                              init_params=[{"std": 1 / math.sqrt(width)}])
        net = net.double()
        unit = {n: p.double() for n, p in unit.items()}
        gen = torch.Generator().manual_seed(_seed(seed, f"phase-bias-{depth}"))
        noise = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype)
                 for n, p in unit.items() if n.endswith("bias")}
        states = [{n: (noise[n] * sb if n in noise else p * sigma) for n, p in unit.items()}
                  for sb in sbs for sigma in sigmas]
        st = stacked_stats(net, xd, y, states=states)
        for j, sb in enumerate(sbs):
            part = slice(j * len(sigmas), (j + 1) * len(sigmas))
            d, g = st.delta[part], st.grad[part]
            grid.rows.append({"sb": sb, "depth": depth, "seed": s, "sigma": sigmas,
                              "ratio": np.log10(d[:, 0] / d[:, depth - 1]),
                              "first": np.log10(g[:, 0])})
    grid.cpu_seconds = time.process_time() - t0
    return grid


def phase_figure(grid: Grid) -> _fig.Figure:
    """Heat map over the weight variance sigma_w^2 and depth; a slider sets sigma_b."""
    sbs = sorted({r["sb"] for r in grid.rows})
    lim = max(float(np.nanmax(np.abs(r["ratio"]))) for r in grid.rows)
    spec = {
        "data": {"values": grid.rows},
        "transform": [{"filter": _fig.matches("sb")}, {"flatten": ["sigma", "ratio", "first"]},
                      {"calculate": "format(datum.sigma * datum.sigma, '.2f')",
                       "as": "sigma_label"}],
        "mark": "rect", "width": 420, "height": 220,
        "encoding": {
            "x": {"field": "sigma_label", "type": "ordinal", "sort": None,
                  "title": "σ_w² (weights N(0, σ_w²/n))"},
            "y": {"field": "depth", "type": "ordinal", "sort": "descending",
                  "title": "depth D (hidden layers)"},
            "color": {"field": "ratio", "type": "quantitative",
                      "title": ["log10 ‖δ₁‖/‖δ_D‖"],
                      "scale": {"scheme": "redblue", "reverse": True, "domainMid": 0,
                                "domain": [-lim, lim]}},
            "tooltip": [{"field": "sigma_label", "title": "σ_w²"},
                        {"field": "depth", "title": "D"},
                        {"field": "ratio", "format": ".1f", "title": "log10 ratio"},
                        {"field": "first", "format": ".1f", "title": "log10 ‖∂ℓ/∂W₁‖"}]},
    }
    controls = ([_fig.slider("sb", sbs, label="bias scale σ_b")] if len(sbs) > 1 else
                [_fig.radio("sb", sbs, label="bias scale σ_b")])
    return _fig.Figure(spec, controls, title="vanishing (blue) and exploding (red) gradients")


# -- chapter 5: variance propagation per init scheme -------------------------------------------

def variance_grid(x: Tensor, y: Tensor, *, activations: Sequence[str], inits: Sequence[str],
                  depth: int, width: int, seed: int) -> Grid:
    """Measured and predicted (:func:`lib.init.predict`) variances per layer, per act and init.

    The model at ``(act, init)`` is ``lib.networks.mlp(depth, width, act, init=init,
    seed=seed)`` (the row's ``seed``). Rows: ``act, init``, ``seed`` and ``layer``,
    ``fwd`` (Var of the pre-activation), ``fwd_th``, ``bwd`` (Var of dL/d pre-activation
    relative to the last hidden layer, from the layer-output gradient norms), ``bwd_th``.
    """
    _check_xy(x, y)
    t0 = time.process_time()
    grid = Grid(("act", "init"))
    input_var = float((x.double() ** 2).mean())
    acts, inits = _names(activations, "activations"), _names(inits, "inits")
    s = _seed(seed, "variance")
    net = _networks.mlp(depth, width, acts[0], seed=s, in_features=x.shape[1])
    st = stacked_stats(net, x, y, states=init_states(net, inits, seed=s) * len(acts),
                       activations=[a for a in acts for _ in inits])
    for k, (act, i) in enumerate((a, i) for a in acts for i in inits):
        pred = _init.predict(act, i, width, depth, input_var=input_var)
        g2 = st.delta[k, :depth] ** 2
        grid.rows.append({"act": act, "init": i, "seed": s, "layer": list(range(1, depth + 1)),
                          "fwd": st.pre_std[k] ** 2, "fwd_th": pred.pre_var,
                          "bwd": g2 / g2[-1], "bwd_th": pred.grad_var})
    grid.cpu_seconds = time.process_time() - t0
    return grid


def variance_figure(grid: Grid) -> _fig.Figure:
    """Forward and backward variance per layer: measured (dots) and theory (line)."""
    acts = list(dict.fromkeys(r["act"] for r in grid.rows))
    inits = list(dict.fromkeys(r["init"] for r in grid.rows))
    base = [{"filter": _fig.matches("act", "init")},
            {"flatten": ["layer", "fwd", "fwd_th", "bwd", "bwd_th"]}]

    def panel(meas: str, th: str, title: str) -> dict[str, Any]:
        dom = _log_domain([r[meas] for r in grid.rows] + [r[th] for r in grid.rows])
        y = {"type": "quantitative", "scale": {"type": "log", "domain": dom}, "title": title,
             "axis": {"format": ".0e"}}
        x = {"field": "layer", "type": "quantitative", "title": "layer l",
             "axis": {"tickMinStep": 1, "format": "d"}}
        colour = {"field": "init", "type": "nominal", "title": "init",
                  "scale": _fig.color_scale(inits)}
        return {"width": 260, "height": 220, "transform": base, "layer": [
            {"mark": {"type": "line", "strokeDash": [5, 3]},
             "transform": [{"filter": f"isValid(datum.{th}) && datum.{th} > 0"}],
             "encoding": {"x": x, "y": {"field": th, **y}, "color": colour}},
            {"mark": {"type": "point", "filled": True, "size": 18},
             "transform": [{"filter": f"isValid(datum.{meas}) && datum.{meas} > 0"}],
             "encoding": {"x": x, "y": {"field": meas, **y}, "color": colour,
                          "tooltip": [{"field": "layer"},
                                      {"field": meas, "format": ".3g", "title": "measured"},
                                      {"field": th, "format": ".3g", "title": "theory"}]}}]}

    spec = {"data": {"values": grid.rows},
            "hconcat": [panel("fwd", "fwd_th", "forward: Var[z_l] (log)"),
                        panel("bwd", "bwd_th", "backward: Var[δ_l] / Var[δ_L] (log)")]}
    controls = [_fig.radio("act", acts, label="activation"),
                _fig.select("init", inits, label="initialisation",
                            labels=[INIT_LABELS.get(i, i) for i in inits])]
    return _fig.Figure(spec, controls, title="variance per layer: measured (dots), theory (dashed)")


# -- chapter 4: dead units over training --------------------------------------------------------

def dead_grid(data: Any, *, activations: Sequence[str], lrs: Sequence[float], depth: int,
              width: int, steps: int, probe_every: int, n_seeds: int, seed: int,
              optimizer: str = "adam") -> Grid:
    """Dead-unit fraction of the hidden layers during training, per activation and lr.

    Trains every (activation, lr, seed) member at once with
    :func:`lib.population.train` (He init). Rows: ``act, lr`` and ``step``, ``dead``
    (median over seeds of the mean over hidden layers, in %), ``lo``/``hi`` (the
    seeds' min and max).
    """
    from lib import population as _population  # lazy: training is not needed to draw

    t0 = time.process_time()
    acts = _names(activations, "activations")
    build = {a: (lambda s, a=a: _networks.mlp(depth, width, a, init="he", seed=s,
                                              in_features=data.n_features))
             for a in acts}
    members = _seeds.member_seeds(n_seeds, "interactive-dead", base=seed)
    pop = _population.train(build, data, members, lrs=[float(v) for v in lrs], steps=steps,
                            optimizer=optimizer, probe_every=probe_every, probes=("dead",),
                            eval_every=steps,
                            progress=False)
    dead = pop.probes["dead"].double()[:, :, :depth].mean(2) * 100  # (members, probe steps)
    grid = Grid(("act", "lr"))
    for a in acts:
        for lr in pop.lrs:
            d = dead[pop.select(a, lr)].numpy()
            grid.rows.append({"act": a, "lr": float(lr), "step": list(pop.probe_steps),
                              "dead": np.median(d, 0), "lo": d.min(0), "hi": d.max(0)})
    grid.cpu_seconds = time.process_time() - t0
    return grid


def dead_figure(grid: Grid) -> _fig.Figure:
    """Dead units (%) against training step, one line per activation; a menu picks the lr."""
    acts = list(dict.fromkeys(r["act"] for r in grid.rows))
    lrs = sorted({r["lr"] for r in grid.rows})
    x = {"field": "step", "type": "quantitative", "title": "training step"}
    colour = {"field": "act", "type": "nominal", "title": "activation",
              "scale": _fig.color_scale(acts)}
    spec = {
        "data": {"values": grid.rows},
        "transform": [{"filter": _fig.matches("lr")},
                      {"flatten": ["step", "dead", "lo", "hi"]}],
        "width": 520, "height": 240,
        "layer": [
            {"mark": {"type": "area", "opacity": 0.15},
             "encoding": {"x": x, "y": {"field": "lo", "type": "quantitative"},
                          "y2": {"field": "hi"}, "color": colour}},
            {"mark": {"type": "line", "point": True},
             "encoding": {"x": x, "y": {"field": "dead", "type": "quantitative",
                                        "title": "dead units in the batch (%)",
                                        "scale": {"domain": [0, 100]}},
                          "color": colour,
                          "tooltip": [{"field": "act"}, {"field": "step"},
                                      {"field": "dead", "format": ".1f", "title": "dead %"}]}}],
    }
    controls = [_fig.radio("lr", lrs, label="learning rate (Adam)", value=lrs[-1],
                           labels=[f"{v:g}" for v in lrs])]
    return _fig.Figure(spec, controls, title="dead units during training, per activation")
