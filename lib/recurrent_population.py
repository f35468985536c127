"""Many independent recurrent networks trained as ONE block-diagonal PyTorch module.

A verdict about training recurrent networks needs several seeds and a
learning rate per arm, and on a CPU each ``nn.LSTM`` call costs about the
same whether it holds 8 units or 80: the time goes into the per-step
overhead, not the arithmetic. ``nn.LSTM`` cannot be vmapped (its fused
kernel is not a batched function of its weights), so :class:`BlockRecurrent`
puts ``M`` members of one kind (``nn.RNN`` tanh/relu, ``nn.LSTM``,
``nn.GRU``; one layer, ``batch_first``) into one module of hidden size
:math:`M h` whose weights are block-diagonal: member :math:`m` owns rows
:math:`[mh, (m+1)h)` of every gate and the matching columns, and reads its
own input slice. Because the off-block weights are exactly zero and stay so
(their gradients are masked to zero at every step), member :math:`m`'s
state never sees another member's:

.. math::

    \\frac{\\partial}{\\partial \\theta_m} \\sum_k L_k(\\theta_k)
    = \\frac{\\partial L_m}{\\partial \\theta_m},

so one forward and one backward train every member exactly as if alone,
with PyTorch's own kernel. Each member has its own learning rate and its
own clipping; the optimiser (Adam or SGD) is written out here because its
learning rate is a per-weight tensor and because the first ``torch.optim``
optimiser in a process costs about a second of imports.
:func:`train_population` takes one population or several of different
kinds (an ``nn.RNN`` one and an ``nn.LSTM`` one train in the same loop) and
updates the on-block weights of all of them as one flat vector, so that a
step costs a handful of tensor operations however many parameters there
are. A member whose
loss or gradient becomes non-finite is marked diverged and its block is
zeroed, so that ``0 * inf`` cannot leak into the others. The tests check that
every member equals the same network trained alone with ``torch.optim``.

Examples::

    >>> nets = [nn.LSTM(2, 8, batch_first=True) for _ in range(3)]
    >>> heads = [nn.Linear(8, 1) for _ in range(3)]
    >>> pop = BlockRecurrent(nets, heads)
    >>> pop(torch.randn(4, 10, 3, 2)).shape   # (batch, members, out)
    torch.Size([4, 3, 1])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from lib import _checks
from lib import seeds as _seeds
from lib._progress import progress_bar
from lib.data import Dataset

__all__ = ["BlockRecurrent", "PopulationRun", "train_population"]

_GATES = {nn.RNN: 1, nn.LSTM: 4, nn.GRU: 3}


class BlockRecurrent(nn.Module):
    """``M`` one-layer recurrent nets and their linear heads as one block-diagonal module.

    Args:
        nets: ``M`` modules of one type (``nn.RNN`` of one nonlinearity,
            ``nn.LSTM`` or ``nn.GRU``), one layer, unidirectional,
            ``batch_first=True``, the same sizes, with biases.
        heads: ``M`` ``nn.Linear(hidden, out)`` read-outs of the last state.

    Shape:
        input: ``(batch, T, M, in)``; output: ``(batch, M, out)``.
    """

    def __init__(self, nets: Sequence[nn.Module], heads: Sequence[nn.Linear]) -> None:
        super().__init__()
        nets, heads = list(nets), list(heads)
        if not nets or len(nets) != len(heads):
            raise ValueError("nets and heads must be non-empty and of the same length")
        first = nets[0]
        kind = type(first)
        if kind not in _GATES:
            raise TypeError(f"nets must be nn.RNN, nn.LSTM or nn.GRU, got {kind.__name__}")
        for n in nets:
            if type(n) is not kind or n.mode != first.mode:
                raise TypeError("every net must have the same type and nonlinearity")
            if (n.num_layers != 1 or n.bidirectional or not n.batch_first or not n.bias
                    or getattr(n, "proj_size", 0) or n.hidden_size != first.hidden_size
                    or n.input_size != first.input_size):
                raise ValueError("each net must be one layer, unidirectional, batch_first, "
                                 "with biases, no projection, and the same sizes")
        for hd in heads:
            if not isinstance(hd, nn.Linear) or hd.in_features != first.hidden_size \
                    or hd.bias is None or hd.out_features != heads[0].out_features:
                raise ValueError("heads must be nn.Linear(hidden, out) with bias, one size")
        m, h, i, o = len(nets), first.hidden_size, first.input_size, heads[0].out_features
        g = _GATES[kind]
        self.members, self.hidden, self.inputs, self.outputs = m, h, i, o
        kw = {"nonlinearity": "tanh" if first.mode == "RNN_TANH" else "relu"} \
            if kind is nn.RNN else {}
        self.rnn = kind(m * i, m * h, batch_first=True, **kw)
        self.head = nn.Linear(m * h, m * o)
        ids = {}
        with torch.no_grad():
            for p in list(self.rnn.parameters()) + list(self.head.parameters()):
                p.zero_()
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                big = getattr(self.rnn, name)
                owner = torch.full(big.shape, m, dtype=torch.int64)
                for k, net in enumerate(nets):
                    small = getattr(net, name)
                    cols = i if "ih" in name else h
                    for gate in range(g):
                        rows = slice(gate * m * h + k * h, gate * m * h + (k + 1) * h)
                        part = small[gate * h:(gate + 1) * h]
                        if big.dim() == 2:
                            big[rows, k * cols:(k + 1) * cols] = part
                            owner[rows, k * cols:(k + 1) * cols] = k
                        else:
                            big[rows] = part
                            owner[rows] = k
                ids[f"rnn.{name}"] = owner
            ow = torch.full(self.head.weight.shape, m, dtype=torch.int64)
            ob = torch.full(self.head.bias.shape, m, dtype=torch.int64)
            for k, hd in enumerate(heads):
                self.head.weight[k * o:(k + 1) * o, k * h:(k + 1) * h] = hd.weight
                self.head.bias[k * o:(k + 1) * o] = hd.bias
                ow[k * o:(k + 1) * o, k * h:(k + 1) * h] = k
                ob[k * o:(k + 1) * o] = k
            ids["head.weight"], ids["head.bias"] = ow, ob
        # owner[i] = member that owns weight i, or M for an off-block weight (kept at 0)
        self._owner = [ids[n] for n, _ in self.named_parameters()]

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[2:] != (self.members,
                                                                          self.inputs):
            raise ValueError(f"x must have shape (batch, T, {self.members}, {self.inputs}), "
                             f"got {tuple(x.shape) if isinstance(x, Tensor) else x!r}")
        out, _ = self.rnn(x.flatten(2))
        return self.head(out[:, -1]).view(x.shape[0], self.members, self.outputs)

    def member(self, k: int) -> tuple[nn.Module, nn.Linear]:
        """Member ``k`` as a standalone ``(net, head)`` pair (copies)."""
        k = _checks.check_int(k, "k", ge=0, le=self.members - 1)
        m, h, i, o = self.members, self.hidden, self.inputs, self.outputs
        kw = {"nonlinearity": "tanh" if self.rnn.mode == "RNN_TANH" else "relu"} \
            if type(self.rnn) is nn.RNN else {}
        net = type(self.rnn)(i, h, batch_first=True, **kw)
        head = nn.Linear(h, o)
        with torch.no_grad():
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                big, small = getattr(self.rnn, name), getattr(net, name)
                cols = i if "ih" in name else h
                for gate in range(_GATES[type(self.rnn)]):
                    rows = slice(gate * m * h + k * h, gate * m * h + (k + 1) * h)
                    part = big[rows, k * cols:(k + 1) * cols] if big.dim() == 2 else big[rows]
                    small[gate * h:(gate + 1) * h] = part
            head.weight.copy_(self.head.weight[k * o:(k + 1) * o, k * h:(k + 1) * h])
            head.bias.copy_(self.head.bias[k * o:(k + 1) * o])
        return net, head


@dataclass(frozen=True)
class PopulationRun:
    """What :func:`train_population` recorded, member by member.

    ``test_loss[m, j]`` is member ``m``'s test loss after ``eval_steps[j]``
    steps (``inf`` once diverged); ``train_loss[m, s]`` its batch loss at step
    ``s + 1``; ``grad_norm[m, s]`` its gradient norm before clipping;
    ``diverged[m]`` the step it diverged at (0: never).
    """

    test_loss: Tensor
    eval_steps: list[int]
    train_loss: Tensor
    grad_norm: Tensor
    diverged: Tensor

    def steps_to(self, threshold: float) -> Tensor:
        """First evaluated step with test loss below ``threshold`` (``inf``: never)."""
        below = self.test_loss < threshold
        steps = torch.tensor(self.eval_steps, dtype=torch.float64)
        first = torch.where(below, steps, torch.full_like(steps, math.inf))
        return first.min(1).values


def _flatten_on_block(pops: Sequence[BlockRecurrent]
                      ) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
    """Make every parameter of ``pops`` a view of one flat buffer.

    Returns the parameters, the flat buffer, and for each on-block weight its
    index in the buffer and its member (numbered across ``pops`` in order).
    Off-block weights stay in the buffer (the kernels need them) at zero and
    are never updated, so the optimiser works on the on-block weights only,
    with a handful of tensor operations per step however many parameters.
    """
    params, owners, offset = [], [], 0
    for pop in pops:
        for p, own in zip(pop.parameters(), pop._owner):
            params.append(p)
            owners.append(torch.where(own < pop.members, own + offset, -1).flatten())
        offset += pop.members
    flat = torch.cat([p.detach().flatten() for p in params])
    start = 0
    for p in params:
        n = p.numel()
        p.data = flat[start:start + n].view_as(p)
        start += n
    owner = torch.cat(owners)
    on = torch.nonzero(owner >= 0).flatten()
    return params, flat, on, owner[on]


def train_population(pop: BlockRecurrent | Sequence[BlockRecurrent],
                     tasks: Sequence[Dataset], task_of: Sequence[int], *,
                     lr: Sequence[float], steps: int, batch_size: int = 32,
                     optimizer: str = "adam", clip_norm: Sequence[float] | None = None,
                     clip_value: Sequence[float] | None = None, eval_every: int = 10,
                     diverge_at: float = 1e6, seed: int = 0, progress: bool = True
                     ) -> PopulationRun:
    """Train every member of ``pop`` on its own task with its own settings, in one loop.

    ``pop`` is one :class:`BlockRecurrent` or several (of any kinds: an
    ``nn.RNN`` population and an ``nn.LSTM`` one train in the same loop);
    their members are numbered in order, and every per-member argument and
    every row of the result follows that numbering. Member ``m`` trains on
    ``tasks[task_of[m]]`` (regression, mean squared error of its head on the
    last step), with minibatches drawn by a generator seeded from
    ``(seed, task_of[m])``, so members that share a task see the same
    batches; learning rate ``lr[m]``; optional clipping of its own gradient
    by norm (``clip_norm[m]``, ``inf`` for none) and by value. A member whose
    loss exceeds ``diverge_at`` or whose gradient is not finite stops
    (diverged).
    """
    pops = [pop] if isinstance(pop, BlockRecurrent) else list(pop)
    if not pops or not all(isinstance(p, BlockRecurrent) for p in pops):
        raise TypeError("pop must be a BlockRecurrent or a non-empty sequence of them")
    if len({(p.inputs, p.outputs) for p in pops}) != 1:
        raise ValueError("every population in pop must have the same input and output sizes")
    sizes = [p.members for p in pops]
    m = sum(sizes)
    _checks.check_choice(optimizer, "optimizer", ("adam", "sgd"))
    steps = _checks.check_int(steps, "steps", ge=1)
    batch_size = _checks.check_int(batch_size, "batch_size", ge=1)
    eval_every = _checks.check_int(eval_every, "eval_every", ge=1)

    def per_member(v: Sequence[float] | None, name: str, default: float) -> Tensor:
        if v is None:
            return torch.full((m,), default)
        if len(v) != m:
            raise ValueError(f"{name} needs one value per member ({m}), got {len(v)}")
        return torch.tensor([_checks.check_number(a, name, gt=0, allow_inf=True) for a in v])

    lrs = per_member(lr, "lr", 0.0)
    norms_c = per_member(clip_norm, "clip_norm", math.inf)
    values_c = per_member(clip_value, "clip_value", math.inf)
    task_of = [_checks.check_int(t, "task_of", ge=0, le=len(tasks) - 1) for t in task_of]
    if len(task_of) != m:
        raise ValueError(f"task_of needs one task index per member ({m}), got {len(task_of)}")
    xs = torch.stack([t.x_train for t in tasks])  # (tasks, N, T, in)
    ys = torch.stack([t.y_train for t in tasks])
    xt = torch.stack([t.x_test for t in tasks])[task_of].permute(1, 2, 0, 3)
    yt = torch.stack([t.y_test for t in tasks])[task_of].T  # (N_test, M)
    gens = [torch.Generator().manual_seed(_seeds.stream(seed, f"batches-{k}"))
            for k in range(len(tasks))]
    params, flat, on, own = _flatten_on_block(pops)
    idx_t = torch.tensor(task_of)
    all_tasks = torch.arange(len(tasks))[:, None]
    mo, ve = torch.zeros(len(on)), torch.zeros(len(on))
    lr_on, value_on = lrs[own], values_c[own]
    alive = torch.ones(m, dtype=torch.bool)
    diverged = torch.zeros(m, dtype=torch.int64)
    train_loss = torch.zeros(m, steps)
    grad_norm = torch.zeros(m, steps)
    evals, eval_steps = [], []
    b1, b2, eps = 0.9, 0.999, 1e-8
    clip_v = bool(torch.isfinite(values_c).any())

    def forward(x: Tensor) -> Tensor:
        parts = x.split(sizes, dim=2)
        return torch.cat([p(xp)[..., 0] for p, xp in zip(pops, parts)], 1)  # (B, M)

    for step in progress_bar(range(1, steps + 1), "training", progress):
        rows = torch.stack([torch.randint(0, xs.shape[1], (batch_size,), generator=g)
                            for g in gens])  # (tasks, B)
        xb = xs[all_tasks, rows][idx_t].permute(1, 2, 0, 3)
        yb = ys[all_tasks, rows][idx_t].T  # (B, M)
        loss = ((forward(xb) - yb) ** 2).mean(0)  # (M,)
        bad = ~torch.isfinite(loss) | (loss > diverge_at)
        total = torch.where(alive & ~bad, loss, torch.zeros_like(loss)).sum()
        grads = torch.autograd.grad(total, params)
        g = torch.cat([gr.flatten() for gr in grads])[on]
        gn = torch.zeros(m).index_add_(0, own, g * g).sqrt()
        bad |= ~torch.isfinite(gn)
        newly = alive & bad
        diverged[newly] = step
        alive &= ~bad
        train_loss[:, step - 1] = torch.where(alive, loss.detach(), math.inf)
        grad_norm[:, step - 1] = gn
        scale = torch.clamp(norms_c / gn.clamp_min(1e-30), max=1.0)
        g = torch.where(alive[own], g * scale[own], 0.0)  # no NaN from the dead
        if clip_v:
            g = torch.maximum(torch.minimum(g, value_on), -value_on)
        step_size = lr_on * alive[own]
        with torch.no_grad():
            p_on = flat[on]
            if optimizer == "sgd":
                p_on -= step_size * g
            else:
                mo.mul_(b1).add_(g, alpha=1 - b1)
                ve.mul_(b2).addcmul_(g, g, value=1 - b2)
                c1, c2 = 1 - b1 ** step, math.sqrt(1 - b2 ** step)
                p_on -= (step_size * (c2 / c1)) * mo / (ve.sqrt() + eps * c2)
            if newly.any():
                p_on.masked_fill_(newly[own], 0.0)
            flat[on] = p_on
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                te = ((forward(xt) - yt) ** 2).mean(0)
            evals.append(torch.where(alive, te, torch.full_like(te, math.inf)))
            eval_steps.append(step)
    return PopulationRun(torch.stack(evals, 1), eval_steps, train_loss, grad_norm, diverged)
