"""Tests of lib.data: shapes, seeded splits, train-only standardisation, no network."""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib import data


@pytest.fixture(scope="module")
def raw_digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().data, dtype=torch.float32)


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows in lexicographic order, to compare two tensors as multisets of rows."""
    for col in reversed(range(x.shape[1])):
        x = x[torch.sort(x[:, col], stable=True).indices]
    return x


def test_digits_shapes_and_types(no_network):
    d = data.digits(seed=0)
    assert d.x_train.shape == (1348, 64) and d.x_test.shape == (449, 64)
    assert d.y_train.shape == (1348,) and d.y_test.shape == (449,)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.n_features == 64 and d.n_classes == 10 and d.out_features == 10
    assert d.name == "digits" and "digits" in repr(d)
    assert set(torch.cat([d.y_train, d.y_test]).tolist()) == set(range(10))
    assert data.digits(test_fraction=0.5).x_test.shape[0] == round(0.5 * 1797)


def test_digits_split_is_a_seeded_partition(raw_digits):
    a = data.digits(seed=1, standardize=False)
    b = data.digits(seed=1, standardize=False)
    c = data.digits(seed=2, standardize=False)
    for f in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.y_test, c.y_test)
    # Train and test together are exactly the original rows, each once.
    both = torch.cat([a.x_train, a.x_test])
    assert torch.equal(_sorted_rows(both), _sorted_rows(raw_digits))


def test_standardisation_uses_training_statistics_only():
    raw = data.digits(seed=3, standardize=False)
    std = data.digits(seed=3)
    mu, sd = raw.x_train.mean(0), raw.x_train.std(0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    torch.testing.assert_close(std.x_train, (raw.x_train - mu) / sd)
    torch.testing.assert_close(std.x_test, (raw.x_test - mu) / sd)
    varying = raw.x_train.std(0) > 0
    torch.testing.assert_close(std.x_train.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(std.x_train.std(0)[varying], torch.ones(int(varying.sum())))
    # The test split is only shifted and scaled by the training numbers: not itself centred.
    assert float(std.x_test.mean(0).abs().max()) > 1e-3
    # A feature constant on the training split is left centred, not divided by zero.
    assert torch.isfinite(std.x_test).all()
    assert torch.equal(std.y_test, raw.y_test)


def test_spirals(no_network):
    d = data.spirals(300, classes=4, seed=5)
    assert d.x_train.shape[1] == 2 and d.x_train.shape[0] + d.x_test.shape[0] == 300
    assert d.x_test.shape[0] == 75 and d.n_classes == 4
    assert torch.bincount(torch.cat([d.y_train, d.y_test])).tolist() == [75] * 4
    torch.testing.assert_close(d.x_train.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    again = data.spirals(300, classes=4, seed=5)
    other = data.spirals(300, classes=4, seed=6)
    assert torch.equal(d.x_train, again.x_train) and not torch.equal(d.x_train, other.x_train)
    assert torch.isfinite(data.spirals(20, noise=0.0).x_train).all()


def test_teacher(no_network):
    d = data.teacher(200, in_features=5, depth=2, width=16, seed=0)
    assert d.x_train.shape == (150, 5) and d.y_train.shape == (150, 1)
    assert d.y_train.dtype == torch.float32
    assert d.n_classes == 0 and d.out_features == 1 and d.n_features == 5
    # Targets are standardised over the whole set, inputs are left as drawn.
    y = torch.cat([d.y_train, d.y_test])
    assert float(y.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(y.std()) == pytest.approx(1.0, rel=1e-5)
    again = data.teacher(200, in_features=5, depth=2, width=16, seed=0)
    assert torch.equal(d.y_test, again.y_test)
    other = data.teacher(200, in_features=5, depth=2, width=16, seed=1)
    assert not torch.equal(d.y_test, other.y_test)


def test_datasets_are_frozen():
    d = data.spirals(20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.x_train = torch.zeros(1)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: data.digits(test_fraction=0), ValueError, "test_fraction"),
    (lambda: data.digits(test_fraction=1.0), ValueError, "test_fraction"),
    (lambda: data.digits(test_fraction="0.2"), TypeError, "test_fraction"),
    (lambda: data.digits(seed=-1), ValueError, "seed"),
    (lambda: data.digits(seed=1.5), TypeError, "seed"),
    (lambda: data.digits(seed=True), TypeError, "seed"),
    (lambda: data.digits(standardize="yes"), TypeError, "standardize"),
    (lambda: data.spirals(5, classes=3), ValueError, "n must be"),
    (lambda: data.spirals(100.0), TypeError, "n must be"),
    (lambda: data.spirals(100, classes=1), ValueError, "classes"),
    (lambda: data.spirals(100, classes="3"), TypeError, "classes"),
    (lambda: data.spirals(100, noise=-0.1), ValueError, "noise"),
    (lambda: data.spirals(100, turns="many"), TypeError, "turns"),
    (lambda: data.spirals(100, test_fraction=2), ValueError, "test_fraction"),
    (lambda: data.teacher(0), ValueError, "n must be"),
    (lambda: data.teacher(100, in_features=0), ValueError, "in_features"),
    (lambda: data.teacher(100, depth=0), ValueError, "depth"),
    (lambda: data.teacher(100, width=2.0), TypeError, "width"),
    (lambda: data.teacher(100, seed=-3), ValueError, "seed"),
])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_the_no_network_guard_itself_works(no_network):
    import socket

    with pytest.raises(AssertionError, match="network access"):
        socket.create_connection(("127.0.0.1", 9))


def test_digits_read_from_the_file_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    table = data._digits_table()
    assert table.shape == (1797, 65)
    assert (table[:, :-1] == bunch.data).all() and (table[:, -1] == bunch.target).all()


def test_digits_do_not_import_scikit_learn():
    code = "import sys\nfrom lib import data\ndata.digits()\nprint('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- bad input found by fuzzing the public API (issue 18) ---

@pytest.mark.parametrize("call,exc,match", [
    (lambda: data.digits(test_fraction=0.9999), ValueError, "leaves 0 for training"),  # was NaN x_test
    (lambda: data.digits(test_fraction=math.nan), ValueError, "test_fraction"),
    (lambda: data.teacher(1), ValueError, "n must be an int >= 3"),  # was NaN targets
    (lambda: data.teacher(2), ValueError, "n must be"),
    (lambda: data.teacher(10, test_fraction=0.9), ValueError, "for training"),
    (lambda: data.spirals(100, noise=math.nan), ValueError, "noise"),  # was silently NaN points
    (lambda: data.spirals(100, noise=math.inf), ValueError, "noise"),
    (lambda: data.spirals(100, noise=1e300), ValueError, "float32"),
    (lambda: data.spirals(100, turns=math.inf), ValueError, "turns"),
    (lambda: data.spirals(100, noise="0.1"), TypeError, "noise"),
    (lambda: data.spirals(6, classes=3, test_fraction=0.9), ValueError, "for training"),
])
def test_more_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_numpy_scalars_are_accepted():
    a = data.spirals(np.int64(60), classes=np.int32(3), noise=np.float32(0.1), turns=np.float64(1.0),
                     test_fraction=np.float32(0.25), seed=np.int64(4))
    b = data.spirals(60, classes=3, noise=float(np.float32(0.1)), turns=1.0,
                     test_fraction=float(np.float32(0.25)), seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


@given(st.integers(3, 200), st.floats(0.01, 0.99), st.integers(0, 2**40))
@settings(max_examples=30, deadline=None)
def test_teacher_either_refuses_the_split_or_gives_finite_nonempty_splits(n, fraction, seed):
    try:
        d = data.teacher(n, in_features=3, depth=1, width=4, test_fraction=fraction, seed=seed)
    except ValueError as exc:
        assert "for training" in str(exc)
        return
    assert len(d.x_train) >= 2 and len(d.x_test) >= 1
    for t in (d.x_train, d.y_train, d.x_test, d.y_test):
        assert torch.isfinite(t).all()


@given(st.floats(0, 10), st.floats(-5, 5), st.integers(2, 5))
@settings(max_examples=20, deadline=None)
def test_spirals_are_finite_for_any_allowed_noise_and_turns(noise, turns, classes):
    d = data.spirals(20 * classes, classes=classes, noise=noise, turns=turns, seed=0)
    assert torch.isfinite(d.x_train).all() and torch.isfinite(d.x_test).all()
    assert d.n_classes == classes
