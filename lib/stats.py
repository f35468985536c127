"""Statistics over seeds: the numbers and the words behind every verdict.

A trained comparison in the book rests on a population of seeds (see
:mod:`lib.population`), never on one run. This module turns the values of one
arm into a :class:`Summary` (median and interval), and two arms into a
:class:`Comparison` whose verdict says "A beats B" only when the evidence
separates them, and "no clear difference" otherwise. Chapters glue
``Comparison.sentence`` (or branch on ``Comparison.verdict``) instead of typing
their conclusion.

**Interval.** ``method="bootstrap"`` (default) is the percentile bootstrap of
the median: draw ``n`` values with replacement from the ``n`` seeds'
values, ``n_boot`` times, with a private seeded generator (so the interval
is deterministic), take each draw's median :math:`\\tilde m_b`, and report

.. math::

    [\\mathrm{lo}, \\mathrm{hi}] = \\bigl[Q_{(1-\\ell)/2}(\\tilde m),\\;
    Q_{(1+\\ell)/2}(\\tilde m)\\bigr]

at level :math:`\\ell` (default 0.95), quantiles taken as order statistics
(no interpolation, so infinite values, e.g. diverged losses, stay usable).
``method="iqr"`` reports the interquartile range of the values instead (a
description of the spread, not a confidence interval). With 5 seeds the
bootstrap interval is wide (it often spans from the second smallest to the
second largest value): that is the honest price of 5 seeds.

**Comparison.** Two arms are *separated* when their intervals do not overlap,
or, for paired values (member ``i`` of both arms shares seed ``i``: same
initial draw stream, same batches), when the exact two-sided sign test over
the ``n`` paired differences :math:`d_i = a_i - b_i` (zeros dropped, ``k`` of
the remaining ``n'`` positive) gives

.. math::

    p = \\min\\Bigl(1,\\; 2 \\min\\bigl(P[K \\le k],\\, P[K \\ge k]\\bigr)\\Bigr)
    < \\alpha, \\qquad K \\sim \\mathrm{Binomial}(n', 1/2).

With 5 pairs the smallest possible ``p`` is 1/16 = 0.0625, so the sign test
alone cannot separate 5 seeds at ``alpha = 0.05``; use 6 or more seeds if
the arms are paired and close.

Examples::

    >>> from lib import stats
    >>> s = stats.summary([0.88, 0.86, 0.90, 0.87, 0.89])
    >>> f"{s:.0%}"
    '88 % [86, 90], 5 seeds'
    >>> c = stats.compare([0.9] * 5, [0.5] * 5, higher_is_better=True,
    ...                   names=("ReLU", "sigmoid"))
    >>> c.verdict, c.sentence
    ('a', 'ReLU beats sigmoid')
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Summary", "Comparison", "summary", "compare", "sign_test", "best_setting",
           "VERDICTS"]

#: The machine-readable verdicts of :func:`compare`.
VERDICTS = ("a", "b", "none")
_METHODS = ("bootstrap", "iqr")


def _float_array(values: Any, name: str, kind: str) -> np.ndarray:
    """``values`` (numbers, a numpy array or a tensor) as float64, or a TypeError
    naming ``name`` as "``kind`` of numbers" (e.g. "a sequence")."""
    if isinstance(values, (str, bytes)) or values is None:
        raise TypeError(f"{name} must be {kind} of numbers, got {type(values).__name__}")
    try:
        return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values,
                          dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {kind} of real numbers") from None


def _values(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-D float64 array, or a clear error naming ``name``."""
    arr = _float_array(values, name, "a sequence")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per seed), "
                         f"got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one value")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN (a diverged run?): replace it by the value "
                         "it stands for (e.g. inf for a loss) or drop it explicitly")
    return arr


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) \
            or not 0 < float(level) < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    return float(level)


@dataclass(frozen=True)
class Summary:
    """Median and interval of one arm's values over ``n`` seeds.

    Formatting applies a number format to all three numbers: ``f"{s:.0%}"``
    gives ``"88 % [86, 90], 5 seeds"`` (percent: the sign once, after the
    median), ``f"{s:.3f}"`` gives ``"0.412 [0.398, 0.431], 5 seeds"``.
    """

    median: float
    lo: float
    hi: float
    n: int
    method: str = "bootstrap"
    level: float = 0.95

    def __format__(self, spec: str) -> str:
        spec = spec or ".3g"
        if spec.endswith("%"):
            num = spec[:-1] + "f"
            m, lo, hi = (format(100 * v, num) for v in (self.median, self.lo, self.hi))
            body = f"{m} % [{lo}, {hi}]"
        else:
            m, lo, hi = (format(v, spec) for v in (self.median, self.lo, self.hi))
            body = f"{m} [{lo}, {hi}]"
        return f"{body}, {self.n} seed{'s' if self.n != 1 else ''}"

    def __str__(self) -> str:
        return format(self, "")

    def overlaps(self, other: "Summary") -> bool:
        """True if the two intervals share at least one point."""
        return self.lo <= other.hi and other.lo <= self.hi


def summary(values: Sequence[float], *, method: str = "bootstrap", level: float = 0.95,
            n_boot: int = 2000, seed: int = 0) -> Summary:
    """Median of ``values`` (one per seed) with a bootstrap or IQR interval.

    Args:
        values: one number per seed (list, numpy array or tensor); NaN is
            refused, infinities are allowed.
        method: ``"bootstrap"`` (percentile bootstrap of the median at
            ``level``) or ``"iqr"`` (25th to 75th percentile of the values).
        level: confidence level of the bootstrap interval.
        n_boot: number of bootstrap draws.
        seed: seeds the private bootstrap generator (deterministic output).

    Shape:
        values: ``(n,)``.
    """
    arr = _values(values, "values")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}; got {method!r}")
    level = _check_level(level)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be an int >= 1, got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    median = float(np.median(arr))
    if method == "iqr":
        lo, hi = np.percentile(arr, [25, 75], method="linear" if np.isfinite(arr).all()
                               else "lower")
        return Summary(median, float(lo), float(hi), int(arr.size), "iqr", 0.5)
    rng = np.random.default_rng(seed)
    draws = arr[rng.integers(0, arr.size, size=(int(n_boot), arr.size))]
    medians = np.sort(np.median(draws, axis=1))
    k_lo = int(math.floor((1 - level) / 2 * (n_boot - 1)))
    k_hi = int(math.ceil((1 + level) / 2 * (n_boot - 1)))
    return Summary(median, float(medians[k_lo]), float(medians[k_hi]), int(arr.size),
                   "bootstrap", level)


def best_setting(values: Any, *, higher_is_better: bool = False) -> int:
    """Index of the best setting (row) of per-seed ``values``, shape ``(settings, seeds)``.

    The best setting is the one at which the most seeds *got there* (a finite
    value; a diverged run or one that never reached a target is ``inf``, or
    NaN), and among those the best median over seeds; ties go to the first
    row. Ranking by the median alone would pick a learning rate that is fast
    on most seeds but loses some to divergence; a fair rate for an arm is
    one it can rely on.

    Examples:
        >>> best_setting([[9, 10, float("inf")], [14, 15, 16]])  # steps to a target
        1
        >>> best_setting([[0.9, 0.8], [0.7, 0.95]], higher_is_better=True)
        0
    """
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise TypeError(f"higher_is_better must be True or False, got {higher_is_better!r}")
    arr = _float_array(values, "values", "an array")
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError("values must be two-dimensional, (settings, seeds), with at least "
                         f"one of each; got shape {arr.shape}")
    finite = np.isfinite(arr)
    worst = -np.inf if higher_is_better else np.inf
    med = np.median(np.where(finite, arr, worst), axis=1)
    if higher_is_better:
        med = -med
    keys = [(-int(n), float(m), i) for i, (n, m) in enumerate(zip(finite.sum(1), med))]
    return min(keys)[2]


def sign_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, int, int]:
    """Exact two-sided sign test of paired values: ``(p, wins of a, pairs used)``.

    A pair whose values are equal is dropped. With no pair left, ``p = 1``.
    "Wins of a" counts pairs with ``a_i > b_i``.
    """
    x, y = _values(a, "a"), _values(b, "b")
    if x.size != y.size:
        raise ValueError(f"paired values need the same length: len(a) = {x.size}, "
                         f"len(b) = {y.size}")
    d = x - y
    d = d[~np.isnan(d) & (d != 0)]  # inf - inf is NaN: a tie
    n, k = int(d.size), int((d > 0).sum())
    if n == 0:
        return 1.0, 0, 0
    cdf = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    sf = sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n
    return min(1.0, 2 * min(cdf, sf)), k, n


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found.

    ``verdict`` is ``"a"`` (A beats B), ``"b"`` (B beats A) or ``"none"`` (no
    clear difference); ``sentence`` says it in words with the arms' names;
    ``separated_by`` names the evidence (``"intervals"``, ``"sign test"`` or
    ``None``); ``p`` is the sign test's p-value when the values are paired.
    """

    verdict: str
    sentence: str
    a: Summary
    b: Summary
    names: tuple[str, str]
    higher_is_better: bool
    separated_by: str | None
    p: float | None

    @property
    def winner(self) -> str | None:
        """The name of the better arm, or None when there is no clear difference."""
        return {"a": self.names[0], "b": self.names[1]}.get(self.verdict)

    def __str__(self) -> str:
        return self.sentence


def compare(a: Sequence[float], b: Sequence[float], *, higher_is_better: bool,
            names: tuple[str, str] = ("A", "B"), paired: bool = False,
            level: float = 0.95, alpha: float = 0.05, method: str = "bootstrap") -> Comparison:
    """Compare two arms' per-seed values; "A beats B" only when the evidence separates them.

    The arms are separated when their :func:`summary` intervals do not
    overlap, or, with ``paired=True`` (value ``i`` of both arms comes from
    seed ``i``), when :func:`sign_test` gives ``p < alpha``. The better arm is
    then the one with the better median (higher or lower, as
    ``higher_is_better`` says); if the two criteria disagree on the direction,
    there is no clear difference.

    Args:
        a, b: one value per seed for each arm.
        higher_is_better: True for accuracy, False for loss (keyword only:
            the direction is never guessed).
        names: the arms' names as the sentence should print them.
        paired: whether ``a[i]`` and ``b[i]`` share a seed.
        level: interval level (see :func:`summary`).
        alpha: threshold of the paired sign test.
        method: interval method of :func:`summary`.
    """
    if not isinstance(higher_is_better, bool):
        raise TypeError(f"higher_is_better must be a bool, got {type(higher_is_better).__name__}")
    if not isinstance(paired, bool):
        raise TypeError(f"paired must be a bool, got {type(paired).__name__}")
    if (not isinstance(names, (tuple, list)) or len(names) != 2
            or not all(isinstance(s, str) for s in names)):
        raise TypeError(f"names must be a pair of strings, got {names!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) \
            or not 0 < float(alpha) < 1:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    sa = summary(_values(a, "a"), level=level, method=method)
    sb = summary(_values(b, "b"), level=level, method=method)
    sign = 1.0 if higher_is_better else -1.0
    directions: dict[str, float] = {}
    if not sa.overlaps(sb):
        directions["intervals"] = sign * (sa.median - sb.median)
    p = None
    if paired:
        p, wins, used = sign_test(a, b)
        if p < alpha:
            directions["sign test"] = sign * (2 * wins - used)
    signs = {math.copysign(1, v) for v in directions.values() if v != 0}
    na, nb = names
    if len(signs) == 1:
        verdict = "a" if signs == {1.0} else "b"
        by = "intervals" if "intervals" in directions else "sign test"
        sentence = f"{na} beats {nb}" if verdict == "a" else f"{nb} beats {na}"
    else:
        verdict, by, sentence = "none", None, f"no clear difference between {na} and {nb}"
    return Comparison(verdict, sentence, sa, sb, (na, nb), higher_is_better, by, p)
