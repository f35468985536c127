"""Tests of lib.architectures: shapes, the init properties Fixup and SkipInit
promise, members that match separate networks, determinism, bad input."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lib import architectures as arch


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(6, 40, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(arch.ORDERINGS))
def test_resnet_shapes(name, x):
    norm, init = arch.ORDERINGS[name]
    net = arch.ResNet1d(3, 4, members=2, norm=norm, init=init, seeds=[1, 2])
    assert net(x).shape == (2, 6, 10)
    assert net(x.unsqueeze(1)).shape == (2, 6, 10)
    s, b, logits = net.stream(x)
    assert s.shape == (2, 4) and b.shape == (2, 3) and logits.shape == (2, 6, 10)
    assert (s > 0).all()


def test_resnet_is_deterministic_and_seeded(x):
    a = arch.ResNet1d(2, 4, members=2, seeds=[5, 6])
    b = arch.ResNet1d(2, 4, members=2, seeds=[5, 6])
    c = arch.ResNet1d(2, 4, members=2, seeds=[5, 7])
    assert torch.equal(a(x), b(x))
    out_a, out_c = a(x), c(x)
    assert torch.equal(out_a[0], out_c[0]) and not torch.equal(out_a[1], out_c[1])


@pytest.mark.parametrize("name", ["pre-BN", "post-BN", "no norm", "SkipInit"])
def test_members_equal_separate_networks(name, x):
    """Member m of a population computes what a 1-member network with its seed does."""
    norm, init = arch.ORDERINGS[name]
    pop = arch.ResNet1d(3, 4, members=3, norm=norm, init=init, seeds=[3, 4, 5])
    one = arch.ResNet1d(3, 4, members=1, norm=norm, init=init, seeds=[4])
    torch.testing.assert_close(pop(x)[1], one(x)[0], rtol=1e-4, atol=1e-5)
    y = torch.arange(6) % 10
    pop_loss = arch.population_loss(pop(x), y)[0]
    pop_loss.backward()
    arch.population_loss(one(x), y)[0].backward()
    g_pop = pop.conv1[1].weight.grad[4:8]
    torch.testing.assert_close(g_pop, one.conv1[1].weight.grad, rtol=1e-4, atol=1e-6)


def test_fixup_init_properties(x):
    L = 9
    net = arch.ResNet1d(L, 8, members=2, norm="none", init="fixup", seeds=[0, 1])
    for c2 in net.conv2:
        assert torch.count_nonzero(c2.weight) == 0
    assert torch.count_nonzero(net.head.weight) == 0
    he = arch.ResNet1d(L, 8, members=2, norm="none", init="he", seeds=[0, 1])
    ratio = float(net.conv1[0].weight.detach().std() / he.conv1[0].weight.detach().std())
    assert math.isclose(ratio, L ** -0.5, rel_tol=1e-5)  # L^(-1/(2m-2)), m = 2
    names = {n for n, _ in net.named_parameters()}
    assert {"alpha", "a", "b", "c", "d"} <= names
    assert torch.equal(net.alpha, torch.ones(L, 2)) and not net.a.any()
    s, b, _ = net.stream(x)
    assert torch.equal(b, torch.zeros_like(b))  # every block is the identity
    assert torch.allclose(s, s[:, :1].expand_as(s))


def test_skipinit_init_properties(x):
    net = arch.ResNet1d(4, 8, members=2, norm="none", init="skipinit", seeds=[0, 1])
    assert isinstance(net.alpha, torch.nn.Parameter)
    assert torch.equal(net.alpha.detach(), torch.zeros(4, 2))
    arch.population_loss(net(x), torch.zeros(6, dtype=torch.long))[0].backward()
    assert float(net.block_grad_norms().max()) == 0.0
    assert float(net.alpha.grad.abs().min()) > 0


def test_he_no_norm_has_no_learnable_scalars():
    net = arch.ResNet1d(2, 4, norm="none", init="he")
    assert "alpha" not in dict(net.named_parameters())
    assert "alpha" in dict(net.named_buffers())


def test_population_loss_drops_diverged_members():
    logits = torch.zeros(3, 4, 10, requires_grad=True)
    bad = logits.clone()
    bad.data[1] = float("nan")
    total, per = arch.population_loss(bad, torch.zeros(4, dtype=torch.long),
                                      torch.tensor([1.0, 1.0, 0.5]))
    assert math.isinf(float(per[1])) and math.isclose(float(total.detach()), 1.5 * math.log(10),
                                                      rel_tol=1e-6)


@pytest.mark.parametrize("kwargs, word", [
    ({"depth": 0}, "depth"), ({"width": 1.5}, "width"), ({"members": 0}, "members"),
    ({"norm": "batch"}, "norm"), ({"init": "xavier"}, "init"),
    ({"norm": "pre", "init": "fixup"}, "init"),
    ({"members": 2, "seeds": [1]}, "seeds"), ({"seeds": [-1]}, "seeds"),
])
def test_resnet_bad_arguments(kwargs, word):
    args = {"depth": 2, "width": 4, **kwargs}
    with pytest.raises(ValueError, match=word):
        arch.ResNet1d(**args)


def test_resnet_bad_input():
    net = arch.ResNet1d(2, 4)
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.zeros(3, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        net(torch.zeros(3, 2, 40))
    with pytest.raises(ValueError, match="logits"):
        arch.population_loss(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_shapes_and_layer_norms(norm_first):
    net = arch.transformer(layers=3, norm_first=norm_first, seed=1)
    assert net.encoder.layers[0].norm_first is norm_first
    assert isinstance(net.encoder.layers[0], torch.nn.TransformerEncoderLayer)
    tok, tgt = arch.sequence_task("sort", 5, seed=0)
    out = net(tok)
    assert out.shape == (5, 8, 10)
    F.cross_entropy(out.reshape(-1, 10), tgt.reshape(-1)).backward()
    g = net.layer_grad_norms()
    assert g.shape == (3,) and (g > 0).all()


def test_transformer_seeded():
    tok = torch.zeros(2, 8, dtype=torch.long)
    a, b = arch.transformer(seed=3), arch.transformer(seed=3)
    assert torch.equal(a(tok), b(tok))
    assert not torch.equal(a(tok), arch.transformer(seed=4)(tok))


def test_transformer_population_matches_members():
    models = [arch.transformer(layers=2, seed=s) for s in (0, 1, 2)]
    pop = arch.TransformerPopulation(models)
    tok, tgt = arch.sequence_task("copy", 4, seed=0)
    out = pop(tok)
    assert out.shape == (3, 4, 8, 10)
    torch.testing.assert_close(out[2], models[2](tok), rtol=1e-4, atol=1e-5)
    loss = F.cross_entropy(out.reshape(-1, 10), tgt.repeat(3, 1).reshape(-1),
                           reduction="sum")
    loss.backward()
    assert pop.layer_grad_norms().shape == (3, 2)


def test_transformer_bad_arguments():
    with pytest.raises(ValueError, match="nhead"):
        arch.transformer(d_model=10, nhead=3)
    with pytest.raises(TypeError, match="norm_first"):
        arch.transformer(norm_first=1)
    with pytest.raises(ValueError, match="layers"):
        arch.transformer(layers=0)
    with pytest.raises(TypeError, match="TokenTransformer"):
        arch.TransformerPopulation([torch.nn.Linear(2, 2)])


@pytest.mark.parametrize("kind", arch.TASKS)
def test_sequence_task(kind):
    x, y = arch.sequence_task(kind, 50, length=6, vocab=7, seed=2)
    assert x.shape == y.shape == (50, 6) and x.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < 7 and int(y.max()) < 7
    x2, y2 = arch.sequence_task(kind, 50, length=6, vocab=7, seed=2)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    expected = {"sort": torch.sort(x, 1).values, "copy": x, "reverse": x.flip(1),
                "modadd": torch.cumsum(x, 1) % 7}[kind]
    assert torch.equal(y, expected)


def test_sequence_task_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        arch.sequence_task("add", 3)
    with pytest.raises(ValueError, match="vocab"):
        arch.sequence_task("sort", 3, vocab=1)
    with pytest.raises(ValueError, match="n must"):
        arch.sequence_task("sort", 0)


def test_mlp_population():
    net = arch.MLPPopulation(3, 8, in_features=5, out_features=4, seeds=[0, 1])
    x = torch.randn(7, 5)
    assert net(x).shape == (2, 7, 4)
    w = net.weights[1]
    assert abs(float(w.detach().std()) - math.sqrt(2 / 16)) < 0.1
    again = arch.MLPPopulation(3, 8, in_features=5, out_features=4, seeds=[0, 1])
    assert torch.equal(net(x), again(x))
    with pytest.raises(ValueError, match="activation"):
        arch.MLPPopulation(2, 4, in_features=3, out_features=2, activation="elu",
                           seeds=[0])
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(7, 6))
    with pytest.raises(ValueError, match="seeds"):
        arch.MLPPopulation(2, 4, in_features=3, out_features=2, seeds=[])
