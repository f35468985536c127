"""Tests of lib.training: determinism, RNG hygiene, clipping, divergence, probe snapshots."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from lib import data, networks, probes, training


def _model(act: str = "tanh", seed: int = 0, **kw) -> nn.Module:
    return networks.mlp(2, 16, act, in_features=2, out_features=3, seed=seed, **kw)


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_same_seed_same_history_bit_for_bit(spirals):
    kw = dict(steps=25, lr=0.1, batch_size=16, seed=3, progress=False, probe_every=10)
    a = training.train(_model(), spirals, **kw)
    b = training.train(_model(), spirals, **kw)
    assert a.loss == b.loss and a.grad_norm == b.grad_norm and a.test_acc == b.test_acc
    assert [r.as_dict() for r in a.reports[-1]] == [r.as_dict() for r in b.reports[-1]]
    c = training.train(_model(), spirals, **{**kw, "seed": 4})
    assert c.loss != a.loss  # another seed draws other minibatches
    assert len(a.loss) == 25 and not a.diverged


def test_full_batch_training_does_not_depend_on_the_seed(spirals):
    kw = dict(steps=10, lr=0.1, batch_size=None, progress=False)
    a = training.train(_model(), spirals, seed=1, **kw)
    b = training.train(_model(), spirals, seed=2, **kw)
    assert a.loss == b.loss


def test_training_leaves_the_global_rng_alone(spirals):
    torch.manual_seed(42)
    state = torch.get_rng_state()
    # RReLU draws random slopes in training mode: from the private stream, not the global one.
    training.train(_model("rrelu"), spirals, steps=5, batch_size=16, progress=False)
    assert torch.equal(torch.get_rng_state(), state)


def _one_step_update(model, dataset, **kw):
    before = _params(model)
    hist = training.train(model, dataset, steps=1, lr=1.0, batch_size=None, eval_every=1,
                          progress=False, **kw)
    return (_params(model) - before), hist


def test_clipping_by_norm_bounds_the_applied_gradient(spirals):
    # Large weights, large gradients: the total norm is far above the clip threshold.
    big = dict(init="normal", init_params={"std": 2.0})
    step, hist = _one_step_update(_model(**big), spirals, clip_norm=0.5)
    assert hist.grad_norm[0] > 4 * 0.5  # the norm before clipping is recorded
    assert float(step.norm()) == pytest.approx(0.5, rel=1e-4)  # lr = 1: the step is the gradient
    free, hist_free = _one_step_update(_model(**big), spirals)
    assert float(free.norm()) == pytest.approx(hist_free.grad_norm[0], rel=1e-4)
    assert hist_free.grad_norm == hist.grad_norm


def test_clipping_by_value_bounds_every_entry(spirals):
    step, _ = _one_step_update(_model(init="normal", init_params={"std": 2.0}), spirals,
                               clip_value=0.01)
    # float32 weights near 2: the update is 0.01 up to their rounding (~2e-7).
    assert float(step.abs().max()) == pytest.approx(0.01, abs=1e-6)


def test_a_diverging_run_stops_and_says_so(teacher):
    model = networks.mlp(3, 16, "relu", in_features=4, out_features=1, init="he", seed=0)
    hist = training.train(model, teacher, steps=50, lr=1e4, batch_size=None, progress=False)
    assert hist.diverged
    assert len(hist.loss) < 50 and not math.isfinite(hist.loss[-1])
    assert math.isnan(hist.final_test_acc) or hist.final_test_acc >= 0


def test_probe_snapshots_every_k_steps(spirals):
    model = _model("relu")
    hist = training.train(model, spirals, steps=10, lr=0.05, probe_every=3, batch_size=32,
                          progress=False)
    names = [n for n, _ in probes.layer_modules(model)]
    assert hist.probe_steps == [1, 3, 6, 9]
    assert hist.layer_names == names
    assert len(hist.reports) == len(hist.updates) == 4
    assert all([r.name for r in rep] == names for rep in hist.reports)
    assert all(len(u) == len(names) and all(0 < v < 1 for v in u) for u in hist.updates)
    col = hist.column("weight_grad_norm")
    assert len(col) == 4 and all(len(c) == len(names) for c in col)
    # The report is taken before the step: its gradient is the one that step applied.
    assert all(v > 0 for v in col[0])
    silent = training.train(_model(), spirals, steps=5, progress=False)
    assert silent.reports == [] and silent.probe_steps == []


def test_eval_schedule(spirals):
    hist = training.train(_model(), spirals, steps=25, eval_every=10, eval_train=True,
                          progress=False)
    assert hist.eval_steps == [10, 20, 25]
    assert len(hist.test_acc) == len(hist.train_acc) == len(hist.test_loss) == 3
    assert all(0 <= a <= 1 for a in hist.test_acc)
    default = training.train(_model(), spirals, steps=20, progress=False)
    assert default.eval_steps == list(range(2, 21, 2))
    assert default.train_acc == []  # a pass over the training set only when asked for


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.5), ("adam", 0.02)])
def test_sgd_and_adam_both_learn(optimizer, lr, seed):
    # Digits, not spirals: a 2x16 tanh net learns them fast from any seed (loss falls ~10x),
    # so the check is about the optimiser, not about a lucky initialisation.
    digits = data.digits(seed=seed)
    model = networks.mlp(2, 16, "tanh", in_features=64, out_features=10, seed=seed)
    hist = training.train(model, digits, steps=60, lr=lr, optimizer=optimizer,
                          batch_size=None, momentum=0.0, progress=False)
    assert hist.loss[-1] < 0.3 * hist.loss[0]
    assert hist.final_loss == hist.loss[-1]


def test_momentum_and_weight_decay_change_the_run(spirals):
    base = training.train(_model(), spirals, steps=5, progress=False)
    mom = training.train(_model(), spirals, steps=5, momentum=0.9, progress=False)
    wd = training.train(_model(), spirals, steps=5, weight_decay=0.1, progress=False)
    assert mom.loss[1:] != base.loss[1:] and wd.loss[1:] != base.loss[1:]
    assert mom.loss[0] == base.loss[0]  # the first loss is computed before any step


def test_regression_uses_mse_and_reports_nan_accuracy(teacher):
    model = networks.mlp(2, 8, "tanh", in_features=4, out_features=1, seed=0)
    hist = training.train(model, teacher, steps=20, lr=0.05, progress=False)
    assert hist.loss[-1] < hist.loss[0]
    assert all(math.isnan(a) for a in hist.test_acc)
    loss, acc = training.evaluate(model, teacher.x_test, teacher.y_test)
    expected = nn.functional.mse_loss(model(teacher.x_test), teacher.y_test).item()
    assert loss == pytest.approx(expected, rel=1e-6) and math.isnan(acc)


def test_evaluate_uses_eval_mode_and_restores_it(spirals):
    model = _model(norm="batch")
    model.train()
    loss, acc = training.evaluate(model, spirals.x_test, spirals.y_test)
    assert model.training
    model.eval()
    out = model(spirals.x_test)
    assert loss == pytest.approx(nn.functional.cross_entropy(out, spirals.y_test).item(), rel=1e-6)
    assert acc == pytest.approx(float((out.argmax(1) == spirals.y_test).float().mean()))
    training.evaluate(model, spirals.x_test, spirals.y_test)
    assert not model.training


@pytest.mark.parametrize("kw,exc,match", [
    ({"model": "net"}, TypeError, "model"),
    ({"data": (torch.ones(2, 2), torch.ones(2))}, TypeError, "data"),
    ({"steps": 0}, ValueError, "steps"),
    ({"steps": 2.5}, TypeError, "steps"),
    ({"lr": 0}, ValueError, "lr"),
    ({"lr": math.nan}, ValueError, "lr"),
    ({"lr": "0.1"}, TypeError, "lr"),
    ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
    ({"momentum": -0.5}, ValueError, "momentum"),
    ({"weight_decay": -1.0}, ValueError, "weight_decay"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 8.0}, TypeError, "batch_size"),
    ({"clip_norm": 0}, ValueError, "clip_norm"),
    ({"clip_value": -1.0}, ValueError, "clip_value"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": "0"}, TypeError, "seed"),
    ({"eval_every": -2}, ValueError, "eval_every"),
    ({"probe_every": -1}, ValueError, "probe_every"),
    ({"probe_every": 1.5}, TypeError, "probe_every"),
    ({"optimizer": "adam", "momentum": 0.9}, ValueError, "momentum"),
    ({"eval_train": "yes"}, TypeError, "eval_train"),
])
def test_bad_train_arguments_name_themselves(spirals, kw, exc, match):
    args = {"model": _model(), "data": spirals, "steps": 2, "progress": False}
    args.update(kw)
    with pytest.raises(exc, match=match):
        training.train(args.pop("model"), args.pop("data"), **args)


@pytest.mark.parametrize("call,exc,match", [
    (lambda d: training.evaluate("net", d.x_test, d.y_test), TypeError, "model"),
    (lambda d: training.evaluate(_model(), d.x_test.tolist(), d.y_test), TypeError, "x and y"),
    (lambda d: training.History().column("gradient"), ValueError, "gradient"),
])
def test_bad_evaluate_and_history_arguments(spirals, call, exc, match):
    with pytest.raises(exc, match=match):
        call(spirals)


@pytest.mark.parametrize("name,kwargs", [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9, "weight_decay": 1e-3}),
    ("adam", {}),
    ("adam", {"weight_decay": 1e-3}),
])
def test_optimisers_match_torch_optim_step_for_step(name, kwargs):
    torch.manual_seed(0)
    ours, ref = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    ref.load_state_dict(ours.state_dict())
    cls = training.SGD if name == "sgd" else training.Adam
    theirs = torch.optim.SGD if name == "sgd" else torch.optim.Adam
    opt = cls(list(ours.parameters()), lr=0.05, **kwargs)
    ref_opt = theirs(ref.parameters(), lr=0.05, **kwargs)
    x = torch.randn(8, 5)
    for _ in range(5):
        for model, o in ((ours, opt), (ref, ref_opt)):
            for p in model.parameters():
                p.grad = None
            model(x).pow(2).sum().backward()
            o.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_progress_bar_obeys_tqdm_disable():
    """Builds set TQDM_DISABLE=1 so no progress widget lands in the published pages.

    tqdm reads the variable when it is imported, so each case needs its own process.
    """
    code = ("from lib import data, networks, training\n"
            "d = data.spirals(n=60)\n"
            "training.train(networks.mlp(1, 4, in_features=2, out_features=3), d, steps=3)\n")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    hidden = subprocess.run([sys.executable, "-c", code], env={**env, "TQDM_DISABLE": "1"},
                            capture_output=True, text=True)
    assert shown.returncode == hidden.returncode == 0, shown.stderr + hidden.stderr
    assert "training" in shown.stderr
    assert "training" not in hidden.stderr


def test_numpy_scalars_are_numbers(spirals):
    import numpy as np
    a = training.train(_model(), spirals, steps=3, lr=np.float32(0.1), batch_size=np.int64(16),
                       seed=np.int64(2), progress=False)
    b = training.train(_model(), spirals, steps=3, lr=float(np.float32(0.1)), batch_size=16,
                       seed=2, progress=False)
    assert a.loss == b.loss


@pytest.mark.parametrize("cls,kw,exc,word", [
    ("SGD", {"lr": math.nan}, ValueError, "lr"),
    ("SGD", {"lr": 0.1, "momentum": -1}, ValueError, "momentum"),
    ("Adam", {"lr": math.nan}, ValueError, "lr"),
    ("Adam", {"betas": (1, 0.999)}, ValueError, r"betas\[0\]"),
    ("Adam", {"betas": (0.9,)}, TypeError, "betas"),
    ("Adam", {"eps": None}, TypeError, "eps"),
    ("Adam", {"eps": 0.0}, ValueError, "eps"),
])
def test_optimisers_refuse_bad_settings(cls, kw, exc, word):
    with pytest.raises(exc, match=word):
        getattr(training, cls)(list(nn.Linear(2, 2).parameters()), **kw)


def test_train_step_is_the_step_train_takes(spirals):
    model, ref = _model(seed=1), _model(seed=1)
    h = training.train(ref, spirals, steps=1, lr=0.1, batch_size=None, progress=False)
    params = list(model.parameters())
    lv, total, report, updates = training.train_step(
        model, params, training.SGD(params, lr=0.1), nn.functional.cross_entropy,
        spirals.x_train, spirals.y_train)
    assert lv == h.loss[0] and total == h.grad_norm[0] and report is None and updates is None
    assert torch.equal(_params(model), _params(ref))
