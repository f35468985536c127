"""Probes on layouts lib's own networks never produce: found by a hostile review.

Units along the last dimension of a (batch, sequence, features) activation,
a recurrent layer called one step at a time, other libraries' norm classes,
and the bad input that used to reach torch unchecked.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from lib import diagnose as dg
from lib import probes
from lib.probes._names import is_norm, role


def _half_dead_ffn():
    torch.manual_seed(0)
    ff = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    with torch.no_grad():
        ff[0].bias[:8] = -100.0  # units 0-7 never fire
    return ff


@pytest.mark.parametrize("shape", [(64, 8), (4, 10, 8), (2, 3, 5, 8)])
def test_dead_units_are_features_whatever_comes_before(shape):
    ff = _half_dead_ffn()
    x = torch.randn(shape)
    with probes.watch(ff) as rec:
        ff(x).pow(2).mean().backward()
    assert rec.report()[0].dead == 0.5
    frac = probes.active_fraction(ff, x)["0"]
    assert frac.shape == (16,) and bool((frac[:8] == 0).all()) and bool((frac[8:] > 0).all())
    assert int(probes.dead_units(ff, x)["0"].sum()) == 8


def test_dead_units_of_an_unbatched_vector_are_its_entries():
    ff = _half_dead_ffn()
    x = torch.randn(8)
    with probes.watch(ff) as rec:
        ff(x).pow(2).mean().backward()
    z = ff[0](x)
    assert rec.report()[0].dead == float((z <= 0).double().mean())


def test_dead_units_in_pytorch_transformer_layer():
    torch.manual_seed(0)
    enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    with torch.no_grad():
        enc.linear1.bias[:16] = -100.0
    with probes.watch(enc) as rec:
        enc(torch.randn(4, 7, 16)).pow(2).mean().backward()
    dead = {r.name: r.dead for r in rec.report() if not math.isnan(r.dead)}
    assert dead == {"linear1": 0.5}


def test_conv_units_are_channels_through_batchnorm_and_inplace_relu():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                        nn.Flatten(), nn.Linear(8 * 6 * 6, 2))
    with torch.no_grad():
        net[1].bias[:2] = -100.0
    x = torch.randn(5, 3, 8, 8)
    with probes.watch(net) as rec:
        net(x).pow(2).mean().backward()
    assert rec.report()[0].dead == 0.25
    assert probes.active_fraction(net, x)["0"].shape == (8,)


def test_active_fraction_takes_token_ids():
    net = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.ReLU())
    assert probes.active_fraction(net, torch.randint(0, 10, (4, 5)))["1"].shape == (8,)


class StepByStep(nn.Module):
    """A decoder-style loop: the LSTM sees one time step per call."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.LSTM(3, 8, batch_first=True), nn.Linear(8, 1)

    def forward(self, x):
        state = None
        for t in range(x.shape[1]):
            out, state = self.rnn(x[:, t:t + 1], state)
        return self.head(out[:, -1])


def test_through_time_joins_the_calls_of_a_step_by_step_loop():
    torch.manual_seed(0)
    model = StepByStep()
    x = torch.randn(4, 30, 3, requires_grad=True)
    with probes.watch(model) as rec:
        model(x).pow(2).mean().backward()
    got = rec.through_time()["rnn"]
    want = x.grad.double().pow(2).sum((0, 2)).sqrt()
    assert got.shape == (30,)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0.0)
    ratio = rec.report()[0].time_grad_ratio
    assert ratio == pytest.approx(float(want.min() / want.max()), rel=1e-5)


def test_through_time_keeps_the_latest_backpropagated_pass():
    torch.manual_seed(0)
    rnn = nn.GRU(3, 4, batch_first=True)
    with probes.watch(rnn) as rec:
        for length in (5, 9):
            rnn(torch.randn(2, length, 3))[0].sum().backward()
        with torch.no_grad():
            rnn(torch.randn(2, 3, 3))  # forward only: no gradient to replace the last
    assert rec.through_time()[""].shape == (9,)


class FooRMSNorm(nn.Module):
    """Another library's RMSNorm: not a torch.nn class."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return self.weight * x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


def test_other_libraries_norm_classes_are_norms():
    assert is_norm(FooRMSNorm(4)) and role("n", FooRMSNorm(4), "weight") == "norm"
    assert not is_norm(nn.Linear(2, 2))

    class Normal(nn.Module):  # a name that only starts like one
        pass

    assert not is_norm(Normal())
    torch.manual_seed(0)
    for norm in (nn.RMSNorm, FooRMSNorm):
        m = nn.Sequential(nn.Linear(16, 32, bias=False), norm(32), nn.ReLU(),
                          nn.Linear(32, 32, bias=False), norm(32), nn.ReLU(),
                          nn.Linear(32, 3))
        with torch.no_grad():
            m[0].weight.mul_(1e-3)  # a tiny scale the norm undoes: not exploding
        d = dg.diagnose_model(m, torch.randn(64, 16), torch.randint(0, 3, (64,)))
        assert d.labels == [], (norm, d.labels)
        with probes.watch(m) as rec:
            m(torch.randn(8, 16)).sum().backward()
        assert rec.report()[0].feeds_norm


def test_registration_order_is_not_forward_order():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head, self.body, self.act = nn.Linear(16, 3), nn.Linear(8, 16), nn.ReLU()

        def forward(self, x):
            return self.head(self.act(self.body(x)))

    x, y = torch.randn(5, 8), torch.randint(0, 3, (5,))
    assert len(probes.gradient_norms(M(), x, y)) == 2
    assert set(probes.active_fraction(M(), x)) == {"body"}
    with pytest.raises(TypeError, match="x must have the model's dtype"):
        probes.gradient_norms(M(), x.double(), y)


def test_gradient_norms_refuses_what_backward_cannot_use():
    ff = _half_dead_ffn()
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    for call, match in [
        (lambda: probes.gradient_norms(ff, x * math.nan, y), "x must be finite"),
        (lambda: probes.gradient_norms(ff, x, y, lambda o, t: o), "must be a scalar"),
        (lambda: probes.gradient_norms(ff, x, y, lambda o, t: torch.tensor(1.0)),
         "does not depend on any parameter"),
        (lambda: probes.gradient_norms(ff, x, y, lambda o, t: 1.0), "scalar torch.Tensor"),
    ]:
        with pytest.raises((TypeError, ValueError), match=match):
            call()


def test_jacobian_refuses_tuples_and_training_batchnorm():
    with pytest.raises(TypeError, match="must return one tensor"):
        probes.jacobian_singular_values(nn.LSTM(4, 3), torch.randn(4))
    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match=r"module.eval\(\)"):
        probes.jacobian_singular_values(bn, torch.randn(4))
    assert probes.jacobian_singular_values(bn.eval(), torch.randn(4)).shape == (4,)


def test_seeds_beyond_64_bits_and_numpy_losses():
    ff = _half_dead_ffn()
    with probes.watch(ff, keep_samples=4, seed=2**70) as rec:
        ff(torch.randn(4, 8)).sum().backward()
    assert rec.samples("0")["pre"].numel() == 4
    mon = probes.monitor(ff, every=1, seed=2**70)
    for loss in (np.float32(0.5), np.int64(1), 0.25):
        ff(torch.randn(4, 8)).sum().backward()
        mon.step(loss)
    assert [mon.history[s].loss for s in mon.steps] == [0.5, 1.0, 0.25]
    with pytest.raises(TypeError, match="real number"):
        mon.step(torch.tensor(1 + 2j))
    mon.close()


def test_diagnose_argument_types():
    ff = _half_dead_ffn()
    with probes.watch(ff) as rec:
        ff(torch.randn(4, 8)).sum().backward()
    with pytest.raises(TypeError, match="parameters must be"):
        dg.diagnose(rec.report(), parameters=5)
    d = dg.diagnose(rec.report())
    for bad, exc in (("a", TypeError), (True, TypeError), (-1, ValueError)):
        with pytest.raises(exc, match="width"):
            d.table(width=bad)
