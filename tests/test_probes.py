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


def test_active_fraction_counts_positive_pre_activations_per_unit():
    model = networks.mlp(3, 6, "relu", in_features=4, init="he", seed=0)
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.layer2.linear.bias[:2] = -1e3  # two units that can never fire
    got = probes.active_fraction(model, x)
    assert list(got) == ["layer1.linear", "layer2.linear", "layer3.linear"]
    # The same numbers by hand, layer by layer.
    h = x
    for name, layer in model.hidden():
        z = layer.linear(h).detach()
        torch.testing.assert_close(got[f"{name}.linear"], (z > 0).double().mean(0))
        h = torch.relu(z)
    assert got["layer2.linear"][:2].tolist() == [0.0, 0.0]
    dead = probes.dead_units(model, x)
    assert dead["layer2.linear"][:2].all()
    assert dead["layer2.linear"].dtype == torch.bool
    # For ReLU the mask agrees with the probe report's dead fraction on the same batch.
    with probes.watch(model) as rec:
        model(x)
    for r in rec.report()[:-1]:
        assert r.dead == pytest.approx(float(dead[r.name].float().mean()))
    # Every hook it attached is gone again.
    assert all(not m._forward_hooks for m in model.modules())


def test_active_fraction_pools_conv_positions_and_rejects_bad_input():
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU())
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    got = probes.active_fraction(conv, x)
    z = conv[0](x).detach()
    torch.testing.assert_close(got["0"], (z > 0).double().mean(dim=(0, 2, 3)))
    with pytest.raises(TypeError):
        probes.active_fraction("model", x)
    with pytest.raises(TypeError):
        probes.active_fraction(conv, x.long())
    with pytest.raises(ValueError):
        probes.active_fraction(conv, torch.ones(3))


def test_hidden_outputs_replay_the_forward_pass_layer_by_layer():
    model = networks.mlp(3, 5, "tanh", in_features=4, seed=0)
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    outs = probes.hidden_outputs(model, x)
    assert [name for name, _ in outs] == ["layer1", "layer2", "layer3", "output"]
    h = x
    for (_, got), (_, module) in zip(outs, model.named_children()):
        h = module(h)
        torch.testing.assert_close(got, h.detach())
    assert not any(t.requires_grad for _, t in outs)
    torch.testing.assert_close(outs[-1][1], model(x).detach())
    # Residual nets: the stream after each block; a zero-initialised block is the identity.
    res = networks.mlp(2, 5, "relu", residual=True, zero_init_residual=True, in_features=4, seed=0)
    outs = probes.hidden_outputs(res, x)
    assert [name for name, _ in outs] == ["input", "block1", "block2", "output"]
    torch.testing.assert_close(outs[2][1], outs[0][1])


def test_hidden_outputs_rejects_bad_input():
    model = networks.mlp(2, 5, "relu", in_features=4, seed=0)
    with pytest.raises(TypeError):
        probes.hidden_outputs(torch.nn.Linear(4, 4), torch.ones(2, 4))
    with pytest.raises(TypeError):
        probes.hidden_outputs(model, torch.ones(2, 4, dtype=torch.int64))
