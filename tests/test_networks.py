"""Tests of lib.networks: names, shapes, residual blocks, seeds, and the RNN's spectral radius."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lib import init, networks


def _x(n: int = 16, features: int = 8, seed: int = 100) -> torch.Tensor:
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed))


def test_plain_mlp_has_readable_names_depth_and_width():
    model = networks.mlp(3, 16, "tanh", in_features=8, out_features=4)
    assert isinstance(model, networks.MLP) and isinstance(model, nn.Sequential)
    assert [n for n, _ in model.named_children()] == ["layer1", "layer2", "layer3", "output"]
    assert [n for n, _ in model.hidden()] == ["layer1", "layer2", "layer3"]
    shapes = [(m.linear.in_features, m.linear.out_features) for _, m in model.hidden()]
    assert shapes == [(8, 16), (16, 16), (16, 16)]
    assert (model.output.in_features, model.output.out_features) == (16, 4)
    for _, layer in model.hidden():
        assert isinstance(layer, networks.Layer)
        assert isinstance(layer.act, nn.Tanh) and layer.norm is None
    assert model(_x()).shape == (16, 4)


def test_each_layer_has_its_own_activation_module():
    model = networks.mlp(3, 8, "prelu", in_features=8)
    acts = [layer.act for _, layer in model.hidden()]
    assert len({id(a) for a in acts}) == 3
    # PReLU is learnable per layer: three separate slope parameters.
    assert sum(1 for n, _ in model.named_parameters() if n.endswith("act.weight")) == 3


def test_activation_params_reach_the_modules():
    model = networks.mlp(2, 8, "leaky_relu", in_features=8, activation_params={"slope": 0.2})
    assert model.layer1.act.negative_slope == pytest.approx(0.2)


@pytest.mark.parametrize("norm,cls", [("none", type(None)), ("batch", nn.BatchNorm1d),
                                      ("layer", nn.LayerNorm)])
def test_norm_layers(norm, cls):
    model = networks.mlp(2, 8, "relu", norm=norm, in_features=8)
    assert isinstance(model.layer1.norm, cls)
    assert model(_x()).shape == (16, 10)


def test_layer_forward_is_linear_norm_activation():
    model = networks.mlp(1, 6, "tanh", norm="layer", in_features=8, seed=2)
    x = _x()
    layer = model.layer1
    expected = torch.tanh(layer.norm(layer.linear(x)))
    torch.testing.assert_close(layer(x), expected)


def test_residual_mlp_names_and_block_formula():
    model = networks.mlp(3, 12, "relu", residual=True, residual_scale=0.5, in_features=8,
                         out_features=3, seed=1)
    assert [n for n, _ in model.named_children()] == ["input", "block1", "block2", "block3",
                                                       "output"]
    block = model.block2
    assert isinstance(block, networks.ResidualBlock) and block.scale == 0.5
    h = torch.randn(5, 12, generator=torch.Generator().manual_seed(3))
    expected = h + 0.5 * block.fc2(torch.relu(block.fc1(h)))
    torch.testing.assert_close(block(h), expected)
    assert model(_x()).shape == (16, 3)


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_zero_init_residual_makes_every_block_the_identity(norm):
    model = networks.mlp(4, 12, "gelu", residual=True, zero_init_residual=True, norm=norm,
                         in_features=8, init="he", seed=0)
    h = torch.randn(7, 12, generator=torch.Generator().manual_seed(4))
    for name, block in model.hidden():
        if name == "input":
            continue
        assert torch.equal(block(h), h)
        assert torch.count_nonzero(block.fc2.weight) == 0
        assert torch.count_nonzero(block.fc1.weight) > 0  # only the last Linear starts at zero
    stream = model.input(_x())
    torch.testing.assert_close(model[1:-1](stream), stream, rtol=0, atol=0)


def test_without_zero_init_the_blocks_are_not_the_identity():
    model = networks.mlp(2, 12, "relu", residual=True, in_features=8, init="he", seed=0)
    h = torch.randn(7, 12)
    assert not torch.allclose(model.block1(h), h)


def test_same_seed_same_weights_and_the_global_rng_is_untouched():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = networks.mlp(3, 10, "tanh", in_features=8, seed=7)
    b = networks.mlp(3, 10, "tanh", in_features=8, seed=7)
    c = networks.mlp(3, 10, "tanh", in_features=8, seed=8)
    r = networks.rnn(6, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    r2 = networks.rnn(6, seed=1)
    assert torch.equal(r.W.weight, r2.W.weight) and torch.equal(r.U.weight, r2.U.weight)


def test_init_is_applied_to_every_linear():
    model = networks.mlp(3, 200, "relu", init="he", in_features=200, seed=0)
    for _, m in init.weight_layers(model):
        assert float(m.weight.detach().var()) == pytest.approx(2 / 200, rel=0.05)
        assert torch.all(m.bias == 0)
    small = networks.mlp(2, 50, "tanh", init="normal", init_params={"std": 0.1}, in_features=50)
    assert float(small.layer2.linear.weight.detach().std()) == pytest.approx(0.1, rel=0.05)
    nobias = networks.mlp(2, 8, bias=False, in_features=8)
    assert all(m.bias is None for _, m in init.weight_layers(nobias))


@pytest.mark.parametrize("rho", [0.5, 1.0, 1.3])
def test_rnn_spectral_radius_is_exact(rho):
    model = networks.rnn(32, spectral_radius=rho, seed=3)
    eig = torch.linalg.eigvals(model.W.weight.detach().double())
    # A scaled orthogonal matrix: every eigenvalue has modulus rho, not just the largest.
    torch.testing.assert_close(eig.abs(), torch.full((32,), rho, dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)


def test_rnn_forward_returns_every_state():
    model = networks.rnn(5, in_features=2, seed=0)
    x = torch.randn(3, 7, 2, generator=torch.Generator().manual_seed(1))
    h, states = model(x)
    assert h.shape == (3, 5) and len(states) == 7
    assert torch.equal(states[-1], h)
    # h_1 = tanh(U x_1) from h_0 = 0.
    torch.testing.assert_close(states[0], torch.tanh(model.U(x[:, 0])))
    h2, _ = model(x, h0=torch.ones(3, 5))
    assert not torch.allclose(h2, h)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: networks.mlp(0, 8), ValueError, "depth"),
    (lambda: networks.mlp(2.0, 8), TypeError, "depth"),
    (lambda: networks.mlp(True, 8), TypeError, "depth"),
    (lambda: networks.mlp(2, 0), ValueError, "width"),
    (lambda: networks.mlp(2, "8"), TypeError, "width"),
    (lambda: networks.mlp(2, 8, in_features=0), ValueError, "in_features"),
    (lambda: networks.mlp(2, 8, out_features=None), TypeError, "out_features"),
    (lambda: networks.mlp(2, 8, seed=-1), ValueError, "seed"),
    (lambda: networks.mlp(2, 8, norm="group"), ValueError, "norm"),
    (lambda: networks.mlp(2, 8, residual="yes"), TypeError, "residual"),
    (lambda: networks.mlp(2, 8, "relu7"), ValueError, "unknown activation"),
    (lambda: networks.mlp(2, 8, activation_params={"slope": 0.1}), ValueError, "slope"),
    (lambda: networks.mlp(2, 8, init="glorot"), ValueError, "scheme"),
    (lambda: networks.mlp(2, 8, init="normal", init_params={"std": -1}), ValueError, "std"),
    (lambda: networks.mlp(2, 8, residual_scale="big"), (TypeError, ValueError), "residual_scale"),
    (lambda: networks.rnn(0), ValueError, "hidden"),
    (lambda: networks.rnn(4, spectral_radius=-1.0), ValueError, "spectral_radius"),
    (lambda: networks.rnn(4, spectral_radius=math.nan), ValueError, "spectral_radius"),
    (lambda: networks.rnn(4, seed=-2), ValueError, "seed"),
    (lambda: networks.rnn(4, in_features=0), ValueError, "in_features"),
    (lambda: networks.rnn(4, activation="nope"), ValueError, "unknown activation"),
    (lambda: networks.rnn(4)(torch.ones(3, 4)), ValueError, "x must be"),
])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("radius", [float("inf"), float("nan"), -1.0])
def test_rnn_rejects_a_radius_that_is_not_finite_and_nonnegative(radius):
    with pytest.raises(ValueError, match="spectral_radius"):
        networks.rnn(8, spectral_radius=radius)


# --- bad input found by fuzzing the public API (issue 18) ---

@pytest.mark.parametrize("call,exc,match", [
    (lambda: networks.mlp(2, 8, residual=True, residual_scale=math.nan), ValueError, "residual_scale"),
    (lambda: networks.mlp(2, 8, residual=True, residual_scale=1e300), ValueError, "residual_scale"),
    (lambda: networks.mlp(2, 8, residual_scale="big"), TypeError, "residual_scale"),
    (lambda: networks.mlp(2, 8, bias="no"), TypeError, "bias"),  # 'no' is truthy: it built biases
    (lambda: networks.mlp(2, 8, zero_init_residual=1), TypeError, "zero_init_residual"),
    (lambda: networks.mlp(2, 8, norm=None), TypeError, "norm"),
    (lambda: networks.mlp(2, 8, seed=1.5), TypeError, "seed"),
    (lambda: networks.Layer(0, 4, nn.ReLU()), ValueError, "fan_in"),
    (lambda: networks.Layer(4, 2.0, nn.ReLU()), TypeError, "fan_out"),
    (lambda: networks.Layer(4, 4, "relu"), TypeError, "act"),
    (lambda: networks.Layer(4, 4, nn.ReLU(), norm="group"), ValueError, "norm"),
    (lambda: networks.Layer(4, 4, nn.ReLU(), bias="yes"), TypeError, "bias"),
    (lambda: networks.ResidualBlock(-1, nn.ReLU()), ValueError, "width"),
    (lambda: networks.ResidualBlock(4, nn.ReLU(), scale=math.inf), ValueError, "scale"),
    (lambda: networks.ResidualBlock(4, nn.ReLU(), norm="batchnorm"), ValueError, "norm"),
    (lambda: networks.VanillaRNN(0), ValueError, "hidden"),
    (lambda: networks.VanillaRNN(4, in_features=1.0), TypeError, "in_features"),
    (lambda: networks.VanillaRNN(4, activation="tanhh"), ValueError, "unknown activation"),
    (lambda: networks.rnn(4, in_features=2)(torch.ones(3, 5, 3)), ValueError, r"\(batch, time, 2\)"),
    (lambda: networks.rnn(4)(torch.ones(3, 5, 1, dtype=torch.float64)), TypeError, "dtype"),
    (lambda: networks.rnn(4)(torch.ones(3, 5, 1), h0=torch.ones(2, 4)), ValueError, "h0"),
    (lambda: networks.rnn(4)([[1.0]]), TypeError, "x must be a torch.Tensor"),
    (lambda: networks.rnn(4, spectral_radius=True), TypeError, "spectral_radius"),
])
def test_more_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bias_false_builds_no_biases_and_numpy_sizes_are_accepted():
    model = networks.mlp(np.int64(2), np.int32(8), in_features=np.int64(4), bias=False,
                         residual_scale=np.float32(0.5), seed=np.int64(0))
    assert all(not n.endswith("bias") for n, _ in model.named_parameters())
    rnn = networks.rnn(np.int64(4), spectral_radius=np.float32(0.9), seed=np.int64(1))
    eig = torch.linalg.eigvals(rnn.W.weight.detach().double()).abs()
    assert float(eig.max()) == pytest.approx(0.9, rel=1e-5)


@given(st.integers(1, 4), st.integers(1, 16), st.sampled_from(networks.NORMS), st.booleans(),
       st.booleans(), st.floats(-2, 2, allow_nan=False))
@settings(max_examples=25, deadline=None)
def test_any_valid_arguments_build_a_model_with_finite_outputs(depth, width, norm, residual, bias, scale):
    model = networks.mlp(depth, width, norm=norm, residual=residual, bias=bias,
                         residual_scale=scale, in_features=3, out_features=2, seed=0)
    out = model(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (5, 2) and torch.isfinite(out).all()
