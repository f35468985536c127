"""A fourth hostile review: the Monitor in real loops, concatenated and routed
layers, and user files the CLI must load as ``python FILE.py`` would."""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import torch
import torch.nn.functional as F
from torch import nn

from lib import probes


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))


def test_a_validation_pass_between_steps_is_not_the_monitored_step():
    m, x = _mlp(), torch.randn(64, 4)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    mon = probes.monitor(m, every=2, samples=0)
    for step in range(3):
        if step % 2 == 0:
            with torch.no_grad():
                m(100 * torch.randn(512, 4))  # validation, huge inputs
        m(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        mon.step()
    mon.close()
    with probes.watch(m) as rec:
        m(x)
    # the training batch alone, not pooled with the validation pass (that gave 34)
    assert mon.history[2].act_std["0"] < 5 * rec.report()[0].act_std


def test_weights_changed_between_steps_are_no_update():
    m, x = _mlp(), torch.randn(8, 4)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    mon = probes.monitor(m, every=1, samples=0)
    with torch.no_grad():
        m[0].weight.mul_(2.0)  # e.g. load_state_dict after the monitor started
    m(x).sum().backward()
    opt.step()
    snap = mon.step()
    mon.close()
    assert snap.update_ratio == {"0.weight": 0.0, "2.weight": 0.0}


class _Experts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))

    def forward(self, x, which):
        return self.experts[which](x)


def test_series_are_aligned_with_steps_when_a_layer_skips_steps():
    torch.manual_seed(0)
    m, x = _Experts(), torch.randn(8, 4)
    mon = probes.monitor(m, every=1, samples=0)
    for which in (0, 0, 1):
        m(x, which).sum().backward()
        mon.step()
    mon.close()
    s = mon.series("grad_norm")
    assert len(s["experts.0"]) == len(s["experts.1"]) == len(mon.steps) == 3
    assert math.isnan(s["experts.1"][0]) and math.isfinite(s["experts.1"][2])
    assert math.isnan(s["experts.0"][2])


def test_layer_names_with_brackets_do_not_break_the_monitor():
    class Routed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.d = nn.ModuleDict({"exp[0]": nn.Linear(4, 4)})

        def forward(self, x):
            return self.d["exp[0]"](x).relu()

    torch.manual_seed(0)
    m = Routed()
    mon = probes.monitor(m, every=1, samples=16)
    m(torch.randn(8, 4)).sum().backward()
    snap = mon.step()
    mon.close()
    assert "d.exp[0]" in snap.grad_norm and snap.act_samples["d.exp[0]"].numel() == 16


def test_an_activation_of_concatenated_layers_is_neither_layers():
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Conv2d(8, 2, 1)
            with torch.no_grad():
                self.a.bias.fill_(-100.0)

        def forward(self, x):
            return self.head(F.relu(torch.cat([self.a(x), self.b(x)], 1)))

    torch.manual_seed(0)
    with probes.watch(Cat()) as rec:
        rec.model(torch.randn(2, 3, 8, 8)).sum().backward()
    rows = {r.name: r for r in rec.report()}
    assert rows["a"].activation is None and rows["b"].activation is None
    assert math.isnan(rows["a"].dead)


def test_an_expert_routed_no_token_did_not_run():
    class MoE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.experts = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

        def forward(self, x):
            route = torch.tensor([0, 1] * (len(x) // 2))  # expert 2 gets nothing
            out = torch.zeros_like(x)
            for i, e in enumerate(self.experts):
                out[route == i] = e(x[route == i])
            return out

    torch.manual_seed(0)
    with probes.watch(MoE()) as rec:
        rec.model(torch.randn(8, 4)).pow(2).sum().backward()
    assert [r.name for r in rec.report()] == ["experts.0", "experts.1"]


def test_the_cli_loads_a_file_as_python_would(tmp_path):
    (tmp_path / "helper.py").write_text(textwrap.dedent("""
        from torch import nn

        def make():
            return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    """))
    (tmp_path / "model.py").write_text(textwrap.dedent("""
        from __future__ import annotations

        from dataclasses import dataclass

        from helper import make

        @dataclass
        class Config:
            width: int = 8

        def build():
            assert Config().width == 8
            return make()
    """))
    run = subprocess.run([sys.executable, "-m", "lib.diagnose", str(tmp_path / "model.py:build"),
                          "--input-shape", "4"], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": sys.path[0], "PATH": "", "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr


def _row(**kw) -> probes.LayerStats:
    r = probes.LayerStats("a", "Linear", "relu", 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0,
                          False, weight_norm=1.0, fan_in=4, numel=16)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_hand_made_rows_are_checked_field_by_field():
    import pytest

    from lib import diagnose as dg

    for kw, exc, match in [
        ({"dead": None}, TypeError, r"report\[0\].dead must be a real number"),
        ({"dead": 2.0}, ValueError, r"report\[0\].dead must lie in \[0, 1\]"),
        ({"weight_grad_norm": -1.0}, ValueError, "weight_grad_norm must lie"),
        ({"numel": "x"}, TypeError, "numel must be an int"),
        ({"nonfinite": "no"}, TypeError, "nonfinite must be a bool"),
        ({"name": 3}, TypeError, "name must be a str"),
    ]:
        with pytest.raises(exc, match=match):
            dg.diagnose([_row(**kw), _row(name="b")])
    with pytest.raises(TypeError, match=r"rows\[0\].activation must be a str or None"):
        probes.format_table([_row(activation=5)])
    assert dg.diagnose([_row(dead=math.nan), _row(name="b")]).healthy


def test_monitor_plots_and_step_refuse_bad_values_by_name():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pytest

    from lib.probes import plots

    m = _mlp()
    mon = probes.monitor(m, every=1, samples=256)
    m(torch.randn(32, 4)).pow(2).mean().backward()
    mon.step()
    with pytest.raises(ValueError, match="loss must be a real number a float can hold"):
        mon.step(10 ** 400)
    mon.close()
    fig, ax = plt.subplots()
    for call, exc, match in [
        (lambda: plots.update_ratios(ax, mon, guide=0), ValueError, "guide"),
        (lambda: plots.update_ratios(ax, mon, names="0.weight"), TypeError, "names"),
        (lambda: plots.histogram_image(ax, mon, "0", limit="2"), TypeError, "limit"),
        (lambda: plots.histogram_image(ax, mon, "0", limit=-1), ValueError, "limit"),
    ]:
        with pytest.raises(exc, match=match):
            call()
    im = plots.histogram_image(ax, mon, "0", which="grad")
    lo, hi = im.get_extent()[2:]
    assert lo > -20  # exact zeros are not drawn at log10 = -30
    plt.close(fig)


def test_a_monitor_dropped_without_close_detaches_when_collected():
    import gc

    from lib.probes import _state

    m = _mlp()
    for _ in range(3):  # a notebook cell run three times
        mon = probes.monitor(m, every=1, samples=0)
        m(torch.randn(8, 4)).sum().backward()
        mon.step()
    del mon
    gc.collect()
    assert not m[0]._forward_hooks and not m._forward_pre_hooks
    assert not _state._ACTIVE  # torch.relu and friends are unpatched again


def test_functional_call_is_named_as_what_the_probes_cannot_see():
    from torch.func import functional_call

    from lib import diagnose as dg

    m = _mlp()
    params = {n: 10 * p.detach().clone().requires_grad_(True) for n, p in m.named_parameters()}
    with probes.watch(m) as rec:
        functional_call(m, params, (torch.randn(8, 4),)).pow(2).mean().backward()
    d = dg.diagnose(rec.report(), parameters=rec.parameters())
    assert d.labels == ["no-gradient"]
    assert "functional_call" in d.issues[0].evidence


def test_a_nan_loss_is_written_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = _mlp()
    mon = probes.monitor(m, every=1, samples=0)
    for loss in (0.5, math.nan):
        m(torch.randn(8, 4)).sum().backward()
        mon.step(loss)
    mon.step()  # no loss given: nothing to write for it
    mon.close()
    mon.to_tensorboard(tmp_path)
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars("loss")
    assert [e.step for e in events] == [0, 1] and math.isnan(events[1].value)


def test_a_layer_unfrozen_after_the_monitor_armed_gets_its_gradient():
    m = _mlp()
    m[2].weight.requires_grad_(False)
    mon = probes.monitor(m, every=1, samples=0)
    m[2].weight.requires_grad_(True)  # unfrozen before the step's forward pass
    m(torch.randn(8, 4)).pow(2).sum().backward()
    snap = mon.step()
    mon.close()
    assert snap.grad_norm["2"] > 0
    assert math.isclose(snap.grad_norm["2"], float(m[2].weight.grad.double().norm()),
                        rel_tol=1e-5)
