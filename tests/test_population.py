"""Tests of lib.population: each member equals lib.training.train alone; members independent."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lib import networks, population, training

TOL = 2e-5


def _mlp(act="tanh", **kw):
    return lambda s: networks.mlp(2, 16, act, in_features=2, out_features=3, seed=s, **kw)


def _alone(build, d, member, **kw):
    return training.train(build(member.seed), d, seed=member.seed, lr=member.lr,
                          progress=False, **kw)


def _assert_matches(pop, builds, d, test_tol=TOL, **kw):
    for i, mem in enumerate(pop.members):
        h = _alone(builds[mem.arm] if isinstance(builds, dict) else builds, d, mem, **kw)
        got = pop.loss[i, :len(h.loss)].numpy()
        assert np.abs(got - np.array(h.loss)).max() < TOL, (mem, pop.batched[i])
        assert np.abs(pop.test_loss[i].numpy() - np.array(h.test_loss)).max() < test_tol
        if d.n_classes and test_tol == TOL:
            assert np.abs(pop.test_acc[i].numpy() - np.array(h.test_acc)).max() < 1e-6
        assert pop.eval_steps == h.eval_steps


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "leaky_relu", "prelu", "elu",
                                 "selu", "silu", "swish", "gelu", "softplus", "identity"])
def test_every_activation_matches_train(spirals, act):
    build = _mlp(act)
    pop = population.train(build, spirals, [0, 4], lrs=(0.05, 0.2), steps=12,
                           batch_size=32, eval_every=6, progress=False)
    assert all(pop.batched)
    _assert_matches(pop, build, spirals, steps=12, batch_size=32, eval_every=6)


@pytest.mark.parametrize("kw", [
    dict(norm="batch"), dict(norm="layer"), dict(residual=True),
    dict(residual=True, norm="batch", residual_scale=0.5), dict(bias=False),
])
@pytest.mark.parametrize("opt", [dict(optimizer="sgd", momentum=0.9, weight_decay=1e-3),
                                 dict(optimizer="adam", weight_decay=1e-3),
                                 dict(optimizer="sgd", clip_norm=0.05),
                                 dict(optimizer="sgd", clip_value=0.01),
                                 dict(optimizer="sgd", clip_norm=0.05, clip_value=0.01)])
def test_norms_residuals_and_optimisers_match_train(spirals, kw, opt):
    build = _mlp("relu", init="he", **kw)
    run = dict(steps=10, batch_size=32, eval_every=5, **opt)
    pop = population.train(build, spirals, [1, 2], lrs=(0.01, 0.05), progress=False, **run)
    assert all(pop.batched)
    # A Linear bias just before BatchNorm has a gradient of exactly 0 in exact arithmetic;
    # Adam turns its rounding noise into steps of size lr that differ between the two
    # runs. BatchNorm cancels the bias in training (the losses agree), but the running
    # mean tracks it, so evaluation differs by a little more than rounding.
    loose = opt["optimizer"] == "adam" and kw.get("norm") == "batch"
    _assert_matches(pop, build, spirals, test_tol=5e-2 if loose else TOL, **run)
    # Trained weights (and BatchNorm's running statistics) are written back.
    ref = build(1)
    training.train(ref, spirals, seed=1, lr=0.01, progress=False, **run)
    for a, b in zip(pop.models[0].state_dict().values(), ref.state_dict().values()):
        assert (a.double() - b.double()).abs().max() < (0.05 if loose else 1e-4)


def test_regression_full_batch_and_eval_train(teacher):
    build = lambda s: networks.mlp(2, 8, "tanh", in_features=4, out_features=1, seed=s)  # noqa: E731
    pop = population.train(build, teacher, [0, 1, 2], lrs=0.05, steps=8, batch_size=None,
                           eval_every=4, eval_train=True, progress=False)
    _assert_matches(pop, build, teacher, steps=8, batch_size=None, eval_every=4)
    assert torch.isnan(pop.test_acc).all() and pop.train_acc is not None


def test_any_module_through_vmap_and_random_ones_through_the_loop(spirals):
    def seq(s):
        torch.manual_seed(s)
        return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3))

    def dropout(s):
        torch.manual_seed(s)
        return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 3))
    builds = {"seq": seq, "dropout": dropout, "rrelu": _mlp("rrelu")}
    pop = population.train(builds, spirals, [0, 3], steps=6, eval_every=3, progress=False)
    # RReLU in an MLP is batched (each member's own noise generator); Dropout loops.
    assert pop.batched == [True, True, False, False, True, True]
    _assert_matches(pop, builds, spirals, steps=6, eval_every=3)
    loop = population.train(_mlp(), spirals, [0, 3], steps=6, eval_every=3, batched=False,
                            progress=False)
    assert not any(loop.batched)
    _assert_matches(loop, _mlp(), spirals, steps=6, eval_every=3)


def test_rrelu_draws_the_noise_train_draws(spirals):
    # Two rates and two seeds share one stack; each member's RReLU noise equals the
    # draws lib.training.train makes for it alone (same losses, same trained slopes).
    build = _mlp("rrelu", init="he")
    run = dict(steps=15, batch_size=32, eval_every=5, optimizer="adam")
    pop = population.train(build, spirals, [2, 5], lrs=(0.01, 0.05), progress=False,
                           probe_every=5, probes=("dead",), **run)
    assert all(pop.batched)
    _assert_matches(pop, build, spirals, **run)
    ref = build(5)
    training.train(ref, spirals, seed=5, lr=0.05, progress=False, **run)
    for a, b in zip(pop.models[-1].state_dict().values(), ref.state_dict().values()):
        assert (a - b).abs().max() < 1e-4
    # Different seeds draw different noise: the losses differ from step 1 on.
    assert not torch.equal(pop.loss[0], pop.loss[1])


def test_probes_match_train_reports(spirals):
    build = _mlp("relu", init="he")
    pop = population.train(build, spirals, [5], steps=9, probe_every=4, batch_size=32,
                           probes=population.PROBES, progress=False)
    h = _alone(build, spirals, pop.members[0], steps=9, probe_every=4, batch_size=32)
    assert pop.probe_steps == h.probe_steps == [1, 4, 8]
    assert pop.layer_names == h.layer_names
    wg = np.array(h.column("weight_grad_norm"))
    assert np.abs(pop.probes["weight_grad_norm"][0].numpy() - wg).max() < 1e-5
    dead = np.array(h.column("dead"), dtype=float)
    got = pop.probes["dead"][0].numpy()
    assert np.allclose(got[:, :-1], dead[:, :-1]) and np.isnan(got[:, -1]).all()
    assert np.abs(pop.probes["update_ratio"][0].numpy() - np.array(h.updates)).max() < 1e-5


def test_members_are_independent(spirals):
    build = _mlp("relu", init="he")
    a = population.train(build, spirals, [0, 1, 2], steps=10, progress=False)
    b = population.train(build, spirals, [0, 9, 2], steps=10, progress=False)
    assert torch.equal(a.loss[0], b.loss[0]) and torch.equal(a.loss[2], b.loss[2])
    assert not torch.equal(a.loss[1], b.loss[1])


def test_a_diverged_member_stops_alone(teacher):
    build = lambda s: networks.mlp(3, 16, "relu", in_features=4, out_features=1,  # noqa: E731
                                   init="he", seed=s)
    pop = population.train(build, teacher, [0, 1], lrs=(1e-3, 1e4), steps=30,
                           batch_size=None, progress=False)
    sel = pop.select(lr=1e4)
    assert pop.diverged[sel].all() and not pop.diverged[pop.select(lr=1e-3)].any()
    h = training.train(build(0), teacher, steps=30, lr=1e4, batch_size=None, progress=False)
    n = len(h.loss)
    assert torch.isnan(pop.loss[sel[0], n:]).all() and n < 30
    assert np.isinf(pop.values("final_loss", lr=1e4)).all()
    assert all(torch.isfinite(p).all() for p in pop.models[sel[0]].parameters())


def test_values_select_and_best_lr(spirals):
    pop = population.train({"relu": _mlp("relu", init="he"), "sigmoid": _mlp("sigmoid")},
                           spirals, [0, 1, 2], lrs=(1e-4, 0.5), steps=40, progress=False)
    assert len(pop.members) == 12 and pop.arms == ["relu", "sigmoid"]
    assert pop.lrs == [1e-4, 0.5] and pop.seeds == [0, 1, 2]
    assert pop.select("relu", 0.5) == [3, 4, 5]
    assert pop.values("test_acc", arm="sigmoid", lr=0.5).shape == (3,)
    best = population.best_lr_per_arm(pop)
    assert best == {"relu": 0.5, "sigmoid": 0.5}  # 1e-4 barely moves in 40 steps
    v = pop.values("final_loss", arm="relu", lr=0.5, tail=5)
    assert np.allclose(v, pop.loss[3:6, -5:].double().mean(1).numpy())


@pytest.mark.parametrize("kw,exc,word", [
    ({"build": "mlp"}, TypeError, "build"),
    ({"build": {}}, TypeError, "build"),
    ({"build": lambda s: "net"}, TypeError, "nn.Module"),
    ({"data": (1, 2)}, TypeError, "data"),
    ({"seeds": 3}, TypeError, "seeds"),
    ({"seeds": []}, ValueError, "seeds"),
    ({"seeds": [0, 0]}, ValueError, "distinct"),
    ({"seeds": [0, -1]}, ValueError, r"seeds\[1\]"),
    ({"lrs": math.nan}, ValueError, "lrs"),
    ({"lrs": []}, ValueError, "lrs"),
    ({"lrs": "0.1"}, TypeError, "lrs"),
    ({"steps": 0}, ValueError, "steps"),
    ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
    ({"optimizer": "adam", "momentum": 0.9}, ValueError, "momentum"),
    ({"probes": ["gradient"]}, ValueError, "probes"),
    ({"eval_train": 1}, TypeError, "eval_train"),
])
def test_bad_input_names_the_argument(spirals, kw, exc, word):
    args = {"build": _mlp(), "data": spirals, "seeds": [0], "steps": 2, "progress": False}
    args.update(kw)
    with pytest.raises(exc, match=word):
        population.train(args.pop("build"), args.pop("data"), args.pop("seeds"), **args)


def test_bad_population_queries(spirals):
    pop = population.train(_mlp(), spirals, [0], steps=2, progress=False)
    with pytest.raises(ValueError, match="arm"):
        pop.select("tanh")
    with pytest.raises(ValueError, match="grid"):
        pop.select(lr=0.3)
    with pytest.raises(ValueError, match="eval_train"):
        pop.values("train_acc")
    with pytest.raises(ValueError, match="unknown value"):
        pop.values("accuracy")
    with pytest.raises(TypeError, match="pop"):
        population.best_lr_per_arm("pop")
