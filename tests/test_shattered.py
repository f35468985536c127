"""lib.meanfield.shattered against independent computations: autograd (reverse
mode) for the forward-mode input gradients, finite differences, numpy's
correlate for the autocorrelation, Monte Carlo for the log-norm variance."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib import meanfield as mf
from lib.meanfield import shattered


def _draw_from(seed: int):
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape: int, var: float) -> torch.Tensor:
        return torch.randn(2, *shape, generator=gen, dtype=torch.float64) * math.sqrt(var)
    return draw


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_forward_mode_gradient_matches_autograd(residual, batchnorm):
    x = torch.linspace(-2, 2, 64, dtype=torch.float64).requires_grad_(True)
    f = shattered._field(x, _draw_from(3), 6, 16, 0.3, 0.7, residual, batchnorm,
                         torch.float64)
    for layer in (0, 5):
        # with the batch statistics held fixed, output i depends on x_i only,
        # so the gradient of the summed outputs is dy_i/dx_i at every i
        (g,) = torch.autograd.grad(f.outputs[:, layer].sum(), x, retain_graph=True)
        torch.testing.assert_close(f.grads[:, layer].sum(0).detach(), g,
                                   rtol=1e-10, atol=1e-12)
        # and per member (two members): autograd of each member's outputs
        (g0,) = torch.autograd.grad(f.outputs[0, layer].sum(), x, retain_graph=True)
        torch.testing.assert_close(f.grads[0, layer].detach(), g0, rtol=1e-10, atol=1e-12)


def test_gradient_matches_finite_differences_without_batchnorm():
    # without BN each grid point is independent; the net is piecewise linear
    eps = 1e-7
    seeds = [4, 5]
    for residual in (False, True):
        kw = dict(residual=residual, batchnorm=False, points=101, sigma_b2=0.2)
        base = mf.input_gradients(5, 24, seeds, **kw)
        up = mf.input_gradients(5, 24, seeds, span=(-2 + eps, 2 + eps), **kw)
        down = mf.input_gradients(5, 24, seeds, span=(-2 - eps, 2 - eps), **kw)
        fd = (up.outputs - down.outputs) / (2 * eps)
        close = torch.isclose(fd, base.grads, rtol=1e-5, atol=1e-6)
        assert close.double().mean() > 0.98  # a kink inside (x - eps, x + eps) is rare


def test_shapes_and_coactivation_range():
    f = mf.input_gradients(3, 32, [7], points=256, sigma_b2=0.1)
    assert f.grads.shape == (1, 3, 256) and f.coactive.shape == (1, 3)
    assert torch.all((f.coactive > 0) & (f.coactive <= 1 + 1e-12))


def test_autocorrelation_matches_numpy():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((3, 50)).cumsum(1)
    for lag in (0, 1, 7):
        got = mf.autocorrelation(torch.tensor(g), lag).numpy()
        for row, val in zip(g, got):
            c = row - row.mean()
            full = np.correlate(c, c, mode="full")
            assert val == pytest.approx(full[len(c) - 1 + lag] / full[len(c) - 1], rel=1e-12)
    with pytest.raises(ValueError, match="lag"):
        mf.autocorrelation(torch.tensor(g), 50)
    with pytest.raises(ValueError, match="constant"):
        mf.autocorrelation(torch.ones(2, 5, dtype=torch.float64), 1)
    with pytest.raises(TypeError):
        mf.autocorrelation(np.ones(5), 1)


def test_white_noise_decorrelates_brown_noise_does_not():
    gen = torch.Generator().manual_seed(1)
    white = torch.randn(200, 256, generator=gen, dtype=torch.float64)
    assert abs(float(mf.autocorrelation(white, 1).mean())) < 0.01
    assert float(mf.autocorrelation(white.cumsum(1), 1).mean()) > 0.9


def test_relu_log_norm_variance_against_monte_carlo():
    gen = torch.Generator().manual_seed(2)
    n = 8
    g = torch.randn(200_000, n, generator=gen, dtype=torch.float64)
    factor = (2 / n) * torch.relu(g).pow(2).sum(1)
    factor = factor[factor > 0]
    assert mf.relu_log_norm_variance([n]) == pytest.approx(float(torch.log(factor).var()),
                                                            rel=0.02)
    assert mf.relu_log_norm_variance([n, n, n]) == pytest.approx(
        3 * mf.relu_log_norm_variance([n]))
    assert mf.relu_log_norm_variance([2000]) == pytest.approx(5 / 2000, rel=0.01)


def test_log_norms_match_the_exact_variance():
    from lib import seeds
    out = mf.log_norms([8], [2, 4], seeds.member_seeds(1500, "test-log-norms"))
    assert set(out) == {(8, 2), (8, 4)}
    for (n, d), (act, grad) in out.items():
        assert act.shape == grad.shape == (1500,)
        var, se = mf.variance_and_error(act)
        exact = mf.relu_log_norm_variance([n] * d)
        assert abs(var - exact) < 4 * se, (n, d, var, exact, se)
        # the squared norms are 1 on average (He init), activations and gradients
        assert float(torch.exp(act).mean()) == pytest.approx(1, abs=0.1)
        assert float(torch.exp(grad).mean()) == pytest.approx(1, abs=0.15)


def test_variance_and_error_of_a_normal_sample():
    gen = torch.Generator().manual_seed(3)
    v, se = mf.variance_and_error(torch.randn(4000, generator=gen, dtype=torch.float64) * 2)
    assert v == pytest.approx(4, rel=0.06)
    assert se == pytest.approx(4 * math.sqrt(2 / 4000), rel=0.1)
    with pytest.raises(ValueError):
        mf.variance_and_error(torch.ones(3))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="depth"):
        mf.input_gradients(0, 8, [1])
    with pytest.raises(ValueError, match="span"):
        mf.input_gradients(2, 8, [1], span=(1, -1))
    with pytest.raises(ValueError, match="seeds"):
        mf.input_gradients(2, 8, [])
    with pytest.raises(TypeError):
        mf.input_gradients(2, 8, [1], residual="yes")
    with pytest.raises(ValueError, match="widths"):
        mf.log_norms([0], [2], [1])
    with pytest.raises(ValueError, match="widths"):
        mf.relu_log_norm_variance([0])
