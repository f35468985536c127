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


@pytest.fixture(scope="module")
def spirals() -> data.Dataset:
    return data.spirals(150, seed=0)


@pytest.fixture(scope="module")
def teacher() -> data.Dataset:
    return data.teacher(120, in_features=4, depth=2, width=8, seed=0)


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
    hist = training.train(_model(), spirals, steps=25, eval_every=10, progress=False)
    assert hist.eval_steps == [10, 20, 25]
    assert len(hist.test_acc) == len(hist.train_acc) == len(hist.test_loss) == 3
    assert all(0 <= a <= 1 for a in hist.test_acc)
    default = training.train(_model(), spirals, steps=20, progress=False)
    assert default.eval_steps == list(range(2, 21, 2))


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
    ({"steps": 2.5}, ValueError, "steps"),
    ({"lr": 0}, ValueError, "lr"),
    ({"lr": math.nan}, ValueError, "lr"),
    ({"lr": "0.1"}, ValueError, "lr"),
    ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
    ({"momentum": -0.5}, ValueError, "momentum"),
    ({"weight_decay": -1.0}, ValueError, "weight_decay"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 8.0}, ValueError, "batch_size"),
    ({"clip_norm": 0}, ValueError, "clip_norm"),
    ({"clip_value": -1.0}, ValueError, "clip_value"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": "0"}, ValueError, "seed"),
    ({"eval_every": -2}, ValueError, "eval_every"),
    ({"probe_every": -1}, ValueError, "probe_every"),
    ({"probe_every": 1.5}, ValueError, "probe_every"),
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
    opt, ref_opt = cls(list(ours.parameters()), lr=0.05, **kwargs), theirs(ref.parameters(), lr=0.05, **kwargs)
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


def _side_by_side_models() -> list[nn.Module]:
    # Mixed activations in interleaved order: train_side_by_side groups them internally.
    return [_model("tanh", seed=0), _model("relu", seed=1, init="he"), _model("tanh", seed=2),
            _model("sigmoid", seed=3)]


@pytest.mark.parametrize("batch_size", [16, None])
def test_train_side_by_side_matches_train_model_by_model(spirals, batch_size):
    seeds = [0, 5, 0, 7]
    kw = dict(steps=30, lr=0.1, batch_size=batch_size, eval_every=10, probe_every=10)
    stacked = _side_by_side_models()
    hists, grad1 = training.train_side_by_side(stacked, spirals, seeds, **kw)
    assert grad1 is not None and grad1.shape == (4, 4)  # steps 1, 10, 20, 30 x 4 models
    for k, (model, seed) in enumerate(zip(_side_by_side_models(), seeds)):
        ref = training.train(model, spirals, seed=seed, progress=False, **kw)
        h = hists[k]
        assert len(h.loss) == len(ref.loss) == 30 and not h.diverged
        assert max(abs(a - b) for a, b in zip(h.loss, ref.loss)) < 1e-5
        assert max(abs(a - b) for a, b in zip(h.grad_norm, ref.grad_norm)) < 1e-5
        assert h.eval_steps == ref.eval_steps == [10, 20, 30]
        assert max(abs(a - b) for a, b in zip(h.test_loss, ref.test_loss)) < 1e-5
        assert h.layer_names == ref.layer_names
        ref_g1 = [r[0].weight_grad_norm for r in ref.reports]
        assert max(abs(a - b) for a, b in zip(grad1[:, k], ref_g1)) < 1e-5
        assert (_params(stacked[k]) - _params(model)).abs().max() < 1e-5


def test_train_side_by_side_regression_matches_train(teacher):
    make = [lambda: networks.mlp(2, 8, "tanh", in_features=4, out_features=1, seed=s)
            for s in (0, 1)]
    stacked = [f() for f in make]
    hists, grad1 = training.train_side_by_side(stacked, teacher, [1, 2], steps=10, lr=0.05,
                                               batch_size=32)
    assert grad1 is None
    for k, (f, seed) in enumerate(zip(make, (1, 2))):
        model = f()
        ref = training.train(model, teacher, steps=10, lr=0.05, batch_size=32, seed=seed,
                             progress=False)
        assert max(abs(a - b) for a, b in zip(hists[k].loss, ref.loss)) < 1e-5
        assert (_params(stacked[k]) - _params(model)).abs().max() < 1e-5


def test_train_side_by_side_stops_a_diverged_model_only(spirals):
    models = [_model("relu", seed=0), _model("relu", seed=1)]
    with torch.no_grad():
        models[1].output.weight.fill_(math.inf)
    before = _params(models[1]).clone()
    hists, _ = training.train_side_by_side(models, spirals, [0, 0], steps=5, lr=0.1)
    assert hists[1].diverged and len(hists[1].loss) == 1
    assert not hists[0].diverged and len(hists[0].loss) == 5
    assert torch.equal(_params(models[1]), before)


@pytest.mark.parametrize("models, seeds, kw, exc, word", [
    (lambda: _model(), [0], {}, TypeError, "models"),
    (lambda: [], [], {}, ValueError, "models"),
    (lambda: [_model(), _model()], [0], {}, ValueError, "seeds"),
    (lambda: [_model(), _model()], [0, -1], {}, ValueError, "seeds[1]"),
    (lambda: [_model(), networks.mlp(3, 16, in_features=2, out_features=3)], [0, 0], {},
     ValueError, "same shape"),
    (lambda: [_model(), nn.Sequential(nn.Linear(2, 3))], [0, 0], {}, TypeError, "models[1]"),
    (lambda: [_model(norm="layer")], [0], {}, ValueError, "models[0]"),
    (lambda: [networks.mlp(2, 16, in_features=2, out_features=3, residual=True)], [0], {},
     ValueError, "models[0]"),
    (lambda: [_model("prelu")], [0], {}, ValueError, "models[0]"),
    (lambda: [_model("rrelu")], [0], {}, ValueError, "models[0]"),
    (lambda: [networks.mlp(2, 16, in_features=5, out_features=3)], [0], {}, ValueError, "features"),
    (lambda: [_model()], [0], {"steps": 0}, ValueError, "steps"),
    (lambda: [_model()], [0], {"lr": -1.0}, ValueError, "lr"),
    (lambda: [_model()], [0], {"batch_size": 0}, ValueError, "batch_size"),
])
def test_train_side_by_side_rejects_bad_input(spirals, models, seeds, kw, exc, word):
    with pytest.raises(exc, match=word.replace("[", r"\[").replace("]", r"\]")):
        training.train_side_by_side(models(), spirals, seeds, **{"steps": 3, "lr": 0.1, **kw})


def test_train_side_by_side_rejects_a_model_listed_twice(spirals):
    m = _model()
    with pytest.raises(ValueError, match="distinct"):
        training.train_side_by_side([m, m], spirals, [0, 0], steps=2, lr=0.1)
