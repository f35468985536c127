"""Tests of lib.activations: closed-form derivatives against autograd and PyTorch."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lib import activations
from lib.activations import SELU_ALPHA, SELU_SCALE

# Every activation with its defaults and with non-default parameters.
CASES: list[tuple[str, dict]] = [
    ("identity", {}),
    ("sigmoid", {}),
    ("tanh", {}),
    ("relu", {}),
    ("leaky_relu", {}),
    ("leaky_relu", {"slope": 0.2}),
    ("leaky_relu", {"slope": 0.0}),
    ("prelu", {}),
    ("prelu", {"init": 0.05, "num_parameters": 3}),
    ("rrelu", {}),
    ("rrelu", {"lower": 0.05, "upper": 0.6}),
    ("elu", {}),
    ("elu", {"alpha": 0.5}),
    ("elu", {"alpha": 2.5}),
    ("selu", {}),
    ("silu", {}),
    ("swish", {}),
    ("swish", {"beta": 0.5}),
    ("swish", {"beta": 3.0}),
    ("gelu", {}),
    ("gelu", {"approximate": "tanh"}),
    ("softplus", {}),
    ("softplus", {"beta": 2.0, "threshold": 10.0}),
    ("softplus", {"beta": 0.5, "threshold": 5.0}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items()) or 'default'}" for n, p in CASES]


def _reference(name: str, p: dict):
    """PyTorch's own functional form of the activation, or None where it has none."""
    return {
        "identity": lambda x: x,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": F.relu,
        "leaky_relu": lambda x: F.leaky_relu(x, p.get("slope")),
        "prelu": lambda x: F.prelu(x, torch.tensor([p.get("init")], dtype=x.dtype)),
        "rrelu": lambda x: F.rrelu(x, p.get("lower"), p.get("upper"), training=False),
        "elu": lambda x: F.elu(x, p.get("alpha")),
        "selu": F.selu,
        "silu": F.silu,
        "swish": (F.silu if p.get("beta") == 1.0 else None),
        "gelu": lambda x: F.gelu(x, approximate=p.get("approximate")),
        "softplus": lambda x: F.softplus(x, p.get("beta"), p.get("threshold")),
    }[name]


def _kinks(act: activations.Activation) -> list[float]:
    pts = [0.0, 1e-300, -1e-300, 1e-12, -1e-12]
    if act.name == "softplus":
        edge = act.params["threshold"] / act.params["beta"]
        pts += [edge, math.nextafter(edge, 0.0), math.nextafter(edge, math.inf)]
    return pts


def _grid(act: activations.Activation) -> torch.Tensor:
    dense = torch.linspace(-50.0, 50.0, 4001, dtype=torch.float64)  # step 0.025, includes 0
    return torch.cat([dense, torch.tensor(_kinks(act), dtype=torch.float64)])


def _module_tol(act: activations.Activation) -> dict:
    """PReLU's module stores its slope as a float32 parameter: float32 agreement only."""
    return {"rtol": 1e-7, "atol": 1e-7} if act.name == "prelu" else {"rtol": 1e-10, "atol": 1e-12}


def _autograd(f, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    return g


def _module(act: activations.Activation):
    """The activation's module in float64 and eval mode, as an elementwise function."""
    mod = act.module().to(torch.float64).eval()
    n = act.params.get("num_parameters", 1)
    if n == 1:
        return mod
    # PReLU with one slope per channel wants the channels on dim 1: feed each point to all.
    return lambda x: mod(x.unsqueeze(1).expand(-1, n))[:, 0]


def test_names_cover_the_book():
    assert activations.names() == [
        "identity", "sigmoid", "tanh", "relu", "leaky_relu", "prelu", "rrelu", "elu", "selu",
        "silu", "swish", "gelu", "softplus"]
    assert sorted({n for n, _ in CASES}) == sorted(activations.names())


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_derivative_equals_autograd_of_forward_on_a_dense_grid(name, params):
    act = activations.get(name, **params)
    x = _grid(act)
    torch.testing.assert_close(act.derivative(x), _autograd(act.forward, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_forward_and_derivative_match_pytorch(name, params):
    act = activations.get(name, **params)
    x = _grid(act)
    mod = _module(act)
    with torch.no_grad():
        torch.testing.assert_close(act.forward(x), mod(x), **_module_tol(act))
    # Values at the kinks are PyTorch's: the autograd of its own module is the reference.
    torch.testing.assert_close(act.derivative(x), _autograd(mod, x), **_module_tol(act))
    ref = _reference(name, act.params)
    if ref is not None:
        torch.testing.assert_close(act.forward(x), ref(x), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(act.derivative(x), _autograd(ref, x), rtol=1e-10, atol=1e-12)


# Parameters drawn by hypothesis, inside each activation's valid range.
_PARAM_STRATEGIES = {
    "leaky_relu": st.fixed_dictionaries({"slope": st.floats(0.0, 1.0)}),
    "prelu": st.fixed_dictionaries({"init": st.floats(-1.0, 1.0)}),
    "rrelu": st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(
        lambda t: {"lower": min(t), "upper": max(t)}),
    "elu": st.fixed_dictionaries({"alpha": st.floats(0.01, 5.0)}),
    "swish": st.fixed_dictionaries({"beta": st.floats(0.05, 10.0)}),
    "gelu": st.fixed_dictionaries({"approximate": st.sampled_from(["none", "tanh"])}),
    "softplus": st.fixed_dictionaries({"beta": st.floats(0.1, 5.0), "threshold": st.floats(1.0, 30.0)}),
}
_points = st.lists(st.floats(-50.0, 50.0, allow_nan=False), min_size=1, max_size=16)


@settings(max_examples=80)
@given(name=st.sampled_from(activations.names()), data=st.data(), xs=_points)
def test_derivative_equals_autograd_at_drawn_points_and_parameters(name, data, xs):
    strategy = _PARAM_STRATEGIES.get(name, st.just({}))
    params = data.draw(strategy, label="params")
    act = activations.get(name, **params)
    x = torch.tensor(xs, dtype=torch.float64)
    torch.testing.assert_close(act.derivative(x), _autograd(act.forward, x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(act.derivative(x), _autograd(_module(act), x), **_module_tol(act))


@pytest.mark.parametrize("name,slope", [
    ("relu", 0.0), ("leaky_relu", 0.01), ("prelu", 0.25), ("rrelu", (1 / 8 + 1 / 3) / 2),
    ("elu", 1.0), ("selu", SELU_SCALE * SELU_ALPHA), ("identity", 1.0)])
def test_value_at_zero_follows_pytorch(name, slope):
    d = activations.get(name).derivative(torch.zeros(1, dtype=torch.float64))
    assert float(d) == pytest.approx(slope, rel=1e-12)


def test_kink_values_follow_non_default_parameters():
    z = torch.zeros(1, dtype=torch.float64)
    assert float(activations.get("leaky_relu", slope=0.3).derivative(z)) == pytest.approx(0.3)
    assert float(activations.get("elu", alpha=2.0).derivative(z)) == pytest.approx(2.0)
    assert float(activations.get("prelu", init=0.1).derivative(z)) == pytest.approx(0.1)
    assert float(activations.get("rrelu", lower=0.1, upper=0.5).derivative(z)) == pytest.approx(0.3)


# (derivative at -inf side, derivative at +inf side) and (forward at -1e4, forward at +1e4 / 1e4).
_LIMITS = {
    "identity": ((1.0, 1.0), (-1e4, 1.0)),
    "sigmoid": ((0.0, 0.0), (0.0, 1e-4)),
    "tanh": ((0.0, 0.0), (-1.0, 1e-4)),
    "relu": ((0.0, 1.0), (0.0, 1.0)),
    "leaky_relu": ((0.01, 1.0), (-100.0, 1.0)),
    "prelu": ((0.25, 1.0), (-2500.0, 1.0)),
    "rrelu": (((1 / 8 + 1 / 3) / 2, 1.0), (-1e4 * (1 / 8 + 1 / 3) / 2, 1.0)),
    "elu": ((0.0, 1.0), (-1.0, 1.0)),
    "selu": ((0.0, SELU_SCALE), (-SELU_SCALE * SELU_ALPHA, SELU_SCALE)),
    "silu": ((0.0, 1.0), (0.0, 1.0)),
    "swish": ((0.0, 1.0), (0.0, 1.0)),
    "gelu": ((0.0, 1.0), (0.0, 1.0)),
    "softplus": ((0.0, 1.0), (0.0, 1.0)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_finite_far_out_with_the_right_limits(name, params, dtype):
    act = activations.get(name, **params)
    mag = torch.logspace(-3, 4, 57, dtype=dtype)
    x = torch.cat([-mag.flip(0), torch.zeros(1, dtype=dtype), mag])
    f, d = act.forward(x), act.derivative(x)
    assert f.dtype == dtype and d.dtype == dtype
    assert torch.isfinite(f).all(), f"{name} forward overflows"
    assert torch.isfinite(d).all(), f"{name} derivative overflows"
    if params:
        return  # the limits below are for the default parameters
    (d_lo, d_hi), (f_lo, f_hi_scaled) = _LIMITS[name]
    assert float(d[0]) == pytest.approx(d_lo, abs=1e-6)
    assert float(d[-1]) == pytest.approx(d_hi, abs=1e-6)
    assert float(f[0]) == pytest.approx(f_lo, rel=1e-6, abs=1e-6)
    assert float(f[-1]) / 1e4 == pytest.approx(f_hi_scaled, rel=1e-6, abs=1e-6)


def test_rrelu_training_draws_slopes_in_range_reproducibly():
    act = activations.get("rrelu", lower=0.1, upper=0.4)
    x = -torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.5
    y1 = act.forward(x, training=True, generator=torch.Generator().manual_seed(7))
    y2 = act.forward(x, training=True, generator=torch.Generator().manual_seed(7))
    y3 = act.forward(x, training=True, generator=torch.Generator().manual_seed(8))
    slopes = y1 / x
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)
    assert slopes.min() >= 0.1 and slopes.max() <= 0.4
    # 20,000 uniform draws fill the interval.
    assert slopes.min() < 0.101 and slopes.max() > 0.399
    assert float(slopes.mean()) == pytest.approx(0.25, abs=0.005)
    # Positive inputs pass through unchanged in training too.
    pos = torch.linspace(0, 5, 11, dtype=torch.float64)
    assert torch.equal(act.forward(pos, training=True), pos)


def test_rrelu_eval_uses_the_mean_slope_and_the_module_agrees():
    act = activations.get("rrelu", lower=0.1, upper=0.4)
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    expected = torch.where(x >= 0, x, 0.25 * x)
    torch.testing.assert_close(act.forward(x), expected)
    torch.testing.assert_close(act(x), expected)
    mod = act.module().eval()
    torch.testing.assert_close(mod(x), expected)
    # The module in training mode draws its slopes from the same interval.
    mod.train()
    torch.manual_seed(0)
    neg = -torch.ones(5000, dtype=torch.float64)
    slopes = -mod(neg)
    assert slopes.min() >= 0.1 and slopes.max() <= 0.4 and slopes.std() > 0.05


def test_prelu_module_is_learnable():
    mod = activations.get("prelu", init=0.2, num_parameters=4).module()
    params = list(mod.parameters())
    assert len(params) == 1 and params[0].requires_grad
    assert params[0].shape == (4,)
    torch.testing.assert_close(params[0].detach(), torch.full((4,), 0.2))
    x = -torch.ones(3, 4)
    mod(x).sum().backward()
    # d out / d slope = x on the negative side: a gradient step moves the slope.
    torch.testing.assert_close(params[0].grad, torch.full((4,), -3.0))
    with torch.no_grad():
        params[0] -= 0.1 * params[0].grad
    assert torch.all(params[0] > 0.2)
    # Other activations have nothing to learn; every module() is a fresh object.
    assert not list(activations.get("leaky_relu").module().parameters())
    a = activations.get("prelu")
    assert a.module() is not a.module()


@pytest.mark.parametrize("name", activations.names())
def test_module_names_round_trip_and_probes_see_them(name):
    mod = activations.get(name).module()
    assert activations.name_of_module(mod) == name
    assert isinstance(mod, activations.ACTIVATION_MODULES)


def test_name_of_module_of_a_non_activation_is_none():
    assert activations.name_of_module(nn.Linear(2, 2)) is None


def test_get_is_case_insensitive_and_passes_activations_through():
    act = activations.get("ReLU")
    assert act.name == "relu"
    assert activations.get(act) is act
    leaky = activations.get("leaky_relu", slope=0.2)
    assert leaky.params == {"slope": 0.2}
    assert "slope=0.2" in repr(leaky)
    assert all(activations.get(n).summary for n in activations.names())


def test_forward_accepts_numbers_lists_and_integer_tensors():
    act = activations.get("relu")
    assert float(act.forward(-2)) == 0.0
    assert float(act.forward(3.5)) == 3.5
    torch.testing.assert_close(act.forward([-1.0, 2.0]), torch.tensor([0.0, 2.0]))
    out = act.derivative(torch.tensor([-1, 2]))
    assert out.is_floating_point()
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0]))
    # float64 in, float64 out: the closed forms never downcast.
    assert act.derivative(torch.zeros(2, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("call,exc,match", [
    (lambda: activations.get(3), TypeError, "activation name"),
    (lambda: activations.get(None), TypeError, "activation name"),
    (lambda: activations.get("relu6"), ValueError, "unknown activation 'relu6'.*valid names"),
    (lambda: activations.get("relu", slope=0.1), ValueError, "unknown parameter.*slope"),
    (lambda: activations.get("leaky_relu", alpha=0.1), ValueError, "alpha.*allowed: slope"),
    (lambda: activations.get("leaky_relu", slope=-0.1), ValueError, "slope"),
    (lambda: activations.get("leaky_relu", slope=True), ValueError, "slope"),
    (lambda: activations.get("leaky_relu", slope="0.1"), ValueError, "slope"),
    (lambda: activations.get("leaky_relu", slope=math.nan), ValueError, "slope"),
    (lambda: activations.get("elu", alpha=0.0), ValueError, "alpha"),
    (lambda: activations.get("elu", alpha=math.inf), ValueError, "alpha"),
    (lambda: activations.get("swish", beta=-1.0), ValueError, "beta"),
    (lambda: activations.get("softplus", beta=0.0), ValueError, "beta"),
    (lambda: activations.get("softplus", threshold=math.nan), ValueError, "threshold"),
    (lambda: activations.get("gelu", approximate="erf"), ValueError, "approximate"),
    (lambda: activations.get("rrelu", lower=0.5, upper=0.1), ValueError, "lower"),
    (lambda: activations.get("rrelu", lower=-0.1), ValueError, "lower"),
    (lambda: activations.get("prelu", num_parameters=0), ValueError, "num_parameters"),
    (lambda: activations.get("prelu", num_parameters=2.0), ValueError, "num_parameters"),
    (lambda: activations.get("prelu", init=math.nan), ValueError, "init"),
    (lambda: activations.get(activations.get("relu"), slope=0.1), ValueError, "parameters"),
    (lambda: activations.get("relu").forward("abc"), TypeError, "x must be"),
    (lambda: activations.get("relu").forward(object()), TypeError, "x must be"),
    (lambda: activations.get("relu").derivative(torch.tensor([True])), TypeError, "x must hold real"),
    (lambda: activations.get("tanh").forward(torch.tensor([1j])), TypeError, "x must hold real"),
])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_name_of_module_names_its_argument_when_given_a_non_module():
    with pytest.raises(TypeError, match="module"):
        activations.name_of_module("relu")
