r"""Running statistics that stay accurate whatever the model's dtype and offset.

Every reduction is done in float32 at least (float16 and bfloat16 entries are
widened first, so that a sum of squares cannot overflow the half-precision
range) and redone in float64 where float32 squares would underflow or
overflow: the very regimes (a vanishing or exploding gradient) that a probe
exists to measure. Totals over passes are added up in float64.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Moments", "norm", "sum_squares"]

#: Sums of squares that float32 holds accurately (entries between ~1e-19 and ~1e19).
SAFE_SQUARES = (1e-30, 1e30)


def _wide(t: Tensor) -> Tensor:
    flat = t.detach().reshape(-1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    elif not flat.is_floating_point():
        flat = flat.double()
    return flat


def sum_squares(t: Tensor) -> float:
    r""":math:`\sum_i t_i^2`, in float32 where that is exact enough, else in float64."""
    flat = _wide(t)
    squares = float(torch.dot(flat, flat)) if flat.numel() else 0.0
    if flat.numel() and not SAFE_SQUARES[0] < squares < SAFE_SQUARES[1]:
        d = flat.double()
        squares = float(torch.dot(d, d))
    return squares


def norm(t: Tensor) -> float:
    r"""The Euclidean norm :math:`\lVert t \rVert_2` of every entry of ``t``."""
    return math.sqrt(sum_squares(t))


class Moments:
    r"""Count, mean and spread of every entry seen.

    .. math:: \mu = \frac{1}{n}\sum_i x_i, \qquad
              \sigma = \sqrt{\tfrac{1}{n}\sum_i (x_i - \mu)^2}

    Each batch's sum of squared deviations comes from its sum and sum of
    squares (fast) unless its spread is small next to its mean, where
    :math:`\sum x^2 - n\mu^2` would cancel (a saturated sigmoid's outputs,
    all near 1): there it is recomputed from the deviations themselves, in
    float64. Batches are pooled with Chan et al.'s update, in float64.
    A NaN or Inf anywhere shows in the sums (:meth:`finite`).
    """

    #: a batch whose variance is below this fraction of its mean square is recomputed
    CANCELLATION = 1e-2

    def __init__(self) -> None:
        self.n = 0
        self.s = 0.0
        self.ss = 0.0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the running mean
        self.last: tuple[int, float, float, float] | None = None  # the last batch's sums

    def add(self, t: Tensor, total: Tensor | None = None) -> bool:
        """Add every entry of ``t``; returns whether they were all finite."""
        flat = _wide(t)
        nb = flat.numel()
        if nb == 0:
            return True
        squares = float(torch.dot(flat, flat))
        if not SAFE_SQUARES[0] < squares < SAFE_SQUARES[1]:
            d = flat.double()
            s, squares = float(d.sum()), float(torch.dot(d, d))
        else:
            s = float(total) if total is not None else float(flat.sum())
        self.s += s
        self.ss += squares
        finite = math.isfinite(s) and math.isfinite(squares)
        mb = s / nb
        m2b = squares - s * mb
        if finite and m2b < self.CANCELLATION * squares:
            dev = flat.double() - mb
            m2b = float(torch.dot(dev, dev))
        self.last = (nb, s, squares, max(m2b, 0.0))
        self._pool(nb, mb, self.last[3])
        return finite

    def add_batch(self, batch: tuple[int, float, float, float]) -> None:
        """Add a batch another :class:`Moments` summed (its ``last``): the same tensor."""
        nb, s, squares, m2b = batch
        self.s += s
        self.ss += squares
        self.last = batch
        self._pool(nb, s / nb, m2b)

    def _pool(self, nb: int, mb: float, m2b: float) -> None:
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n

    def add_with_units(self, t: Tensor, nonnegative: bool = False,
                       unit_dim: int | None = None) -> tuple[bool, Tensor]:
        """Add ``t``; returns (all finite, which units have a nonzero entry).

        ``unit_dim`` is the dimension that indexes units (default: 1 of a
        tensor with two or more dimensions, 0 of a vector); every other
        dimension (batch, positions, sequence) is pooled. A unit with a
        nonzero sum has a nonzero entry; a zero sum means all zeros when ``t``
        is never negative, otherwise the units' extremes decide.
        """
        t = t.detach()
        if t.dim() == 0:
            return self.add(t), (t != 0).reshape(1)
        if unit_dim is None:
            unit_dim = 1 if t.dim() >= 2 else 0
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        dims = [d for d in range(t.dim()) if d != unit_dim]
        per_unit = t.sum(dim=dims) if dims else t
        ok = self.add(t, total=per_unit.sum())
        alive = per_unit != 0  # a NaN sum counts as alive: the unit is not silent
        if not nonnegative and not bool(alive.all()):
            if dims:
                alive = torch.logical_or(t.amax(dim=dims) != 0, t.amin(dim=dims) != 0)
            else:
                alive = t != 0
        return ok, alive

    def finite(self) -> bool:
        return math.isfinite(self.s) and math.isfinite(self.ss)

    def mean_std(self) -> tuple[float, float]:
        if self.n == 0:
            return math.nan, math.nan
        if not self.finite():
            return self.s / self.n, math.nan
        return self.mean, math.sqrt(max(self.m2 / self.n, 0.0))
