"""Tests of lib.stats against independent computations (numpy, exact binomial)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib import stats

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(finite, min_size=1, max_size=12))
@settings(max_examples=50, deadline=None)
def test_summary_median_and_interval_bracket_it(values):
    s = stats.summary(values)
    assert s.median == pytest.approx(float(np.median(values)))
    assert s.lo <= s.median + 1e-9 and s.median <= s.hi + 1e-9
    assert min(values) <= s.lo and s.hi <= max(values)
    assert s.n == len(values)


def test_bootstrap_matches_an_independent_computation():
    v = np.array([0.81, 0.86, 0.9, 0.84, 0.88, 0.79, 0.91])
    s = stats.summary(v, n_boot=4000, seed=3, level=0.9)
    rng = np.random.default_rng(3)
    meds = np.sort(np.median(v[rng.integers(0, v.size, (4000, v.size))], axis=1))
    assert s.lo == meds[int(math.floor(0.05 * 3999))]
    assert s.hi == meds[int(math.ceil(0.95 * 3999))]
    assert stats.summary(v, n_boot=4000, seed=3, level=0.9) == s  # deterministic


def test_iqr_is_numpys_quartiles():
    v = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    s = stats.summary(v, method="iqr")
    assert (s.lo, s.hi) == tuple(np.percentile(v, [25, 75]))


def test_format():
    s = stats.summary([0.88, 0.86, 0.90, 0.87, 0.89])
    assert f"{s:.0%}" == "88 % [86, 90], 5 seeds"
    assert f"{s:.2f}".endswith(", 5 seeds")
    assert str(stats.summary([1.0])).endswith("1 seed")


@pytest.mark.parametrize("n", [1, 5, 6, 9])
def test_sign_test_is_the_exact_binomial(n):
    for k in range(n + 1):
        a = [1.0] * k + [-1.0] * (n - k)
        p, wins, used = stats.sign_test(a, [0.0] * n)
        tail = min(sum(math.comb(n, i) for i in range(k + 1)),
                   sum(math.comb(n, i) for i in range(k, n + 1))) / 2**n
        assert p == pytest.approx(min(1.0, 2 * tail)) and wins == k and used == n
    assert stats.sign_test([1.0, 2.0], [1.0, 2.0]) == (1.0, 0, 0)


def test_compare_separated_and_not():
    good, bad = [0.90, 0.91, 0.89, 0.92, 0.9], [0.5, 0.52, 0.49, 0.51, 0.5]
    c = stats.compare(good, bad, higher_is_better=True, names=("ReLU", "sigmoid"))
    assert c.verdict == "a" and c.sentence == "ReLU beats sigmoid" and c.winner == "ReLU"
    assert c.separated_by == "intervals"
    loss = stats.compare(good, bad, higher_is_better=False, names=("ReLU", "sigmoid"))
    assert loss.verdict == "b" and loss.sentence == "sigmoid beats ReLU"
    close = stats.compare([1, 2, 3, 4, 5], [2, 3, 4, 5, 6], higher_is_better=True)
    assert close.verdict == "none" and close.winner is None
    assert close.sentence == "no clear difference between A and B"


def test_paired_sign_test_can_separate_overlapping_intervals():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 8)
    a, b = base + 0.05, base  # every pair favours a, intervals overlap
    unpaired = stats.compare(a, b, higher_is_better=True)
    paired = stats.compare(a, b, higher_is_better=True, paired=True)
    assert unpaired.verdict == "none"
    assert paired.verdict == "a" and paired.separated_by == "sign test"
    assert paired.p == pytest.approx(2 / 2**8)
    five = stats.compare(base[:5] + 0.05, base[:5], higher_is_better=True, paired=True)
    assert five.verdict == "none"  # 5 pairs cannot reach p < 0.05


def test_infinite_values_are_usable():
    s = stats.summary([0.1, 0.2, math.inf])
    assert s.median == 0.2 and s.hi == math.inf


@pytest.mark.parametrize("call,exc,word", [
    (lambda: stats.summary([]), ValueError, "values"),
    (lambda: stats.summary("abc"), TypeError, "values"),
    (lambda: stats.summary([1.0, math.nan]), ValueError, "NaN"),
    (lambda: stats.summary([[1.0]]), ValueError, "one-dimensional"),
    (lambda: stats.summary([1.0], method="sd"), ValueError, "method"),
    (lambda: stats.summary([1.0], level=1.5), ValueError, "level"),
    (lambda: stats.summary([1.0], n_boot=0), ValueError, "n_boot"),
    (lambda: stats.compare([1.0], [2.0], higher_is_better="yes"), TypeError, "higher_is_better"),
    (lambda: stats.compare([1.0], [2.0], higher_is_better=True, names="AB"), TypeError, "names"),
    (lambda: stats.compare([1.0], [2.0], higher_is_better=True, alpha=0), ValueError, "alpha"),
    (lambda: stats.sign_test([1.0], [1.0, 2.0]), ValueError, "same length"),
])
def test_bad_input_names_the_argument(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


# --- best_setting: the fair rate of an arm ---------------------------------

def test_best_setting_prefers_the_rate_that_loses_no_seed():
    inf = np.inf
    # row 0 is faster on the median (11 vs 15) but loses two of eight seeds
    t = [[inf, 9, 10, 10, 12, 22, 9, inf], [14, 15, 16, 15, 15, 14, 17, 15]]
    assert int(np.argmin(np.median(t, 1))) == 0
    assert stats.best_setting(t) == 1
    assert stats.best_setting([[1.0, np.nan], [3.0, 4.0]]) == 1  # NaN = failed


def test_best_setting_is_the_best_median_when_every_seed_gets_there():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 7))
    assert stats.best_setting(v) == int(np.argmin(np.median(v, 1)))
    assert stats.best_setting(v, higher_is_better=True) == int(np.argmax(np.median(v, 1)))
    assert stats.best_setting(torch.tensor(v)) == stats.best_setting(v)


def test_best_setting_ties_and_all_failed_go_to_the_first_row():
    assert stats.best_setting([[2.0, 2.0], [2.0, 2.0]]) == 0
    assert stats.best_setting(np.full((3, 4), np.inf)) == 0
    # fewer failures beats a better median of the survivors
    assert stats.best_setting([[np.inf, np.inf, 1.0], [np.inf, 5.0, 6.0]]) == 1


@pytest.mark.parametrize("bad, exc", [
    ("fast", TypeError), (None, TypeError), ([[object()]], TypeError),
    ([1.0, 2.0], ValueError), (np.zeros((0, 3)), ValueError), (np.zeros((2, 0)), ValueError),
    (np.zeros((2, 2, 2)), ValueError),
])
def test_best_setting_rejects_bad_input(bad, exc):
    with pytest.raises(exc, match="values"):
        stats.best_setting(bad)


def test_best_setting_rejects_a_non_bool_direction():
    with pytest.raises(TypeError, match="higher_is_better"):
        stats.best_setting([[1.0]], higher_is_better="yes")
