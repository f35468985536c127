"""lib.probes.monitor in a user's own torch.optim loop, its figures and TensorBoard export."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from torch import nn

from lib import probes
from lib.probes import plots as mplots

matplotlib.use("Agg")


def _loop(opt_name: str, steps: int = 21, every: int = 10):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 3))
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
           "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2)}[opt_name](model.parameters())
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    mon = probes.monitor(model, every=every, samples=256)
    befores = {}
    for step in range(steps):
        if step % every == 0:
            befores[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grads = {n: float(p.grad.norm()) for n, p in model.named_parameters()}
        opt.step()
        opt.zero_grad()
        snap = mon.step(loss)
        if step % every == 0:
            assert snap is not None and snap.step == step
            assert snap.grad_norm["0"] == pytest.approx(grads["0.weight"], rel=1e-5)
            dw = (model[0].weight.detach() - befores[step]["0.weight"]).norm()
            assert snap.update_ratio["0.weight"] == pytest.approx(
                float(dw / befores[step]["0.weight"].norm()), rel=1e-5)
        else:
            assert snap is None
    mon.close()
    return model, mon


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_monitor_records_every_tenth_step_with_any_optimiser(opt_name):
    model, mon = _loop(opt_name)
    assert mon.steps == [0, 10, 20]
    snap = mon.history[10]
    assert set(snap.update_ratio) == {"0.weight", "2.weight", "4.weight"}  # matrices only
    assert snap.dead["0"] >= 0 and snap.saturated["2"] >= 0
    assert math.isfinite(snap.loss) and snap.act_samples["0"].numel() == 256
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0  # nothing left attached
    assert len(mon.series("update_ratio")["0.weight"]) == 3


def test_monitor_draws_karpathy_and_fastai_style_figures():
    import matplotlib.pyplot as plt

    _, mon = _loop("adamw")
    fig, (a, b) = plt.subplots(1, 2)
    mplots.update_ratios(a, mon)
    assert len(a.get_lines()) == 4  # three matrices and the 1e-3 guide
    assert a.get_lines()[-1].get_ydata()[0] == pytest.approx(-3)
    im = mplots.histogram_image(b, mon, "0")
    assert im.get_array().shape == (40, 3)
    mplots.histogram_image(b, mon, "2", which="grad")
    plt.close(fig)
    with pytest.raises(ValueError, match="layer"):
        mplots.histogram_image(b, mon, "nope")
    with pytest.raises(TypeError, match="Monitor"):
        mplots.update_ratios(a, "mon")


def test_tensorboard_event_files_hold_the_expected_tags(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, mon = _loop("sgd")
    written = mon.to_tensorboard(tmp_path)
    acc = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    scalars, hists = set(acc.Tags()["scalars"]), set(acc.Tags()["histograms"])
    for tag in ("loss", "grad_norm/0", "update_ratio_log10/0.weight", "dead/0",
                "saturated/2"):
        assert tag in scalars, tag
        assert [e.step for e in acc.Scalars(tag)] == [0, 10, 20]
    assert {"activations/0", "gradients/4"} <= hists
    assert set(written) == scalars | hists
    ratio = acc.Scalars("update_ratio_log10/0.weight")[1].value
    assert ratio == pytest.approx(math.log10(mon.history[10].update_ratio["0.weight"]), rel=1e-5)


def test_monitor_rejects_bad_input():
    model = nn.Linear(2, 2)
    for call, exc, match in [
        (lambda: probes.monitor("model"), TypeError, "model"),
        (lambda: probes.monitor(model, every=0), ValueError, "every"),
        (lambda: probes.monitor(model, every=2.5), TypeError, "every"),
        (lambda: probes.monitor(model, samples=-1), ValueError, "samples"),
        (lambda: probes.monitor(model).step("loss"), TypeError, "loss"),
        (lambda: probes.monitor(model).series("nope"), ValueError, "field"),
        (lambda: probes.monitor(model).to_tensorboard(3), TypeError, "log_dir"),
    ]:
        with pytest.raises(exc, match=match):
            call()
