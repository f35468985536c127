"""Tests of the sequence tasks of lib.data: the adding problem and the copy task."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lib import data


@given(st.integers(2, 60), st.integers(0, 3))
def test_adding_shapes_and_target(length, seed):
    ds = data.adding_problem(40, length, seed=seed)
    assert ds.x_train.shape == (30, length, 2) and ds.x_test.shape == (10, length, 2)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        m = x[..., 1]
        assert torch.all(m.sum(1) == 2)
        first, second = m[:, : length // 2].sum(1), m[:, length // 2:].sum(1)
        assert torch.all(first == 1) and torch.all(second == 1)
        torch.testing.assert_close(y, (x[..., 0] * m).sum(1))
        assert float(x[..., 0].min()) >= 0 and float(x[..., 0].max()) <= 1


def test_adding_seeded_and_baseline():
    a = data.adding_problem(200, 20, seed=1)
    b = data.adding_problem(200, 20, seed=1)
    c = data.adding_problem(200, 20, seed=2)
    torch.testing.assert_close(a.x_train, b.x_train)
    assert not torch.equal(a.x_train, c.x_train)
    big = data.adding_problem(40000, 10, seed=0)
    mse = float(((big.y_train - 1.0) ** 2).mean())
    assert abs(mse - data.ADDING_BASELINE_MSE) < 0.01


def test_copy_task():
    ds = data.copy_task(20, 7, n_symbols=4, copy_length=3, seed=0)
    steps = 7 + 6
    assert ds.x_train.shape == (15, steps, 6) and ds.y_train.shape == (15, steps)
    tok = ds.x_train.argmax(-1)
    torch.testing.assert_close(ds.y_train[:, -3:], tok[:, :3])
    assert torch.all(ds.y_train[:, :-3] == 4)
    assert torch.all(tok[:, steps - 4] == 5)  # the cue just before the copy
    assert torch.all(tok[:, 3:steps - 4] == 4)
    assert data.copy_baseline(7, n_symbols=4, copy_length=3) == pytest.approx(
        3 * math.log(4) / steps)


def test_bad_input():
    with pytest.raises(ValueError, match="length"):
        data.adding_problem(10, 1)
    with pytest.raises(TypeError, match="length"):
        data.adding_problem(10, 2.5)
    with pytest.raises(ValueError, match="n must"):
        data.adding_problem(1, 10)
    with pytest.raises(ValueError, match="test_fraction"):
        data.adding_problem(10, 10, test_fraction=1.5)
    with pytest.raises(ValueError, match="delay"):
        data.copy_task(10, 0)
    with pytest.raises(ValueError, match="n_symbols"):
        data.copy_task(10, 5, n_symbols=1)
    with pytest.raises(ValueError, match="copy_length"):
        data.copy_baseline(5, copy_length=0)
