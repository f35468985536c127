"""Tests of lib._checks: one exception type per kind of mistake, messages that name the argument."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from lib import _checks as C

NOT_NUMBERS = [None, "1", b"1", [1.0], {}, 1j, True, False, np.bool_(True), object()]


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_every_finite_float32_is_accepted_in_every_real_form(v):
    for form in (v, np.float32(v), np.float64(v), torch.tensor(v)):
        assert C.check_number(form, "x") == pytest.approx(float(np.float32(v)), rel=1e-6, abs=1e-30)
    assert isinstance(C.check_number(np.float32(v), "x"), float)


@given(st.integers(min_value=-(2**62), max_value=2**62))
def test_integers_of_every_kind_are_numbers_and_ints(v):
    assert C.check_number(v, "x") == float(v)
    assert C.check_int(np.int64(v), "n") == v
    assert type(C.check_int(np.int32(v % 2**31), "n")) is int


@pytest.mark.parametrize("bad", NOT_NUMBERS, ids=lambda v: type(v).__name__)
def test_a_value_that_is_not_a_real_number_is_a_type_error_naming_the_argument(bad):
    with pytest.raises(TypeError, match="^lr must be a real number"):
        C.check_number(bad, "lr")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float32("nan"), 1e300, -1e39])
def test_nan_inf_and_floats_beyond_float32_are_value_errors(bad):
    with pytest.raises(ValueError, match="^noise"):
        C.check_number(bad, "noise")


def test_nan_and_inf_and_huge_values_when_allowed():
    assert math.isnan(C.check_number(math.nan, "x", allow_nan=True))
    assert C.check_number(math.inf, "x", allow_inf=True) == math.inf
    assert C.check_number(1e300, "x", float32=False) == 1e300
    with pytest.raises(ValueError, match="finite"):
        C.check_number(10**400, "x")  # an int too large for any float


@given(st.floats(allow_nan=False, allow_infinity=False, width=32),
       st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_bounds_accept_inside_and_refuse_outside(v, bound):
    for kw, inside in (("ge", v >= bound), ("gt", v > bound), ("le", v <= bound), ("lt", v < bound)):
        if inside:
            assert C.check_number(v, "x", **{kw: bound}) == v
        else:
            with pytest.raises(ValueError, match="^x must be a finite real number"):
                C.check_number(v, "x", **{kw: bound})


@pytest.mark.parametrize("bad", [2.0, 2.5, "2", None, True, np.float64(3)], ids=repr)
def test_check_int_refuses_non_integers_with_a_type_error(bad):
    with pytest.raises(TypeError, match="^depth must be an int"):
        C.check_int(bad, "depth", ge=1)


def test_check_int_range():
    assert C.check_int(1, "n", ge=1, le=3) == 1
    for bad in (0, 4, -5):
        with pytest.raises(ValueError, match=r"^n must be an int >= 1 and <= 3, got"):
            C.check_int(bad, "n", ge=1, le=3)


def test_check_bool_refuses_truthy_strings_and_numbers():
    assert C.check_bool(np.bool_(False), "bias") is False
    for bad in ("no", "False", 0, 1, None):
        with pytest.raises(TypeError, match="^bias must be a bool"):
            C.check_bool(bad, "bias")


def test_check_choice():
    assert C.check_choice("batch", "norm", ("none", "batch")) == "batch"
    with pytest.raises(ValueError, match="norm must be one of 'none', 'batch'; got 'group'"):
        C.check_choice("group", "norm", ("none", "batch"))
    with pytest.raises(TypeError, match="norm must be one of"):
        C.check_choice(3, "norm", ("none", "batch"))


@given(st.integers(min_value=0, max_value=2**64))
def test_seeds_are_any_nonnegative_integer(seed):
    assert C.check_seed(seed) == seed
    assert C.check_seed(np.uint64(seed % 2**64)) == seed % 2**64


def test_seed_mistakes():
    assert C.check_seed(None, optional=True) is None
    for bad in (None, 1.0, "0", True):
        with pytest.raises(TypeError, match="^seed must be an int >= 0"):
            C.check_seed(bad)
    with pytest.raises(ValueError, match="^seed must be an int >= 0, got -1"):
        C.check_seed(-1)


def test_check_tensor():
    x = torch.zeros(4, 3)
    assert C.check_tensor(x, "x", dtype="floating", ndim=2, shape=(None, 3), finite=True) is x
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        C.check_tensor([1.0], "x")
    with pytest.raises(TypeError, match="x must have a floating-point dtype, got torch.int64"):
        C.check_tensor(torch.zeros(2, dtype=torch.long), "x", dtype="floating")
    with pytest.raises(TypeError, match="integer dtype"):
        C.check_tensor(x, "y", dtype="integer")
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 5\), got \(4, 3\)"):
        C.check_tensor(x, "x", shape=(None, 5))
    with pytest.raises(ValueError, match="x must have 1 or 3 dimension"):
        C.check_tensor(x, "x", ndim=(1, 3))
    with pytest.raises(ValueError, match="x must be finite"):
        C.check_tensor(torch.tensor([1.0, math.inf]), "x", finite=True)
    with pytest.raises(ValueError, match="x must not be empty"):
        C.check_tensor(torch.zeros(0, 3), "x", nonempty=True)


def test_model_input_checks_features_dtype_and_channels():
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    assert C.check_model_input(mlp, torch.zeros(2, 4)) is not None
    with pytest.raises(ValueError, match="x must have 4 features"):
        C.check_model_input(mlp, torch.zeros(2, 5))
    with pytest.raises(TypeError, match="x must have the model's dtype torch.float32, got torch.float64"):
        C.check_model_input(mlp, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must have the model's dtype"):
        C.check_model_input(mlp, torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="must not be empty"):
        C.check_model_input(mlp, torch.zeros(0, 4))
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    C.check_model_input(cnn, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="1 channels"):
        C.check_model_input(cnn, torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="4 dimensions"):
        C.check_model_input(cnn, torch.zeros(2, 64))
    lstm = nn.LSTM(5, 7, batch_first=True)
    C.check_model_input(lstm, torch.zeros(2, 9, 5))
    with pytest.raises(ValueError, match="5 features"):
        C.check_model_input(lstm, torch.zeros(2, 9, 4))
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    C.check_model_input(emb, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer dtype"):
        C.check_model_input(emb, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        C.check_model_input("model", torch.zeros(2, 4))


def test_default_loss_is_cross_entropy_or_mse_and_refuses_mismatched_targets():
    out = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2, 1, 0])
    assert torch.equal(C.default_loss(out, y), nn.functional.cross_entropy(out, y))
    reg = torch.randn(4, 1, generator=torch.Generator().manual_seed(1))
    t = torch.randn(4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(C.default_loss(reg, t), nn.functional.mse_loss(reg, t[:, None]))
    with pytest.raises(ValueError, match="regression target y must match"):
        C.default_loss(reg, torch.zeros(1))  # would broadcast silently
    with pytest.raises(ValueError, match="regression target y must match"):
        C.default_loss(torch.zeros(4, 2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="class labels y must lie in 0..2"):
        C.default_loss(out, torch.tensor([0, 3, 1, 0]))
    with pytest.raises(ValueError, match="class labels y must have shape"):
        C.default_loss(out, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="y must hold class indices"):
        C.default_loss(out, torch.ones(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="output must have a floating-point dtype"):
        C.default_loss(torch.zeros(4, 3, dtype=torch.long), y)
