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


# --- watch(), the report and its columns ----------------------------------------------------

import dataclasses  # noqa: E402
import math  # noqa: E402

import torch.nn.functional as F  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402


def _batch(n: int, features: int, seed: int = 100) -> torch.Tensor:
    # Data seeds differ from model seeds: the same stream would correlate inputs and weights.
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed))


def _labels(n: int, seed: int = 200) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))


def _probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, **kw):
    model.zero_grad(set_to_none=True)
    with probes.watch(model, **kw) as rec:
        out = model(x)
        if y is not None:
            F.cross_entropy(out, y).backward()
    return rec


def test_sigmoid_stack_starves_its_first_layer():
    # float64: in float32 the first layer's gradient underflows to exactly 0.
    model = networks.mlp(30, 32, "sigmoid", in_features=16, seed=0).double()
    rec = _probe(model, _batch(64, 16).double(), _labels(64))
    g = rec.column("weight_grad_norm")
    assert len(g) == 31
    assert 0 < g[0] < 1e-6 * g[29]  # layer1 against layer30, the last hidden layer
    assert g[0] < g[10] < g[20] < g[29]


def test_relu_stack_with_he_init_keeps_the_gradient_within_a_small_factor():
    model = networks.mlp(30, 64, "relu", init="he", in_features=16, seed=0)
    g = _probe(model, _batch(64, 16), _labels(64)).column("weight_grad_norm")
    assert 0.2 < g[0] / g[29] < 5


def _dead_layer(n: int, dead: list[int], features: int = 3) -> nn.Sequential:
    lin = nn.Linear(features, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, features, generator=torch.Generator().manual_seed(1)))
        lin.bias.fill_(50.0)  # far above |w.x| for unit-scale inputs: always on
        for i in dead:
            lin.weight[i] = 0.0
            lin.bias[i] = -1.0  # pre-activation -1 for every input: never on
    return nn.Sequential(lin, nn.ReLU())


@given(n=st.integers(1, 12), data=st.data())
def test_dead_fraction_is_exact_on_a_hand_built_layer(n, data):
    dead = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n), label="dead")
    rec = _probe(_dead_layer(n, dead), _batch(32, 3))
    (row,) = rec.report()
    assert row.dead == len(dead) / n
    assert row.activation == "relu"


def test_dead_fraction_pools_passes_a_unit_alive_once_is_alive():
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[0].bias.zero_()
    with probes.watch(model) as rec:
        model(torch.ones(4, 1))  # unit 2 is off
    assert rec.report()[0].dead == 0.5
    with probes.watch(model) as rec:
        model(torch.ones(4, 1))
        model(-torch.ones(4, 1))  # now unit 1 is off, unit 2 on: nobody was off every time
    assert rec.report()[0].dead == 0.0


@pytest.mark.parametrize("act,threshold", [(nn.Tanh(), 2.1783), (nn.Sigmoid(), 4.3565)])
def test_saturated_fraction_on_a_hand_built_layer(act, threshold):
    # computed from the derivative: 1 - tanh^2 = 0.05 and s(1 - s) = 0.0125
    threshold = probes.SATURATION[activations.name_of_module(act)]
    exact = {"tanh": math.atanh(math.sqrt(0.95)),
             "sigmoid": math.log((1 + math.sqrt(0.95)) / (1 - math.sqrt(0.95)))}
    assert threshold == pytest.approx(exact[activations.name_of_module(act)], abs=1e-9)
    lin = nn.Linear(1, 4)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.zero_()
    x = torch.tensor([[-9.0], [-threshold - 0.01], [-threshold + 0.01], [0.0], [1.0],
                      [threshold - 0.01], [threshold + 0.01], [30.0]])
    (row,) = _probe(nn.Sequential(lin, act), x).report()
    assert row.saturated == 4 / 8
    (relu_row,) = _probe(nn.Sequential(lin, nn.ReLU()), x).report()
    assert math.isnan(relu_row.saturated)  # unbounded: saturation does not apply


def _capture_linear_outputs(model: nn.Module) -> tuple[list[torch.Tensor], list]:
    outs: list[torch.Tensor] = []

    def keep(mod, inputs, out):
        out.retain_grad()
        outs.append(out)

    handles = [m.register_forward_hook(keep) for _, m in probes.layer_modules(model)]
    return outs, handles


def test_report_values_match_a_manual_computation():
    model = networks.mlp(3, 12, "tanh", in_features=6, out_features=4, seed=0)
    x, y = _batch(20, 6), _labels(20) % 4
    outs, handles = _capture_linear_outputs(model)
    rec = _probe(model, x, y)
    for h in handles:
        h.remove()
    rows = rec.report()
    assert [r.name for r in rows] == ["layer1.linear", "layer2.linear", "layer3.linear", "output"]
    assert [r.kind for r in rows] == ["Linear"] * 4
    assert [r.activation for r in rows] == ["tanh", "tanh", "tanh", None]
    layers = [m for _, m in probes.layer_modules(model)]
    for row, z, layer in zip(rows, outs, layers):
        z = z.detach().double()
        assert row.pre_mean == pytest.approx(float(z.mean()), rel=1e-5, abs=1e-7)
        assert row.pre_std == pytest.approx(float(z.std(unbiased=False)), rel=1e-5)
        assert row.weight_grad_norm == pytest.approx(float(layer.weight.grad.norm()), rel=1e-5)
        assert row.output_grad_norm == pytest.approx(float(outs[rows.index(row)].grad.norm()),
                                                     rel=1e-5)
        assert row.nonfinite is False
        if row.activation:
            a = torch.tanh(z)
            assert row.act_mean == pytest.approx(float(a.mean()), rel=1e-5, abs=1e-7)
            assert row.act_std == pytest.approx(float(a.std(unbiased=False)), rel=1e-5)
            assert row.dead == 0.0
        else:  # the output layer: its own output stands in, activation columns are empty
            assert math.isnan(row.act_mean) and math.isnan(row.act_std) and math.isnan(row.dead)
    assert set(rows[0].as_dict()) == {f.name for f in dataclasses.fields(probes.LayerStats)}


def test_statistics_pool_every_forward_pass_in_the_block():
    model = networks.mlp(2, 8, "relu", in_features=5, seed=1)
    x1, x2 = _batch(10, 5, seed=1), _batch(30, 5, seed=2)
    with probes.watch(model) as pooled:
        model(x1)
        model(x2)
    with probes.watch(model) as once:
        model(torch.cat([x1, x2]))
    for a, b in zip(pooled.report(), once.report()):
        for key in ("pre_mean", "pre_std", "act_mean", "act_std", "dead"):
            expected = pytest.approx(getattr(b, key), rel=1e-5, abs=1e-7, nan_ok=True)
            assert getattr(a, key) == expected


def test_nan_gradients_are_flagged_not_raised():
    model = networks.mlp(3, 8, "relu", in_features=4, seed=0)
    x, y = _batch(6, 4), _labels(6)
    healthy = _probe(model, x, y).report()
    assert not any(r.nonfinite for r in healthy)
    # NaN only in the backward pass: the forward statistics stay finite.
    model.zero_grad(set_to_none=True)
    with probes.watch(model) as rec:
        out = model(x)
        out.register_hook(lambda g: g * math.nan)
        F.cross_entropy(out, y).backward()
    rows = rec.report()
    assert all(r.nonfinite for r in rows)
    assert all(math.isfinite(r.pre_std) for r in rows)
    assert all(math.isnan(r.weight_grad_norm) for r in rows)
    # NaN in the forward pass (a poisoned weight) is flagged from that layer on.
    with torch.no_grad():
        model.layer2.linear.weight[0, 0] = math.nan
    rows = _probe(model, x, y).report()
    assert [r.nonfinite for r in rows] == [True, True, True, True]
    # Infinite inputs, no backward at all: still a report, still flagged.
    rows = _probe(model, torch.full((2, 4), math.inf)).report()
    assert rows[0].nonfinite and math.isnan(rows[0].weight_grad_norm)


def test_hooks_are_removed_on_exit_even_if_the_block_raises():
    model = networks.mlp(2, 8, "relu", in_features=4, seed=0)
    x, y = _batch(6, 4), _labels(6)
    with pytest.raises(RuntimeError, match="boom"):
        with probes.watch(model) as rec:
            assert rec.hook_count > 0
            F.cross_entropy(model(x), y).backward()
            raise RuntimeError("boom")
    assert rec.hook_count == 0
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())
    # Detached: later passes leave the recorded numbers alone.
    before = [r.as_dict() for r in rec.report()]
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(2 * x), y).backward()
    after = [r.as_dict() for r in rec.report()]
    assert [b["pre_std"] for b in before] == [a["pre_std"] for a in after]
    assert [b["output_grad_norm"] for b in before] == [a["output_grad_norm"] for a in after]
    # The same with a normal exit, and repeated blocks never pile hooks up.
    for _ in range(3):
        with probes.watch(model) as rec:
            model(x)
    assert rec.hook_count == 0 and all(not m._forward_hooks for m in model.modules())


def test_hooks_do_not_change_what_the_model_computes():
    model = networks.mlp(3, 8, "gelu", in_features=4, norm="layer", seed=0)
    x = _batch(5, 4)
    plain = model(x)
    with probes.watch(model):
        watched = model(x)
    assert torch.equal(plain, watched)


def test_small_cnn():
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6),
                        nn.Tanh(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    with torch.no_grad():
        cnn[0].bias[1] = -100.0  # channel 1 of the first conv never fires
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    rows = _probe(cnn, x, _labels(8) % 5).report()
    assert [r.name for r in rows] == ["0", "2", "6"]
    assert [r.kind for r in rows] == ["Conv2d", "Conv2d", "Linear"]
    assert [r.activation for r in rows] == ["relu", "tanh", None]
    assert rows[0].dead == 1 / 4  # counted per channel, pooled over positions
    # After a BatchNorm, the pre-activation is the normalised value (the Tanh's input).
    z = cnn[3](cnn[2](cnn[1](cnn[0](x)))).detach()
    assert rows[1].pre_std == pytest.approx(float(z.std(unbiased=False)), rel=1e-4)
    assert all(r.weight_grad_norm > 0 for r in rows)


def test_plain_sequential_and_layer_names():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ELU(), nn.Linear(8, 2))
    assert [n for n, _ in probes.layer_modules(model)] == ["0", "2", "4"]
    rows = _probe(model, _batch(5, 4), _labels(5) % 2).report()
    assert [(r.name, r.activation) for r in rows] == [("0", "tanh"), ("2", "elu"), ("4", None)]


class _SharedActivation(nn.Module):
    """One Tanh module applied after both hidden layers."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(4, 8)
        self.l2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.l2(self.act(self.l1(x)))))


def test_a_shared_activation_module_is_paired_with_each_layer():
    torch.manual_seed(0)
    model = _SharedActivation()
    x = _batch(16, 4)
    rows = _probe(model, x).report()
    assert [(r.name, r.activation) for r in rows] == [("l1", "tanh"), ("l2", "tanh"),
                                                      ("head", None)]
    z1 = model.l1(x).detach()
    z2 = model.l2(torch.tanh(z1)).detach()
    assert rows[0].pre_std == pytest.approx(float(z1.std(unbiased=False)), rel=1e-5)
    assert rows[1].pre_std == pytest.approx(float(z2.std(unbiased=False)), rel=1e-5)


class _Reordered(nn.Module):
    """Registers ``late`` first but runs ``early`` first; uses F.relu, not a module."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Linear(8, 3)
        self.early = nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late(F.relu(self.early(x)))


def test_report_rows_follow_forward_order_and_functional_activations_are_seen():
    torch.manual_seed(0)
    model = _Reordered()
    assert [n for n, _ in probes.layer_modules(model)] == ["late", "early"]
    x = _batch(10, 4)
    rows = _probe(model, x).report()
    assert [r.name for r in rows] == ["early", "late"]
    # F.relu is recognised as the activation after 'early' ...
    assert rows[0].activation == "relu" and not math.isnan(rows[0].dead)
    # ... unless functional activations are switched off: then the layer's own output
    # is the pre-activation.
    with probes.watch(model, functional=False) as rec:
        model(x)
    rows = rec.report()
    assert rows[0].activation is None and math.isnan(rows[0].dead)
    z = model.early(x).detach()
    assert rows[0].pre_std == pytest.approx(float(z.std(unbiased=False)), rel=1e-5)


def test_layers_that_did_not_run_are_left_out():
    model = networks.mlp(2, 8, "relu", in_features=4, seed=0)
    rows = _probe(model.layer1, _batch(3, 4)).report()
    assert [r.name for r in rows] == ["linear"]
    with probes.watch(model) as rec:
        pass
    assert rec.report() == []


def test_keep_samples_column_table_and_gradient_norms():
    model = networks.mlp(2, 8, "relu", in_features=4, seed=0)
    x, y = _batch(6, 4), _labels(6)
    rec = _probe(model, x, y, keep_samples=5)
    s = rec.samples("layer1.linear")
    z = model.layer1.linear(x).detach().reshape(-1)
    # a random sample of the values, not the first ones in memory order
    assert s["pre"].shape == (5,) and all(bool((z == v).any()) for v in s["pre"])
    assert all(bool((torch.relu(z) == v).any()) for v in s["act"])
    assert s["grad"].shape == (5,)
    assert rec.column("dead") == [r.dead for r in rec.report()]
    table = rec.table()
    assert table.splitlines()[0].startswith("layer") and "layer2.linear" in table
    assert "no" in table and "-" in table  # finite rows; NaN cells of the output layer as "-"
    assert probes.format_table(r for r in rec.report()) == table  # any iterable of rows
    norms = probes.gradient_norms(model, x, y)
    assert norms == pytest.approx([float(m.weight.grad.norm()) for _, m in
                                   probes.layer_modules(model)], rel=1e-6)
    assert norms == pytest.approx(rec.column("weight_grad_norm"), rel=1e-6)
    mse = probes.gradient_norms(model, x, torch.zeros(6, 10))  # float targets: MSE by default
    assert all(v > 0 for v in mse)


def test_a_recorder_attaches_once():
    rec = probes.Recorder(nn.Linear(2, 2)).attach()
    with pytest.raises(RuntimeError, match="already attached"):
        rec.attach()
    rec.detach()
    assert rec.hook_count == 0


def _bad_watch(model, **kw):
    with probes.watch(model, **kw):
        pass


@pytest.mark.parametrize("call,exc,match", [
    (lambda: _bad_watch("model"), TypeError, "Module"),
    (lambda: _bad_watch(lambda x: x), TypeError, "Module"),
    (lambda: _bad_watch(nn.Linear(2, 2), keep_samples=-1), ValueError, "keep_samples"),
    (lambda: _bad_watch(nn.Linear(2, 2), keep_samples=True), TypeError, "keep_samples"),
    (lambda: probes.Recorder(None), TypeError, "Module"),
    (lambda: probes.layer_modules(3), TypeError, "model"),
    (lambda: probes.Recorder(nn.Linear(2, 2)).column("grad"), ValueError, "unknown column 'grad'"),
    (lambda: probes.Recorder(nn.Linear(2, 2)).samples("fc9"), ValueError, "no layer named 'fc9'"),
    (lambda: probes.gradient_norms("model", torch.ones(2, 2), torch.ones(2, 2)), TypeError,
     "model"),
    (lambda: probes.gradient_norms(nn.Linear(2, 2), [[1.0, 2.0]], torch.ones(1, 2)), TypeError,
     "x must be"),
    (lambda: probes.format_table("rows"), TypeError, "rows"),
    (lambda: probes.format_table([{"name": "fc"}]), TypeError, "rows"),
    (lambda: probes.format_table(3), TypeError, "rows"),
])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("act", [nn.Tanh(), activations.Identity(), nn.LeakyReLU(0.1),
                                 nn.ReLU(), nn.Sigmoid()])
def test_dead_units_are_found_whatever_the_sign_of_the_activation(act):
    # Unit 0 outputs exactly 0 (sigmoid(-100) is 0 in float32); unit 1's outputs cancel for the
    # odd activations (+a and -a: a sum of exactly 0, yet alive); unit 2 is plainly alive.
    lin = nn.Linear(1, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0], [1.0], [2.0]]))
        lin.bias.copy_(torch.tensor([-100.0 if isinstance(act, nn.Sigmoid) else 0.0, 0.0, 1.0]))
    x = torch.tensor([[1.5], [-1.5], [0.5], [-0.5]])
    (row,) = _probe(nn.Sequential(lin, act), x).report()
    out = act(lin(x)).detach()
    assert out[:, 0].eq(0).all() and out[:, 1].ne(0).any()
    assert row.dead == 1 / 3


def test_tiny_and_huge_gradient_norms_are_measured_not_rounded():
    """float32 squares underflow below ~1e-19 and overflow above ~1e19: exactly the
    vanishing and exploding regimes; the probe falls back to float64 there."""
    for scale, expected in ((1e-25, 1e-25), (1e25, 1e25)):
        layer = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            layer.weight.fill_(1.0)
        model = nn.Sequential(layer, nn.Tanh())
        with probes.watch(model) as rec:
            out = model(torch.zeros(1, 4))
            out.backward(torch.full_like(out, scale))
        row = rec.report()[0]
        # dL/dW = grad_out^T x with x = 0 is zero; dL/dout of the linear layer is scale * tanh'(0) = scale.
        assert row.output_grad_norm == pytest.approx(2 * expected, rel=1e-6)
        assert not row.nonfinite
