"""Tests of lib.meanfield against independent computations.

Closed forms (ReLU's length map and arc-cosine kernel), a fine midpoint rule
(lib.init.gaussian_moments), Monte Carlo, finite differences of the maps,
iterated trajectories, autograd, and per-member loops for the stacked networks.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib import data, init
from lib import meanfield as mf


def relu_kernel(c: float, q: float) -> float:
    """E[relu(u1) relu(u2)] for correlation c, variance q (Cho & Saul's arc-cosine kernel)."""
    return q / (2 * math.pi) * (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c)


@given(q=st.floats(0.01, 10), sw=st.floats(0.1, 4), sb=st.floats(0, 1))
@settings(max_examples=25, deadline=None)
def test_relu_q_map_closed_form(q, sw, sb):
    assert mf.q_map("relu", q, sw, sb, nodes=200) == pytest.approx(sw * q / 2 + sb, rel=2e-4)


@pytest.mark.parametrize("c", [-0.9, -0.3, 0.0, 0.5, 0.9, 0.99])
def test_relu_c_map_is_the_arc_cosine_kernel(c):
    q, sw, sb = 1.3, 2.0, 0.1
    expect = (sw * relu_kernel(c, q) + sb) / (sw * q / 2 + sb)
    assert float(mf.c_map("relu", c, q, sw, sb, nodes=200)) == pytest.approx(expect, abs=3e-3)


@pytest.mark.parametrize("q", [0.05, 0.5, 1.0, 2.0])
def test_tanh_moments_match_midpoint_rule(q):
    _, m2, d2 = init.gaussian_moments("tanh", q)
    assert float(mf.gauss_expect(lambda u: torch.tanh(u) ** 2, q)) == pytest.approx(m2, rel=1e-4)
    assert float(mf.chi1("tanh", 1.0, 0.0) if q == 0 else 1.0) == 1.0
    x, w = mf.maps._gh(64)
    d = (1 - torch.tanh(math.sqrt(q) * x) ** 2) ** 2 @ w
    assert float(d) == pytest.approx(d2, rel=1e-4)


def test_c_map_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 400_000, generator=gen, dtype=torch.float64)
    q, c, sw, sb = 0.8, 0.4, 2.5, 0.1
    u1 = math.sqrt(q) * z1
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    prod = torch.tanh(u1) * torch.tanh(u2)
    qn = sw * float((torch.tanh(u1) ** 2).mean()) + sb
    mc = (sw * float(prod.mean()) + sb) / qn
    se = sw * float(prod.std()) / math.sqrt(z1.numel()) / qn
    assert abs(float(mf.c_map("tanh", c, q, sw, sb)) - mc) < 5 * se + 1e-4


def test_fixed_points_are_fixed():
    sw, sb = np.array([0.7, 1.5, 2.5, 4.0]), 0.05
    q = mf.q_fixed_point("tanh", sw, sb)
    np.testing.assert_allclose(mf.q_map("tanh", q, sw, sb), q, rtol=1e-9)
    c = mf.c_fixed_point("tanh", sw, sb)
    np.testing.assert_allclose(mf.c_map("tanh", c, q, sw, sb), c, atol=1e-6)
    chi = mf.chi1("tanh", sw, sb)
    assert np.all((c == 1) == (chi <= 1))


def test_q_fixed_point_edge_cases():
    assert float(mf.q_fixed_point("tanh", 0.8, 0.0)) < 1e-10  # every length shrinks to 0
    assert math.isinf(float(mf.q_fixed_point("relu", 3.0, 0.1)))  # grows without bound
    assert float(mf.q_fixed_point("relu", 1.0, 0.1)) == pytest.approx(0.2, rel=1e-9)


def test_critical_line_of_tanh_without_bias_is_sigma_w2_one():
    assert float(mf.chi1("tanh", 1.0, 0.0)) == pytest.approx(1.0, abs=1e-9)
    assert float(mf.chi1("tanh", 0.9, 0.0)) < 1 < float(mf.chi1("tanh", 1.1, 0.0))


def test_chi1_is_the_slope_of_the_c_map_at_one():
    sw, sb = 1.3, 0.05  # ordered: c* = 1
    q = float(mf.q_fixed_point("tanh", sw, sb))
    eps = 1e-4
    slope = (1 - float(mf.c_map("tanh", 1 - eps, q, sw, sb))) / eps
    assert slope == pytest.approx(float(mf.chi1("tanh", sw, sb)), rel=1e-3)


def test_chi_q_is_the_slope_of_the_q_map():
    sw, sb = 2.0, 0.1
    s = mf.depth_scales("tanh", sw, sb)
    q, h = float(s.q_star), 1e-5
    slope = (mf.q_map("tanh", q + h, sw, sb) - mf.q_map("tanh", q - h, sw, sb)) / (2 * h)
    assert float(slope) == pytest.approx(float(s.chi_q), rel=1e-6)


@pytest.mark.parametrize("sw", [1.2, 3.0])
def test_xi_c_is_the_decay_length_of_the_iterated_map(sw):
    sb = 0.05
    s = mf.depth_scales("tanh", sw, sb)
    traj = mf.c_trajectory("tanh", 0.2 if sw > 2 else 0.6, sw, sb, 60)
    dev = np.abs(traj - float(s.c_star))
    keep = dev > 1e-9
    slope = np.polyfit(np.arange(60)[keep][10:], np.log(dev[keep][10:]), 1)[0]
    assert -1 / slope == pytest.approx(float(s.xi_c), rel=0.05)


def test_q_trajectory_approaches_fixed_point():
    traj = mf.q_trajectory("tanh", 1.0, 2.0, 0.05, 40)
    assert traj[-1] == pytest.approx(float(mf.q_fixed_point("tanh", 2.0, 0.05)), rel=1e-8)


def test_stacked_forward_equals_member_loop():
    net = mf.stacked_mlp([1.0, 2.0, 3.0], [0.0, 0.1, 0.2], widths=[8, 8, 8], seeds=[1, 2, 3],
                         in_features=5, out_features=4, dtype=torch.float64)
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = net(x)
    for m in range(3):
        h = x
        for k, (w, b) in enumerate(zip(net.weights, net.biases)):
            h = torch.nn.functional.linear(h, w[m], b[m])
            if k < len(net.weights) - 1:
                h = torch.tanh(h)
        torch.testing.assert_close(out[m], h)


def test_stacked_weight_variance_and_orthogonality():
    net = mf.stacked_mlp([2.0] * 4, [0.5] * 4, widths=[256], seeds=[0, 1, 2, 3], in_features=256,
                         dtype=torch.float64)
    w = net.weights[0]
    assert float(w.var() * 256) == pytest.approx(2.0, rel=0.02)
    assert float(net.biases[0].var()) == pytest.approx(0.5, rel=0.2)
    orth = mf.stacked_mlp([2.0], [0.0], widths=[32], seeds=[5], in_features=32, orthogonal=True,
                          dtype=torch.float64).weights[0][0]
    torch.testing.assert_close(orth @ orth.T / 2.0, torch.eye(32, dtype=torch.float64))


def test_depths_skip_layers_and_jacobian_matches_autograd():
    net = mf.stacked_mlp([1.5, 1.5], [0.05, 0.05], widths=[6, 6, 6], seeds=[4, 4], in_features=6,
                         depths=[3, 1], dtype=torch.float64)
    x = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    jac = net.jacobian(x)
    for m, d in enumerate([3, 1]):
        def hidden(v):
            h = v
            for w, b in list(zip(net.weights, net.biases))[:d]:
                h = torch.tanh(torch.nn.functional.linear(h, w[m], b[m]))
            return h
        torch.testing.assert_close(jac[m], torch.autograd.functional.jacobian(hidden, x))
    # member 1 (depth 1) gives the same read-out as member 0's first layer alone would
    out = net(x[None])
    h = torch.tanh(torch.nn.functional.linear(x, net.weights[0][1], net.biases[0][1]))
    torch.testing.assert_close(out[1, 0], torch.nn.functional.linear(h, net.weights[-1][1],
                                                                     net.biases[-1][1]))


def test_train_stacked_members_are_independent_and_learn():
    digits = data.digits(seed=0)
    a = mf.stacked_mlp([1.0, 1.0], [0.0, 0.0], widths=[16, 16], seeds=[1, 2])
    b = mf.stacked_mlp([1.0], [0.0], widths=[16, 16], seeds=[1])
    ra = mf.train_stacked(a, digits, steps=30, lr=[0.1, 0.05], batch_size=32, seed=3)
    rb = mf.train_stacked(b, digits, steps=30, lr=0.1, batch_size=32, seed=3)
    np.testing.assert_allclose(ra.loss[0], rb.loss[0], rtol=1e-4)
    assert ra.loss[0, -5:].mean() < ra.loss[0, :5].mean()
    assert ra.train_acc.shape == (2,)


def test_correlation():
    a = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    assert mf.correlation(a, a) == pytest.approx(1.0)
    assert mf.correlation(a, -a) == pytest.approx(-1.0)


@pytest.mark.parametrize("call, exc", [
    (lambda: mf.q_map("tanh", -1.0, 1.0, 0.0), ValueError),
    (lambda: mf.q_map("tanh", "1", 1.0, 0.0), TypeError),
    (lambda: mf.q_map("nope", 1.0, 1.0, 0.0), ValueError),
    (lambda: mf.c_map("tanh", 1.5, 1.0, 1.0, 0.0), ValueError),
    (lambda: mf.depth_scales("tanh", float("nan"), 0.0), ValueError),
    (lambda: mf.gauss_expect("tanh", 1.0, nodes=1), ValueError),
    (lambda: mf.c_trajectory("tanh", 0.5, 0.5, 0.0, 5), ValueError),
    (lambda: mf.stacked_mlp([1.0], [0.0, 0.0], widths=[4], seeds=[0]), ValueError),
    (lambda: mf.stacked_mlp([1.0], [0.0], widths=[4, 8], seeds=[0], depths=[1]), ValueError),
    (lambda: mf.stacked_mlp([-1.0], [0.0], widths=[4], seeds=[0]), ValueError),
    (lambda: mf.stacked_mlp([1.0], [0.0], widths=[4], seeds=[0])(torch.ones(2, 3)), ValueError),
    (lambda: mf.correlation(torch.zeros(2, 2), torch.zeros(2, 2)), ValueError),
])
def test_bad_input(call, exc):
    with pytest.raises(exc):
        call()


def test_readout_variance_and_update_ratios():
    digits = data.digits(seed=0)
    net = mf.stacked_mlp([2.0, 2.0], [0.0, 0.0], widths=[256], seeds=[1, 2], in_features=64,
                         readout_sigma_w2=0.01, dtype=torch.float64)
    assert float(net.weights[0].var() * 64) == pytest.approx(2.0, rel=0.05)
    assert float(net.weights[1].var() * 256) == pytest.approx(0.01, rel=0.1)
    w0 = [w.clone() for w in net.weights]
    run = mf.train_stacked(net, digits, steps=1, lr=0.1, batch_size=16, record_updates=True)
    assert run.updates.shape == (2, 1, 2)
    for k in range(2):
        expect = ((net.weights[k] - w0[k]).flatten(1).norm(dim=1)
                  / w0[k].flatten(1).norm(dim=1))
        np.testing.assert_allclose(run.updates[:, 0, k], expect.numpy(), rtol=1e-9)
