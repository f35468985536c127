"""Tests of lib.recurrent_population: block-diagonal members equal networks trained alone."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib import data, seeds
from lib import recurrent as R
from lib.recurrent_population import BlockRecurrent, train_population


def _nets(kind, n, h=4, seed=0):
    torch.manual_seed(seed)
    cls, kw = {"tanh": (nn.RNN, {}), "relu": (nn.RNN, {"nonlinearity": "relu"}),
               "lstm": (nn.LSTM, {}), "gru": (nn.GRU, {})}[kind]
    return [cls(2, h, batch_first=True, **kw) for _ in range(n)], [nn.Linear(h, 1)
                                                                   for _ in range(n)]


@pytest.mark.parametrize("kind", ["tanh", "relu", "lstm", "gru"])
def test_forward_equals_members(kind):
    nets, heads = _nets(kind, 3)
    pop = BlockRecurrent(nets, heads)
    x = torch.randn(5, 7, 3, 2)
    out = pop(x)
    for k in range(3):
        want = heads[k](nets[k](x[:, :, k])[0][:, -1])
        torch.testing.assert_close(out[:, k], want, rtol=1e-5, atol=1e-6)
        net, head = pop.member(k)
        torch.testing.assert_close(net.weight_hh_l0, nets[k].weight_hh_l0)
        torch.testing.assert_close(head.weight, heads[k].weight)


def _alone(net, head, task, task_index, n_tasks, *, lr, steps, bs, seed, optimizer,
           clip_norm=math.inf):
    gens = [torch.Generator().manual_seed(seeds.stream(seed, f"batches-{k}"))
            for k in range(n_tasks)]
    params = list(net.parameters()) + list(head.parameters())
    opt = (torch.optim.Adam(params, lr) if optimizer == "adam"
           else torch.optim.SGD(params, lr))
    for _ in range(steps):
        rows = [torch.randint(0, task.x_train.shape[0], (bs,), generator=g) for g in gens]
        r = rows[task_index]
        x, y = task.x_train[r], task.y_train[r]
        opt.zero_grad()
        loss = ((head(net(x)[0][:, -1])[:, 0] - y) ** 2).mean()
        loss.backward()
        if clip_norm < math.inf:
            nn.utils.clip_grad_norm_(params, clip_norm)
        opt.step()
    return net, head


@pytest.mark.parametrize("kind,optimizer", [("lstm", "adam"), ("tanh", "sgd"),
                                            ("gru", "adam")])
def test_trained_members_equal_trained_alone(kind, optimizer):
    tasks = [data.adding_problem(64, 6, seed=s) for s in range(2)]
    nets, heads = _nets(kind, 3, seed=1)
    task_of, lrs, clips = [0, 1, 0], [0.01, 0.02, 0.05], [math.inf, 0.5, 0.1]
    pop = BlockRecurrent(nets, heads)
    run = train_population(pop, tasks, task_of, lr=lrs, steps=8, batch_size=8,
                           optimizer=optimizer, clip_norm=clips, seed=3, progress=False)
    assert run.test_loss.shape == (3, 1) and (run.diverged == 0).all()
    for k in range(3):
        net, head = _alone(nets[k], heads[k], tasks[task_of[k]], task_of[k], 2, lr=lrs[k],
                           steps=8, bs=8, seed=3, optimizer=optimizer, clip_norm=clips[k])
        got_net, got_head = pop.member(k)
        for a, b in zip(list(got_net.parameters()) + list(got_head.parameters()),
                        list(net.parameters()) + list(head.parameters())):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_off_block_weights_stay_zero_and_divergence_is_contained():
    tasks = [data.adding_problem(64, 8, seed=0)]
    nets, heads = _nets("relu", 3, seed=2)
    R.irnn_(nets[1], scale=3.0)  # explodes
    pop = BlockRecurrent(nets, heads)
    run = train_population(pop, tasks, [0, 0, 0], lr=[1e-3, 10.0, 1e-3], steps=20,
                           batch_size=8, optimizer="sgd", diverge_at=1e3, progress=False)
    assert run.diverged[1] > 0 and run.diverged[0] == 0 and run.diverged[2] == 0
    assert torch.isfinite(run.test_loss[[0, 2]]).all()
    for p, own in zip(pop.parameters(), pop._owner):
        assert float(p.detach()[own == 3].abs().sum()) == 0.0
    assert math.isinf(float(run.steps_to(1e-9)[0]))


def test_bad_input():
    nets, heads = _nets("lstm", 2)
    with pytest.raises(ValueError, match="same length"):
        BlockRecurrent(nets, heads[:1])
    with pytest.raises(TypeError, match="same type"):
        BlockRecurrent([nets[0], nn.GRU(2, 4, batch_first=True)], heads)
    with pytest.raises(ValueError, match="batch_first"):
        BlockRecurrent([nn.LSTM(2, 4), nn.LSTM(2, 4)], heads)
    with pytest.raises(TypeError, match="nn.RNN"):
        BlockRecurrent([nn.Linear(2, 4)], heads[:1])
    pop = BlockRecurrent(nets, heads)
    with pytest.raises(ValueError, match="x must have shape"):
        pop(torch.randn(3, 5, 2))
    tasks = [data.adding_problem(16, 4)]
    with pytest.raises(ValueError, match="one value per member"):
        train_population(pop, tasks, [0, 0], lr=[0.1], steps=1, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        train_population(pop, tasks, [0, 0], lr=[0.1, 0.1], steps=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="task_of"):
        train_population(pop, tasks, [0, 1], lr=[0.1, 0.1], steps=1, progress=False)


def test_several_populations_train_as_one_loop_and_equal_each_alone():
    tasks = [data.adding_problem(64, 6, seed=s) for s in range(2)]
    parts = [_nets("tanh", 2, seed=4), _nets("lstm", 3, seed=5), _nets("gru", 1, seed=6)]
    lrs, task_of = [0.01, 0.02, 0.03, 0.01, 0.05, 0.02], [0, 1, 1, 0, 1, 0]
    clips = [math.inf, 0.5, 0.1, 1.0, math.inf, 0.2]
    pops = [BlockRecurrent(*p) for p in parts]
    run = train_population(pops, tasks, task_of, lr=lrs, steps=6, batch_size=8,
                           clip_norm=clips, seed=2, progress=False)
    assert run.test_loss.shape == (6, 1)
    k = 0
    for (nets, heads), pop in zip(parts, pops):
        for j in range(len(nets)):
            net, head = _alone(nets[j], heads[j], tasks[task_of[k]], task_of[k], 2,
                               lr=lrs[k], steps=6, bs=8, seed=2, optimizer="adam",
                               clip_norm=clips[k])
            got_net, got_head = pop.member(j)
            for a, b in zip(list(got_net.parameters()) + list(got_head.parameters()),
                            list(net.parameters()) + list(head.parameters())):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
            k += 1
    with pytest.raises(TypeError, match="BlockRecurrent"):
        train_population([pops[0], nn.Linear(2, 2)], tasks, task_of[:2], lr=lrs[:2],
                         steps=1, progress=False)
