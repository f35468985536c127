"""A third hostile review of the probes (3 December 2026), each case checked by hand.

Spreads near a large mean, packed sequences, parametrised weights, inference
mode, activations of parameters and of residual sums, state carried between
passes, a root attention module, the CLI on dict outputs, lazy and
self-containing modules, loss failures, and what a "pass" is.
"""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import orthogonal, spectral_norm, weight_norm
from torch.nn.utils.rnn import pack_padded_sequence

from lib import diagnose as dg
from lib import probes


def test_spread_near_a_large_mean_is_not_lost_to_cancellation():
    torch.manual_seed(0)
    lin = nn.Linear(64, 256)
    with torch.no_grad():
        lin.weight.mul_(1e-3)
        lin.bias.fill_(100.0)
    m = nn.Sequential(lin, nn.Sigmoid(), nn.Linear(256, 2))
    x = torch.randn(512, 64)
    with probes.watch(m) as rec:
        m(x[:256])
        m(x[256:])  # two batches pooled
    r = rec.report()[0]
    z = lin(x).detach().double()
    a = torch.sigmoid(lin(x)).detach().double()
    assert r.pre_std == pytest.approx(float(z.std(unbiased=False)), rel=1e-4)
    assert r.act_std == pytest.approx(float(a.std(unbiased=False)), rel=1e-3, abs=1e-9)


class _Packed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.out = nn.LSTM(3, 4, batch_first=True), nn.Linear(4, 2)

    def forward(self, x):
        packed = pack_padded_sequence(x, torch.tensor([5, 3, 2]), batch_first=True)
        _, (h, _) = self.lstm(packed)
        return self.out(h[-1])


def test_an_rnn_fed_a_packed_sequence_is_reported_with_its_steps():
    torch.manual_seed(0)
    m, x, y = _Packed(), torch.randn(3, 5, 3), torch.tensor([0, 1, 0])
    norms = probes.gradient_norms(m, x, y)
    g = [m.lstm.weight_ih_l0.grad, m.lstm.weight_hh_l0.grad]
    assert norms[0] == pytest.approx(math.sqrt(sum(float(t.double().norm()) ** 2 for t in g)),
                                     rel=1e-5)
    assert len(norms) == 2
    with probes.watch(m) as rec:
        F.cross_entropy(m(x), y).backward()
    xx = x.clone().requires_grad_(True)
    F.cross_entropy(m(xx), y).backward()
    expect = xx.grad.double().pow(2).sum(dim=(0, 2)).sqrt()
    assert torch.allclose(rec.through_time()["lstm"], expect, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("wrap", [weight_norm, spectral_norm, orthogonal])
def test_parametrised_layers_are_layers_with_their_originals_as_weight(wrap):
    torch.manual_seed(0)
    m = nn.Sequential(wrap(nn.Linear(4, 4)), nn.ReLU(), nn.Linear(4, 3))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    norms = probes.gradient_norms(m, x, y)
    originals = list(m[0].parametrizations.weight.parameters())
    expect = math.sqrt(sum(float(p.grad.double().norm()) ** 2 for p in originals))
    assert len(norms) == 2 and norms[0] == pytest.approx(expect, rel=1e-5)
    used = []  # the weight the forward pass computed (spectral_norm's changes per access)
    m[0].parametrizations.weight.register_forward_hook(lambda mod, a, w: used.append(w))
    with probes.watch(m) as rec:
        F.cross_entropy(m(x), y).backward()
    row = rec.report()[0]
    assert row.name == "0" and row.activation == "relu" and rec.coverage() == 1.0
    assert len(used) == 1  # the report computed no weight of its own
    assert row.weight_norm == pytest.approx(float(used[0].detach().double().norm()), rel=1e-5)
    only = nn.Sequential(weight_norm(nn.Linear(4, 4, bias=False)), nn.ReLU(),
                         weight_norm(nn.Linear(4, 3, bias=False)))
    assert len(dg.diagnose_model(only, x, y).layers) == 2


def test_jacobian_under_inference_mode_is_the_jacobian():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
    x = torch.randn(3)
    expect = probes.jacobian_singular_values(m, x)
    with torch.inference_mode():
        inside = probes.jacobian_singular_values(m, x)
        x_inf = x.clone()
    assert torch.allclose(inside, expect)
    assert torch.allclose(probes.jacobian_singular_values(m, x_inf), expect)


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)
        self.gate = nn.Parameter(torch.zeros(8))
        with torch.no_grad():
            self.fc1.bias[:6] = -100.0  # 6 of 8 units dead

    def forward(self, x):
        h = self.fc1(x)
        g = torch.sigmoid(self.gate)  # an activation of a parameter, after fc1 ran
        return self.fc2(F.relu(h) * g)


def test_an_activation_of_a_parameter_does_not_take_the_layers_place():
    torch.manual_seed(0)
    m, x = _Gated(), torch.randn(32, 4)
    assert int(probes.dead_units(m, x)["fc1"].sum()) == 6
    with probes.watch(m) as rec:
        m(x).sum().backward()
    row = rec.report()[0]
    assert row.activation == "relu" and row.dead == 0.75


def test_nothing_of_one_pass_is_paired_with_the_next():
    class Squashed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(torch.tanh(x))))

    torch.manual_seed(0)
    m = Squashed()
    with probes.watch(m) as rec:
        for _ in range(2):
            m(torch.randn(16, 4) * 10).sum().backward()
    assert {r.name: r.activation for r in rec.report()} == {"fc1": "relu", "fc2": None}


class _OutOfPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, 1, 1), nn.BatchNorm2d(8)
        self.short = nn.Sequential(nn.Conv2d(3, 8, 1, 2), nn.BatchNorm2d(8))

    def forward(self, x):
        o = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        o = o + self.short(x)
        return F.relu(o)


def test_an_out_of_place_residual_sum_belongs_to_the_main_branch():
    torch.manual_seed(0)
    with probes.watch(_OutOfPlace()) as rec:
        rec.model(torch.randn(4, 3, 8, 8)).sum().backward()
    act = {r.name: r.activation for r in rec.report()}
    assert act == {"conv1": "relu", "conv2": "relu", "short.0": None}


def test_attention_watched_as_the_root_keeps_its_output_projection():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8)
    with probes.watch(mha) as rec:
        mha(x, x, x)[0].sum().backward()
    rows = {r.name: r for r in rec.report()}
    assert set(rows) == {"", "out_proj"}
    assert rows["out_proj"].weight_grad_norm == pytest.approx(
        float(mha.out_proj.weight.grad.double().norm()), rel=1e-5)


def test_the_cli_diagnoses_a_model_with_a_dict_output(tmp_path):
    (tmp_path / "dict_model.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.e, self.o = nn.Embedding(10, 4), nn.Linear(4, 10)

            def forward(self, x):
                return {"logits": self.o(self.e(x))}

        def build():
            return M()

        def loss(out, y):
            return out["logits"].float().pow(2).mean()
    """))
    for extra in ([], ["--loss", "dict_model:loss"]):
        run = subprocess.run([sys.executable, "-m", "lib.diagnose", "dict_model.py:build",
                              "--vocab", "10", "--input-shape", "6", *extra],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             env={"PYTHONPATH": f"{tmp_path}:{sys.path[0]}", "PATH": "",
                                  "OMP_NUM_THREADS": "1"})
        assert run.returncode == 0, run.stderr
        assert "HEALTHY" in run.stdout or "problem" in run.stdout


def test_lazy_and_self_containing_modules_are_refused_by_name():
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    lazy = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="lazy parameters.*forward pass"):
        dg.diagnose_model(lazy, x, y)
    loop = nn.Sequential(nn.Linear(4, 3))
    loop.add_module("me", loop)
    with pytest.raises(ValueError, match="contains itself.*'me'"):
        with probes.watch(loop):
            pass


def test_a_failing_loss_is_a_model_error_in_gradient_norms_too():
    def bad_loss(out, y):
        return out.logits.sum()

    m = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(dg.ModelError, match="loss_fn.*AttributeError"):
        probes.gradient_norms(m, torch.randn(5, 4), torch.randint(0, 3, (5,)), bad_loss)


def test_forward_passes_backpropagated_together_are_one_pass_for_every_column():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    xs = [torch.randn(8, 4) for _ in range(3)]
    outs = []
    with probes.watch(m) as rec:
        outs = [m(x) for x in xs]
        sum(o.pow(2).sum() for o in outs).backward()
    row = rec.report()[-1]
    total_out = math.sqrt(sum(float((2 * o.detach()).double().pow(2).sum()) for o in outs))
    assert row.output_grad_norm == pytest.approx(total_out, rel=1e-5)
    assert row.weight_grad_norm == pytest.approx(float(m[2].weight.grad.double().norm()),
                                                 rel=1e-5)


def test_recorders_are_freed_after_their_block():
    import gc
    import weakref

    torch.manual_seed(0)
    m = _OutOfPlace()
    refs = []
    for _ in range(3):
        with probes.watch(m) as rec:
            F.relu(m(torch.randn(2, 3, 8, 8)) + 1).sum().backward()
        refs.append(weakref.ref(rec))
    del rec
    gc.collect()
    assert not [r for r in refs if r() is not None]
