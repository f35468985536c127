"""Gaussian moments of an activation, :func:`gaussian_moments`: the one integral
both halves of :mod:`lib.init` need (a scheme's gain, the variance theory).

Part of :mod:`lib.init` (see there); import from ``lib.init``.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from lib import activations as _acts
from lib._checks import check_int, check_number

__all__ = ["gaussian_moments"]

MIN_CELLS = 200


def gaussian_moments(activation: str | _acts.Activation, q: float, *, cells: int = 24000,
                     **activation_params: Any) -> tuple[float, float, float]:
    r"""The Gaussian moments :math:`(\mathbb{E}[f(z)], \mathbb{E}[f(z)^2], \mathbb{E}[f'(z)^2])`
    for :math:`z \sim N(0, q)`.

    .. math::

        \mathbb{E}[g(z)] = \int g(\sqrt q\, u)\, \varphi(u)\, du
        \approx \sum_{k=1}^{K} w_k\, g(\sqrt q\, u_k),
        \qquad u_k = -12 + (k - \tfrac12) h,\quad h = 24 / K,

    the midpoint rule over :math:`\pm 12` standard deviations with weights
    :math:`w_k \propto \varphi(u_k)` normalised to sum to 1. ``cells`` (:math:`K`)
    must be even, so that 0 falls on a cell boundary: the kink of ReLU-like
    functions and the jump of their derivative at 0 then cost no accuracy.

    Args:
        activation: a name from :func:`lib.activations.names` or an Activation.
        q: the variance, a finite number >= 0 (``q = 0`` gives the values at 0).
        cells: an even number of cells, at least :data:`MIN_CELLS`.
    """
    act = _acts.get(activation, **activation_params)
    q = check_number(q, "variance q", ge=0, float32=False)
    cells = check_int(cells, "cells", ge=MIN_CELLS)
    if cells % 2:
        raise ValueError(f"cells must be even (0 on a cell boundary), got {cells}")
    if q == 0:
        z0 = torch.zeros(1, dtype=torch.float64)
        return (float(act.forward(z0)), float(act.forward(z0) ** 2), float(act.derivative(z0) ** 2))
    h = 24.0 / cells
    u = torch.arange(cells, dtype=torch.float64) * h - 12.0 + h / 2  # standard-normal midpoints
    w = torch.exp(-0.5 * u * u) * h / math.sqrt(2 * math.pi)
    w = w / w.sum()
    z = u * math.sqrt(q)
    f = act.forward(z)
    d = act.derivative(z)
    return float(w @ f), float(w @ f**2), float(w @ d**2)
