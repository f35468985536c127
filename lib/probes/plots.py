r"""Figures of a :class:`lib.probes.Monitor` history, in the book's house style.

* :func:`update_ratios` - :math:`\log_{10}` of each weight matrix's update-to-weight
  ratio :math:`\lVert\Delta W\rVert/\lVert W\rVert` against the training step, with
  the :math:`10^{-3}` guide line (Karpathy, makemore part 3);
* :func:`histogram_image` - a layer's activation (or gradient) histogram at each
  monitored step as one column of an image, bins up, steps across, colour the log
  count (fastai's "colorful dimension"): a distribution collapsing to zero or piling
  up at a saturated value shows as a band.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lib._checks import check_number
from lib.probes.monitor import UPDATE_RATIO_GUIDE, Monitor

__all__ = ["update_ratios", "histogram_image"]


def _check(mon: Any) -> Monitor:
    if not isinstance(mon, Monitor):
        raise TypeError(f"mon must be a lib.probes.Monitor, got {type(mon).__name__}")
    if not mon.history:
        raise ValueError("the monitor has recorded no step yet: call mon.step() in the loop")
    return mon


def update_ratios(ax: Any, mon: Monitor, *, names: list[str] | None = None,
                  guide: float = UPDATE_RATIO_GUIDE) -> Any:
    """Draw log10 update-to-weight ratio per parameter against the step; returns ``ax``."""
    mon = _check(mon)
    guide = check_number(guide, "guide", gt=0)
    if isinstance(names, str) or not (names is None or isinstance(names, (list, tuple))):
        raise TypeError(f"names must be a list of parameter names or None, "
                        f"got {type(names).__name__}")
    series = mon.series("update_ratio")
    chosen = list(names) if names is not None else list(series)
    unknown = [n for n in chosen if n not in series]
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; recorded: {', '.join(series)}")
    steps = mon.steps
    for i, name in enumerate(chosen):
        vals = [math.log10(v) if v > 0 else math.nan for v in series[name]]
        ax.plot(steps, vals, lw=1.2, label=name, color=f"C{i % 10}")
    ax.axhline(math.log10(guide), color="k", lw=0.8, ls="--")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"$\log_{10}\ \|\Delta W\| / \|W\|$")
    return ax


def histogram_image(ax: Any, mon: Monitor, layer: str, *, which: str = "act", bins: int = 40,
                    limit: float | None = None) -> Any:
    """Draw ``layer``'s histograms over the monitored steps as an image; returns the image.

    ``which`` is ``"act"`` (activations) or ``"grad"`` (output gradients, drawn as
    :math:`\\log_{10}|g|`, exact zeros left out); ``limit`` (> 0) is the range:
    :math:`[-\\text{limit}, \\text{limit}]` of the activations, the top
    :math:`\\log_{10}|g|` for gradients, with ten decades below it (default:
    from the samples).
    """
    mon = _check(mon)
    if limit is not None:
        limit = check_number(limit, "limit", gt=0)
    if which not in ("act", "grad"):
        raise ValueError(f"which must be 'act' or 'grad', got {which!r}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an int >= 2, got {bins!r}")
    cols = []
    for s in mon.steps:
        kept = (mon.history[s].act_samples if which == "act" else mon.history[s].grad_samples)
        v = kept.get(layer)
        if v is None:
            raise ValueError(f"no {which} samples of layer {layer!r} at step {s}; layers: "
                             f"{', '.join(kept) or 'none (monitor with samples > 0)'}")
        v = v.double()
        if which == "grad":
            v = v.abs()
            v = v[v > 0].log10()  # an exact zero has no log: not drawn at -30
        cols.append(v[torch.isfinite(v)])
    full = [c for c in cols if c.numel()]
    if not full:
        raise ValueError(f"the {which} samples of layer {layer!r} hold no finite "
                         f"{'nonzero ' if which == 'grad' else ''}value to draw")
    lo = min(float(c.min()) for c in full)
    hi = max(float(c.max()) for c in full)
    if limit is not None:
        lo, hi = (-limit, limit) if which == "act" else (math.log10(limit) - 10,
                                                           math.log10(limit))
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    image = np.stack([np.histogram(c.numpy(), bins=edges)[0] for c in cols], axis=1)
    first, last = mon.steps[0], mon.steps[-1]
    if last == first:  # one monitored step: a column one step wide, not a zero-width image
        first, last = first - 0.5, last + 0.5
    im = ax.imshow(np.log1p(image), origin="lower", aspect="auto", cmap="viridis",
                   extent=(first, last, edges[0], edges[-1]))
    ax.set_xlabel("training step")
    ax.set_ylabel("activation" if which == "act" else r"$\log_{10}|\partial L/\partial h|$")
    return im
