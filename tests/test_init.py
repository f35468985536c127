"""Tests of lib.init: initialisers against their stated variances, LSUV, and the mean-field theory."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate
from torch import nn

from lib import activations, init, networks, probes

FAN_IN, FAN_OUT = 300, 200  # unequal, so fan_in and fan_out conventions differ

SCHEME_CASES = [
    ("default", {}), ("xavier_uniform", {}), ("xavier_uniform", {"gain": 2.0}),
    ("xavier_normal", {}), ("xavier_normal", {"gain": 0.5}), ("he", {}), ("he_fan_in", {}),
    ("he_fan_out", {}), ("he_uniform", {}), ("orthogonal", {}), ("orthogonal", {"gain": 1.5}),
    ("normal", {}), ("normal", {"std": 0.2}), ("zeros", {}), ("constant", {}),
    ("constant", {"value": -0.3}),
]


def test_schemes_are_listed():
    assert init.schemes() == ["default", "xavier_uniform", "xavier_normal", "he", "he_fan_in",
                              "he_fan_out", "he_uniform", "orthogonal", "normal", "zeros", "constant"]
    assert {s for s, _ in SCHEME_CASES} == set(init.schemes())


@pytest.mark.parametrize("scheme,params", SCHEME_CASES,
                         ids=[f"{s}{'-' + str(p) if p else ''}" for s, p in SCHEME_CASES])
def test_weight_variance_matches_the_weights_apply_draws(scheme, params):
    layer = nn.Linear(FAN_IN, FAN_OUT)
    init.apply(layer, scheme, seed=0, **params)
    w = layer.weight.detach().double()
    expected = init.weight_variance(scheme, FAN_IN, FAN_OUT, **params)
    # 60,000 draws: the sample variance is within ~1 % of the truth; orthogonal rows are exact.
    assert float(w.var(unbiased=False)) == pytest.approx(expected, rel=0.03, abs=1e-12)
    if scheme == "orthogonal":
        gain = params.get("gain", 1.0)
        eye = torch.eye(FAN_OUT, dtype=torch.float64)
        torch.testing.assert_close(w @ w.T, gain**2 * eye, atol=1e-5, rtol=0)  # float32 weights
    if scheme == "constant":
        assert torch.all(layer.weight == torch.tensor(params.get("value", 0.1)))
    if scheme == "default":
        # PyTorch's own init: uniform on +-1/sqrt(fan_in), a third of LeCun's variance.
        assert expected == pytest.approx(1 / (3 * FAN_IN))
        assert float(w.abs().max()) <= 1 / math.sqrt(FAN_IN)
        assert float(layer.bias.detach().abs().max()) > 0
    else:
        assert torch.all(layer.bias == 0)


@pytest.mark.parametrize("scheme,expected", [
    ("default", 1 / (3 * 32 * 9)), ("he", 2 / (32 * 9)), ("he_fan_out", 2 / (64 * 9)),
    ("xavier_normal", 2 / (32 * 9 + 64 * 9))])
def test_conv_fans_include_the_receptive_field(scheme, expected):
    conv = nn.Conv2d(32, 64, 3)
    init.apply(conv, scheme, seed=1)
    assert init.weight_variance(scheme, 32 * 9, 64 * 9) == pytest.approx(expected)
    assert float(conv.weight.detach().double().var()) == pytest.approx(expected, rel=0.05)


def test_apply_is_seeded_returns_the_model_and_leaves_the_global_rng_alone():
    models = [nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)) for _ in range(3)]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b, c = (init.apply(m, "xavier_normal", seed=s) for m, s in zip(models, (5, 5, 6)))
    assert torch.equal(torch.get_rng_state(), state)
    for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(a[0].weight, c[0].weight)
    model = nn.Linear(3, 3)
    assert init.apply(model, "he", seed=0) is model
    # Without a seed it draws from (and advances) the global generator, like nn.init.
    init.apply(nn.Linear(4, 4), "he")
    assert not torch.equal(torch.get_rng_state(), state)


def test_weight_layers_lists_linear_and_conv_in_order():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(2),
                          nn.Linear(2, 2))
    assert [n for n, _ in init.weight_layers(model)] == ["0", "4"]


def test_lsuv_gives_unit_output_variance_per_layer():
    model = networks.mlp(4, 48, "tanh", in_features=20, seed=0)
    x = torch.randn(256, 20, generator=torch.Generator().manual_seed(1))
    assert init.lsuv(model, x, seed=3) is model
    outs = []
    handles = [m.register_forward_hook(lambda mod, i, o: outs.append(o.detach()))
               for _, m in init.weight_layers(model)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    assert len(outs) == 5
    for o in outs:
        assert float(o.var()) == pytest.approx(1.0, abs=0.05)
    # Seeded: the same call gives the same weights.
    other = init.lsuv(networks.mlp(4, 48, "tanh", in_features=20, seed=0), x, seed=3)
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)


def _quad_moments(f, df, q):
    """E[f(z)], E[f(z)^2], E[f'(z)^2] for z ~ N(0, q), by adaptive quadrature (scipy)."""
    s = math.sqrt(q)
    dens = lambda u: math.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)  # noqa: E731
    out = []
    for g in (lambda u: f(s * u), lambda u: f(s * u) ** 2, lambda u: df(s * u) ** 2):
        val, _ = integrate.quad(lambda u: g(u) * dens(u), -12, 12, points=[0.0], limit=200)
        out.append(val)
    return tuple(out)


@pytest.mark.parametrize("q", [0.01, 0.5, 1.0, 4.0])
def test_gaussian_moments_of_relu_have_the_closed_form(q):
    m1, m2, d2 = init.gaussian_moments("relu", q)
    assert m1 == pytest.approx(math.sqrt(q / (2 * math.pi)), rel=1e-7)
    assert m2 == pytest.approx(q / 2, rel=1e-7)
    assert d2 == pytest.approx(0.5, rel=1e-7)


@given(q=st.floats(1e-3, 100.0), slope=st.floats(0.0, 1.0))
def test_gaussian_moments_of_leaky_relu_have_the_closed_form(q, slope):
    m1, m2, d2 = init.gaussian_moments("leaky_relu", q, slope=slope)
    assert m1 == pytest.approx((1 - slope) * math.sqrt(q / (2 * math.pi)), rel=1e-6, abs=1e-12)
    assert m2 == pytest.approx((1 + slope**2) * q / 2, rel=1e-6)
    assert d2 == pytest.approx((1 + slope**2) / 2, rel=1e-6)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "elu", "gelu", "softplus"])
@pytest.mark.parametrize("q", [0.05, 1.0, 3.0])
def test_gaussian_moments_agree_with_adaptive_quadrature(name, q):
    act = activations.get(name)
    f = lambda v: float(act.forward(torch.tensor(v, dtype=torch.float64)))  # noqa: E731
    df = lambda v: float(act.derivative(torch.tensor(v, dtype=torch.float64)))  # noqa: E731
    got = init.gaussian_moments(name, q)
    for a, b in zip(got, _quad_moments(f, df, q)):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-10)


def test_gaussian_moments_at_zero_variance_are_the_values_at_zero():
    assert init.gaussian_moments("sigmoid", 0.0) == pytest.approx((0.5, 0.25, 1 / 16))
    assert init.gaussian_moments("relu", 0.0) == (0.0, 0.0, 0.0)
    assert init.gaussian_moments("identity", 2.0) == pytest.approx((0.0, 2.0, 1.0), abs=1e-12)


@pytest.mark.parametrize("input_var", [0.5, 1.0, 3.0])
def test_predict_relu_with_he_keeps_the_variance_constant(input_var):
    pred = init.predict("relu", "he", 64, 12, input_var=input_var)
    # q_1 = n * (2/n) * input_var, then q_l = n * (2/n) * q_{l-1} / 2 = q_{l-1}.
    np.testing.assert_allclose(pred.pre_var, 2 * input_var, rtol=1e-6)
    np.testing.assert_allclose(pred.act_second_moment, input_var, rtol=1e-6)
    np.testing.assert_allclose(pred.grad_var, 1.0, rtol=1e-6)
    np.testing.assert_allclose(pred.weight_grad_sq, 1.0, rtol=1e-6)
    assert len(pred.pre_var) == len(pred.grad_var) == len(pred.weight_grad_sq) == 12


def test_predict_relu_with_pytorch_default_shrinks_by_six_per_layer():
    pred = init.predict("relu", "default", 64, 8)
    # Var[w] = 1/(3n): each layer multiplies the variance by n * 1/(3n) * 1/2 = 1/6.
    np.testing.assert_allclose(pred.pre_var, (1 / 3) * 6.0 ** -np.arange(8), rtol=1e-6)
    np.testing.assert_allclose(pred.grad_var, 6.0 ** -np.arange(7, -1, -1), rtol=1e-6)


def test_predict_linear_network_with_xavier_is_exactly_constant():
    pred = init.predict("identity", "xavier_normal", 32, 6, input_var=0.7)
    np.testing.assert_allclose(pred.pre_var, 0.7, rtol=1e-9)
    np.testing.assert_allclose(pred.grad_var, 1.0, rtol=1e-9)


def test_predict_tanh_in_the_small_variance_regime_is_almost_linear():
    q0 = 1e-3
    pred = init.predict("tanh", "xavier_normal", 64, 10, input_var=q0)
    assert pred.pre_var[0] == pytest.approx(q0, rel=1e-12)
    # E[tanh(z)^2] = q - 2 q^2 + (17/3) q^3 - (62/3) q^4 + O(q^5) for z ~ N(0, q): a slow decay.
    series = q0 - 2 * q0**2 + 17 / 3 * q0**3 - 62 / 3 * q0**4
    assert pred.pre_var[1] == pytest.approx(series, rel=1e-9)
    assert np.all(np.diff(pred.pre_var) < 0)
    np.testing.assert_allclose(pred.pre_var, q0, rtol=0.02)
    # E[tanh'(z)^2] = 1 - 4q + O(q^2): the gradient barely shrinks either.
    np.testing.assert_allclose(pred.grad_var, 1.0, rtol=0.05)
    assert pred.grad_var[0] < 1.0


def test_predict_sigmoid_gradient_vanishes_geometrically():
    pred = init.predict("sigmoid", "default", 64, 30)
    assert pred.grad_var[0] < 1e-40
    assert np.all(np.diff(pred.grad_var) > 0)  # smallest nearest the input


@pytest.mark.parametrize("act,scheme", [("relu", "he"), ("tanh", "xavier_normal"),
                                        ("sigmoid", "xavier_normal")])
def test_predict_roughly_matches_a_measured_wide_network(act, scheme):
    width, depth = 256, 6
    pred = init.predict(act, scheme, width, depth)
    model = networks.mlp(depth, width, act, init=scheme, in_features=width, seed=0)
    # Data and weights from different seeds: the same stream would correlate them.
    x = torch.randn(256, width, generator=torch.Generator().manual_seed(100))
    r = torch.randn(256, 10, generator=torch.Generator().manual_seed(200))
    with probes.watch(model) as rec:
        (model(x) * r).sum().backward()  # a sum over samples: per-sample gradients add up
    rows = rec.report()[:-1]
    pre_m2 = np.array([row.pre_std**2 + row.pre_mean**2 for row in rows])
    grad_sq = np.array([row.output_grad_norm**2 for row in rows])
    # Finite width (256) and one network: within a factor 1.6 layer by layer.
    np.testing.assert_allclose(pre_m2 / pred.pre_var, 1.0, rtol=0.6)
    np.testing.assert_allclose((grad_sq / grad_sq[-1]) / pred.grad_var, 1.0, rtol=0.6)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: init.weight_variance(3, 4, 4), TypeError, "scheme"),
    (lambda: init.weight_variance("kaiming", 4, 4), ValueError, "unknown init scheme 'kaiming'"),
    (lambda: init.weight_variance("he", 4, 4, std=2.0), ValueError, "unknown parameter.*std"),
    (lambda: init.weight_variance("normal", 4, 4, std=-1.0), ValueError, "std"),
    (lambda: init.weight_variance("normal", 4, 4, std=math.nan), ValueError, "std"),
    (lambda: init.weight_variance("orthogonal", 4, 4, gain=True), TypeError, "gain"),
    (lambda: init.weight_variance("constant", 4, 4, value="1"), TypeError, "value"),
    (lambda: init.weight_variance("he", 0, 4), ValueError, "fan_in"),
    (lambda: init.weight_variance("he", 4, 2.5), TypeError, "fan_out"),
    (lambda: init.apply("model", "he"), TypeError, "model"),
    (lambda: init.apply(nn.ReLU(), "he"), ValueError, "no Linear or Conv"),
    (lambda: init.apply(nn.Linear(2, 2), "bogus"), ValueError, "scheme"),
    (lambda: init.apply(nn.Linear(2, 2), "he", seed="0"), TypeError, "seed"),
    (lambda: init.weight_layers([nn.Linear(2, 2)]), TypeError, "model"),
    (lambda: init.lsuv(nn.Linear(2, 2), [[1.0, 2.0]]), TypeError, "x"),
    (lambda: init.lsuv(nn.Linear(2, 2), torch.ones(3, 2, dtype=torch.int64)), TypeError, "x"),
    (lambda: init.lsuv(nn.Linear(2, 2), torch.ones(3, 2), tol=0), ValueError, "tol"),
    (lambda: init.lsuv(nn.Linear(2, 2), torch.ones(3, 2), max_iter=0), ValueError, "max_iter"),
    (lambda: init.lsuv("model", torch.ones(3, 2)), TypeError, "model"),
    (lambda: init.gaussian_moments("relu", -1.0), ValueError, "variance q"),
    (lambda: init.gaussian_moments("relu", math.inf), ValueError, "variance q"),
    (lambda: init.gaussian_moments("relu", "1"), TypeError, "variance q"),
    (lambda: init.gaussian_moments("nope", 1.0), ValueError, "unknown activation"),
    (lambda: init.gaussian_moments("relu", 1.0, cells=0), ValueError, "cells"),
    (lambda: init.gaussian_moments("relu", 1.0, slope=0.1), ValueError, "slope"),
    (lambda: init.predict("relu", "he", 0, 3), ValueError, "width"),
    (lambda: init.predict("relu", "he", 8, True), TypeError, "depth"),
    (lambda: init.predict("relu", "he", 8, 3, input_var=0), ValueError, "input_var"),
    (lambda: init.predict("relu", "he", 8, 3, input_var=math.nan), ValueError, "input_var"),
    (lambda: init.predict("relu", "glorot", 8, 3), ValueError, "scheme"),
    (lambda: init.predict("swish", "he", 8, 3, activation_params={"beta": -1}), ValueError, "beta"),
])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --- bad input found by fuzzing the public API (issue 18), and the fixes' properties ---

@pytest.mark.parametrize("call,exc,match", [
    (lambda: init.gaussian_moments("relu", 1.0, cells=1), ValueError, "cells"),  # was (0, 0, 0)
    (lambda: init.gaussian_moments("relu", 1.0, cells=2401), ValueError, "even"),
    (lambda: init.gaussian_moments("relu", 1.0, cells=2.0), TypeError, "cells"),
    (lambda: init.gaussian_moments("relu", math.nan), ValueError, "variance q"),
    (lambda: init.weight_variance("normal", 4, 4, std=1e300), ValueError, "float32"),
    (lambda: init.weight_variance("normal", 4, 4, std=None), TypeError, "std"),
    (lambda: init.weight_variance("he", 4, 4, nonlinearity="relu7"), ValueError, "unknown activation"),
    (lambda: init.weight_variance("he", 4, 4, nonlinearity=3), TypeError, "nonlinearity"),
    (lambda: init.gain(3), TypeError, "nonlinearity"),
    (lambda: init.apply(nn.Linear(2, 2), "he", seed=-1), ValueError, "seed"),
    (lambda: init.apply(nn.Linear(2, 2), "he", seed=1.0), TypeError, "seed"),
    (lambda: init.lsuv(nn.Linear(4, 2), torch.ones(3, 5)), ValueError, "4 features"),
    (lambda: init.lsuv(nn.Linear(4, 2), torch.ones(3, 4, dtype=torch.float64)), TypeError, "dtype"),
    (lambda: init.lsuv(nn.Linear(4, 2), torch.ones(0, 4)), ValueError, "empty"),
    (lambda: init.lsuv(nn.Linear(4, 2), torch.ones(3, 4), tol=math.nan), ValueError, "tol"),
    (lambda: init.lsuv(nn.Linear(4, 2), torch.ones(3, 4), tol=1.5), ValueError, "tol"),
    (lambda: init.lsuv(nn.Linear(4, 2), torch.zeros(8, 4)), ValueError, "variance"),  # nothing to rescale
    (lambda: init.predict("relu", "normal", 8, 400, scheme_params={"std": 1e3}), ValueError, "overflow"),
])
def test_more_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_lsuv_warns_when_a_layer_does_not_converge():
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    model = networks.mlp(3, 16, "relu", in_features=16, seed=0)
    with pytest.warns(RuntimeWarning, match=r"lsuv: .* not within tol=1e-12 .* max_iter=2"):
        init.lsuv(model, x, tol=1e-12, max_iter=2)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        init.lsuv(networks.mlp(3, 16, "relu", in_features=16, seed=0), x, seed=0)  # converges


def test_orthogonal_and_every_scheme_work_on_half_precision():
    for scheme in init.schemes():
        model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 4)).half()
        init.apply(model, scheme, seed=0)
        assert model[0].weight.dtype == torch.float16
        assert torch.isfinite(model[0].weight).all()
    w = init.apply(nn.Linear(16, 8).to(torch.bfloat16), "orthogonal", seed=0).weight.float()
    torch.testing.assert_close(w @ w.T, torch.eye(8), atol=0.03, rtol=0)


def test_apply_never_touches_torchs_global_or_cuda_generators(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("apply reseeded a global generator")
    monkeypatch.setattr(torch, "manual_seed", refuse)
    monkeypatch.setattr(torch.cuda, "manual_seed", refuse)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", refuse)
    layer = nn.Linear(4, 4)  # (building it draws from the global generator, as in PyTorch)
    state = torch.get_rng_state()
    init.apply(layer, "orthogonal", seed=3)
    networks.mlp(2, 8, in_features=4, seed=3)
    networks.rnn(4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_numpy_scalars_are_accepted_wherever_a_number_is():
    a = nn.Linear(8, 8)
    b = nn.Linear(8, 8)
    init.apply(a, "normal", seed=np.int64(2), std=np.float32(0.5))
    init.apply(b, "normal", seed=2, std=0.5)
    assert torch.equal(a.weight, b.weight)
    v = init.weight_variance("normal", np.int32(4), np.int64(4), std=np.float64(0.1))
    assert v == pytest.approx(0.01)
    assert init.gaussian_moments("relu", np.float32(2.0))[1] == pytest.approx(1.0, rel=1e-6)


def test_the_registry_keeps_fill_variance_and_parameters_together():
    assert list(init.SCHEMES) == init.schemes()
    for name, s in init.SCHEMES.items():
        assert s.name == name and callable(s.fill) and callable(s.variance) and s.formula
        assert name in init.apply.__doc__  # the generated table of schemes


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "selu"])
def test_gain_is_torchs_calculate_gain_where_torch_has_one(name):
    assert init.gain(name) == nn.init.calculate_gain(name)


@given(st.floats(min_value=0.0, max_value=0.99))
def test_gain_of_leaky_relu_follows_its_slope(slope):
    assert init.gain("leaky_relu", slope=slope) == pytest.approx(math.sqrt(2 / (1 + slope**2)))


@pytest.mark.parametrize("name", ["elu", "gelu", "silu", "softplus"])
def test_gain_elsewhere_keeps_a_unit_gaussians_second_moment(name):
    g = init.gain(name)
    assert g**2 * init.gaussian_moments(name, 1.0)[1] == pytest.approx(1.0, rel=1e-9)


def test_he_follows_the_nonlinearity_it_is_given():
    layer = nn.Linear(400, 300)
    init.apply(layer, "he", seed=0, nonlinearity="tanh")
    expected = (5 / 3) ** 2 / 400
    assert init.weight_variance("he", 400, 300, nonlinearity="tanh") == pytest.approx(expected)
    assert float(layer.weight.detach().double().var()) == pytest.approx(expected, rel=0.03)
    assert init.weight_variance("he", 400, 300) == pytest.approx(2 / 400)  # ReLU's by default
    assert init.weight_variance("he", 400, 300, gain=1.0) == pytest.approx(1 / 400)
    # networks.mlp can hand He its own activation's gain.
    model = networks.mlp(2, 256, "leaky_relu", init="he", in_features=256, seed=0,
                         activation_params={"slope": 0.5}, init_params={"nonlinearity": "auto"})
    w = model.layer2.linear.weight.double()
    assert float(w.detach().var()) == pytest.approx(2 / (1 + 0.25) / 256, rel=0.05)


@given(st.sampled_from(init.schemes()), st.integers(1, 4096), st.integers(1, 4096))
def test_weight_variance_is_finite_and_nonnegative_for_any_fans(scheme, fan_in, fan_out):
    v = init.weight_variance(scheme, fan_in, fan_out)
    assert math.isfinite(v) and v >= 0


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not math.isfinite(v)),
                 st.floats(min_value=3.5e38, max_value=1e308)))
def test_no_nonfinite_or_float32_overflowing_parameter_is_accepted(bad):
    with pytest.raises(ValueError, match="std"):
        init.weight_variance("normal", 4, 4, std=bad)


def test_steps_to_loss_is_the_first_window_mean_below_the_threshold():
    loss = np.array([[3.0, 2.0, 1.0, 0.5, 0.2, 0.1],
                     [3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
                     [1.0, 0.1, np.nan, 0.1, 0.1, 0.1]])
    got = init.steps_to_loss(loss, 0.75, window=2)
    # row 0: means of (1, .5) = .75 at step 4; row 1 never; row 2: (1, .1) = .55 at step 2
    assert got.tolist() == [4.0, math.inf, 2.0]
    # a NaN step spoils every window that holds it; later windows count again
    assert init.steps_to_loss(loss[2:], 0.2, window=2).tolist() == [5.0]
    brute = [next((t + 1 for t in range(1, 6) if loss[0, t - 1:t + 1].mean() <= 0.3),
                  math.inf)]
    assert init.steps_to_loss(loss[:1], 0.3, window=2).tolist() == brute
    with pytest.raises(ValueError, match="loss"):
        init.steps_to_loss(np.ones(4), 1.0)
    with pytest.raises(ValueError, match="window"):
        init.steps_to_loss(loss, 1.0, window=0)
