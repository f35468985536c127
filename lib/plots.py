"""The book's figures: one matplotlib style, one colour per activation.

Importing this module changes no matplotlib state: the house style is applied
explicitly, by :func:`use_style` (which :func:`lib.notebook.setup` calls at the
top of every chapter) or for a block of code by the context manager
:func:`style`. Every chapter draws with these helpers so that sigmoid is the
same colour on every page and per-layer quantities are always on a log axis,
layer 1 (nearest the input) on the left.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable, Iterator, Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lib._checks import check_int, check_number

__all__ = ["COLORS", "HOUSE_STYLE", "color", "use_style", "style", "layer_profile",
           "activation_panels", "training_curves", "histogram_grid", "new_figure"]

#: One colour per activation (and per init scheme), used in every chapter.
COLORS: dict[str, str] = {
    "identity": "#7f7f7f",
    "sigmoid": "#d62728",
    "tanh": "#ff7f0e",
    "relu": "#1f77b4",
    "leaky_relu": "#17becf",
    "prelu": "#9467bd",
    "rrelu": "#8c564b",
    "elu": "#2ca02c",
    "selu": "#bcbd22",
    "silu": "#e377c2",
    "swish": "#e377c2",
    "gelu": "#393b79",
    "softplus": "#637939",
    # init schemes and architectures, for comparisons that are not about activations
    "default": "#7f7f7f",
    "xavier": "#ff7f0e",
    "xavier_uniform": "#ff7f0e",
    "xavier_normal": "#ff7f0e",
    "he": "#1f77b4",
    "orthogonal": "#2ca02c",
    "lsuv": "#9467bd",
    "plain": "#d62728",
    "residual": "#1f77b4",
    "batch": "#2ca02c",
    "layer": "#9467bd",
}
_FALLBACK = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
             "#7f7f7f", "#bcbd22", "#17becf"]


def color(name: str, index: int = 0) -> str:
    """The house colour for ``name`` (an activation, init or architecture), else a cycle colour."""
    return COLORS.get(str(name).lower(), _FALLBACK[index % len(_FALLBACK)])


#: The house matplotlib settings (rcParams), applied by :func:`use_style`/:func:`style`.
HOUSE_STYLE: dict[str, Any] = {
    "figure.figsize": (7.0, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 120,
    # no "tight" bounding box: every house figure is laid out by constrained
    # layout (new_figure), which already fits labels and legends inside the
    # figure; "tight" re-measures every text on top of that (about 25 % of a
    # figure's rendering time, for the same picture)
    "savefig.bbox": "standard",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "font.size": 10,
    "svg.hashsalt": "gradient-flow",  # deterministic SVG ids
}


def use_style() -> None:
    """Apply the house matplotlib style for the rest of the session.

    Notebooks call it through :func:`lib.notebook.setup`; importing this module
    does not (a library that restyles its importer's figures is a surprise).
    """
    mpl.rcParams.update(HOUSE_STYLE)


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The house style inside a ``with`` block only; the caller's rcParams return after.

    Examples:
        >>> with style():
        ...     fig, ax = new_figure()
    """
    with mpl.rc_context(HOUSE_STYLE):
        yield


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 7.0, height: float = 3.4,
               **kw: Any) -> tuple[Figure, Any]:
    """``plt.subplots`` with the house size per panel row."""
    _check_count("ncols", ncols)
    _check_count("nrows", nrows)
    width = check_number(width, "width", gt=0, le=1000)
    height = check_number(height, "height", gt=0, le=1000)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), layout="constrained", **kw)
    return fig, axes


def _check_count(name: str, v: Any) -> None:
    check_int(v, name, ge=1)


def _to_numpy(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=float)


def layer_profile(ax: Axes, values: Sequence[float], *, label: str | None = None,
                  key: str | None = None, logy: bool = True, ylabel: str = "gradient norm",
                  xlabel: str = "layer (1 = nearest the input)", style: str = "-o",
                  index: int = 0, **kw: Any) -> Axes:
    """Plot one per-layer quantity against layer number (1-based), log scale by default.

    ``key`` picks the house colour (an activation or init name); it defaults to ``label``.
    Zero or negative values cannot sit on a log axis and are left out, as are NaN
    and infinite values (a gap in the line, never a point at the axis edge).
    """
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    try:
        y = _to_numpy(values)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"values must be a sequence of numbers, got {type(values).__name__}") from exc
    if y.ndim != 1:
        raise ValueError(f"values must be one number per layer (1-D), got shape {y.shape}")
    x = np.arange(1, len(y) + 1)
    y = np.where(np.isfinite(y), y, np.nan)
    if logy:
        y = np.where(y > 0, y, np.nan)
        ax.set_yscale("log")
    kw.setdefault("markersize", 3)
    ax.plot(x, y, style, color=kw.pop("color", color(key or label or "", index)), label=label, **kw)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))  # layers are whole numbers
    return ax


def activation_panels(names: Iterable[str], *, x: Any = None, params: Mapping[str, dict] | None = None,
                      title: bool = True) -> tuple[Figure, Any]:
    """Two panels: each activation f(x) on the left and its closed-form f'(x) on the right."""
    from lib import activations as _acts  # lazy: plots sits beside, not above, activations

    if isinstance(names, str):
        raise TypeError(f"names must be a list of activation names, not the string {names!r}")

    x = torch.linspace(-5, 5, 801, dtype=torch.float64) if x is None else torch.as_tensor(x)
    fig, (a, b) = new_figure(2, width=9.0)
    for i, name in enumerate(names):
        act = _acts.get(name, **((params or {}).get(name, {})))
        shown = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in act.params.items() if k != "num_parameters"]
        label = f"{name} ({', '.join(shown)})" if shown else name
        a.plot(x, act.forward(x), color=color(name, i), label=label)
        b.plot(x, act.derivative(x), color=color(name, i), label=label)
    a.set_xlabel("pre-activation z")
    a.set_ylabel("f(z)")
    b.set_xlabel("pre-activation z")
    b.set_ylabel("f'(z)")
    if title:
        a.set_title("activation")
        b.set_title("derivative (closed form)")
    a.legend()
    return fig, (a, b)


def training_curves(histories: Mapping[str, Any], *, keys: Mapping[str, str] | None = None,
                    logy: bool = True, smooth: int = 1) -> tuple[Figure, Any]:
    """Training loss per step (left) and test accuracy (right) for several runs.

    ``histories`` maps a label to a :class:`lib.training.History`; ``keys`` maps a
    label to the colour key (defaults to the label itself); ``smooth`` averages
    the loss over that many steps.
    """
    if not isinstance(histories, Mapping):
        raise TypeError(f"histories must map a label to a History, got {type(histories).__name__}")
    _check_count("smooth", smooth)
    fig, (a, b) = new_figure(2, width=9.0)
    for i, (label, h) in enumerate(histories.items()):
        c = color((keys or {}).get(label, label), i)
        loss = np.asarray(h.loss, dtype=float)
        if smooth > 1 and len(loss) >= smooth:
            loss = np.convolve(loss, np.ones(smooth) / smooth, mode="valid")
        a.plot(np.arange(1, len(loss) + 1), loss, color=c, label=label)
        if h.test_acc and not all(math.isnan(v) for v in h.test_acc):
            b.plot(h.eval_steps, h.test_acc, "-o", markersize=3, color=c, label=label)
    if logy:
        a.set_yscale("log")
    a.set_xlabel("step")
    a.set_ylabel("training loss")
    b.set_xlabel("step")
    b.set_ylabel("test accuracy")
    b.set_ylim(0, 1.02)
    a.legend()
    return fig, (a, b)


def histogram_grid(samples: Mapping[str, Any], *, bins: int = 60, key: str | None = None,
                   xlabel: str = "value", ncols: int = 4, log: bool = False,
                   range_: tuple[float, float] | None = None) -> tuple[Figure, Any]:
    """One small histogram per layer (UvA-style), e.g. of activations or gradients.

    NaN and infinite samples cannot be binned: they are left out of the
    histogram and counted in the panel's title (``"layer3 (12 non-finite)"``),
    so an overflow is shown, not hidden or turned into an error.
    """
    if not isinstance(samples, Mapping):
        raise TypeError(f"samples must map a layer name to values, got {type(samples).__name__}")
    _check_count("bins", bins)
    _check_count("ncols", ncols)
    if range_ is not None:
        if not isinstance(range_, (tuple, list)) or len(range_) != 2:
            raise TypeError(f"range_ must be a (low, high) pair or None, got {range_!r}")
        lo = check_number(range_[0], "range_[0]")
        hi = check_number(range_[1], "range_[1]", gt=lo)
        range_ = (lo, hi)
    n = len(samples)
    if n == 0:
        raise ValueError("histogram_grid needs at least one layer of samples")
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 1.9 * nrows), layout="constrained",
                             squeeze=False)
    for i, (ax, (name, v)) in enumerate(zip(axes.flat, samples.items())):
        try:
            flat = _to_numpy(v).ravel()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"samples[{name!r}] must be numbers, got {type(v).__name__}") from exc
        finite = np.isfinite(flat)
        bad = int(flat.size - finite.sum())
        ax.hist(flat[finite], bins=bins, color=color(key or name), range=range_, log=log)
        ax.set_title(f"{name} ({bad} non-finite)" if bad else name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        if i % ncols == 0:  # the count axis once per row
            ax.set_ylabel("count", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes
