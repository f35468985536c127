"""Tests of lib.probes."""
from __future__ import annotations

import pytest
import torch

from lib import activations, networks, probes


def test_jacobian_singular_values_match_the_product_of_layer_jacobians():
    model = networks.mlp(3, 12, "tanh", in_features=5, init="xavier_normal", seed=1).double()
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # Build J = D_3 W_3 D_2 W_2 D_1 W_1 by hand from the chain rule.
    jac = torch.eye(5, dtype=torch.float64)
    h = x
    d_tanh = activations.get("tanh").derivative
    for _, layer in model.hidden():
        z = layer.linear(h)
        jac = torch.diag(d_tanh(z)) @ layer.linear.weight @ jac
        h = torch.tanh(z)
    expected = torch.linalg.svdvals(jac.detach())
    got = probes.jacobian_singular_values(model[:-1], x)
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # A batch of one is the same input; singular values come largest first.
    torch.testing.assert_close(probes.jacobian_singular_values(model[:-1], x[None]), got)
    assert torch.all(got[:-1] >= got[1:])


def test_jacobian_singular_values_of_a_linear_map_are_its_singular_values():
    lin = torch.nn.Linear(4, 6, bias=True).double()
    x = torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(probes.jacobian_singular_values(lin, x),
                               torch.linalg.svdvals(lin.weight.detach()))


def test_jacobian_singular_values_rejects_bad_input():
    lin = torch.nn.Linear(3, 3)
    with pytest.raises(TypeError):
        probes.jacobian_singular_values("not a module", torch.ones(3))
    with pytest.raises(TypeError):
        probes.jacobian_singular_values(lin, torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError):
        probes.jacobian_singular_values(lin, torch.ones(2, 3))
