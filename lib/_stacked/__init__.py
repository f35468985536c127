"""The engine behind :func:`lib.population.train` (private; see that module's docstring).

A *group* is a set of members whose models have the same structure. Each
parameter and buffer of the group is one stacked tensor ``(K, *shape)``. The
group's forward pass is either the hand-written stacked forward of a
:class:`lib.networks.MLP` (:func:`_mlp_forward`) or
``vmap(functional_call(template, ...))`` for any other module; a group whose
model draws random numbers in training (Dropout; RReLU outside the fast path)
or that vmap cannot run is trained member by member with
:func:`lib.training.train`. On the fast path RReLU draws each member's noise
from a generator of its own, seeded as ``lib.training.train`` seeds the
global one for that member, so it draws the same numbers.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lib import networks as _networks
from lib import probes as _probes
from lib import seeds as _seeds
from lib import training as _training
from lib._stacked.keys import _ELEMENTWISE, _RANDOM, _act_key, _acts_of, _mlp_ok, group_key
from lib.data import Dataset


def _per_member(v: Tensor, like: Tensor) -> Tensor:
    """``v`` (one value per member, shape (K,)) viewed to broadcast over ``like`` (K, ...)."""
    return v.view(-1, *[1] * (like.dim() - 1))


class _Group:
    def __init__(self, idx: list[int], models: list[nn.Module], lrs: list[float],
                 cfg: _training.Config) -> None:
        self.idx, self.models, self.template, self.cfg = idx, models, models[0], cfg
        k = len(models)
        self.names = [n for n, _ in self.template.named_parameters()]
        self.bnames = [n for n, _ in self.template.named_buffers()]
        self.mlp = _mlp_ok(self.template)
        # The fast path keeps Linear weights as (K, in, out), contiguous: h @ W needs no
        # transpose, and the gradient lands in the parameter's own layout (no copy).
        self.transposed = {f"{n}.weight" for n, m in self.template.named_modules()
                           if isinstance(m, nn.Linear)} if self.mlp else set()
        # One name -> tensor map per member, built once (a lookup per name and member
        # would walk every module tree len(names) times).
        params = [dict(m.named_parameters()) for m in models]
        buffers = [dict(m.named_buffers()) for m in models]
        with torch.no_grad():
            self.P = {n: torch.stack([self._layout(n, p[n].detach())
                                      for p in params]).contiguous().requires_grad_()
                      for n in self.names}
            self.B = {n: torch.stack([b[n] for b in buffers]).clone()
                      for n in self.bnames}
        self.lrs = torch.tensor(lrs, dtype=torch.float64)
        # RReLU on the fast path: one noise generator per member (set by run()).
        self.noise: list[torch.Generator] = []
        self.alive = torch.ones(k, dtype=torch.bool)
        self.state: dict[str, list[Tensor]] = {}
        self.t = 0
        layers = _probes.layer_modules(self.template)
        self.layer_w = [f"{n}.weight" for n, _ in layers]
        self.dead: list[Tensor] = []
        # Per activation module name: (count, module) runs over the stack's members.
        self.runs: dict[str, list[tuple[int, nn.Module]]] = {}
        if self.mlp:
            for name, mod in self.template.named_modules():
                if isinstance(mod, _ELEMENTWISE):
                    runs: list[tuple[int, nn.Module]] = []
                    for m in models:
                        act = m.get_submodule(name)
                        if runs and _act_key(runs[-1][1]) == _act_key(act):
                            runs[-1] = (runs[-1][0] + 1, runs[-1][1])
                        else:
                            runs.append((1, act))
                    self.runs[name] = runs

    def _layout(self, name: str, t: Tensor) -> Tensor:
        return t.T if name in self.transposed else t

    # -- forward -------------------------------------------------------------
    def _lin(self, h: Tensor, prefix: str) -> Tensor:
        w, b = self.P[f"{prefix}.weight"], self.P.get(f"{prefix}.bias")  # w: (K, in, out)
        return torch.bmm(h, w) if b is None else torch.baddbmm(b.unsqueeze(1), h, w)

    def _norm(self, z: Tensor, prefix: str, mod: nn.Module | None, training: bool) -> Tensor:
        if mod is None:
            return z
        if isinstance(mod, nn.LayerNorm):
            z = F.layer_norm(z, mod.normalized_shape, eps=mod.eps)
        else:
            batch_stats = training or not mod.track_running_stats
            if batch_stats:
                mean, var = z.mean(1, keepdim=True), z.var(1, unbiased=False, keepdim=True)
                if training and mod.track_running_stats:
                    with torch.no_grad():
                        n, mom = z.shape[1], float(mod.momentum)
                        rm, rv = self.B[f"{prefix}.running_mean"], self.B[f"{prefix}.running_var"]
                        rm.mul_(1 - mom).add_(mean.squeeze(1), alpha=mom)
                        rv.mul_(1 - mom).add_(var.squeeze(1) * (n / max(n - 1, 1)), alpha=mom)
                        self.B[f"{prefix}.num_batches_tracked"].add_(1)
            else:
                mean = self.B[f"{prefix}.running_mean"].unsqueeze(1)
                var = self.B[f"{prefix}.running_var"].unsqueeze(1)
            z = (z - mean) / torch.sqrt(var + mod.eps)
        w = self.P.get(f"{prefix}.weight")
        if w is not None:
            z = z * w.unsqueeze(1) + self.P[f"{prefix}.bias"].unsqueeze(1)
        return z

    def _act(self, z: Tensor, prefix: str, mod: nn.Module, record: bool,
             training: bool = True) -> Tensor:
        if isinstance(mod, nn.RReLU):
            if training:  # each member's draws from its own generator, as train draws
                h = torch.stack([torch._C._nn.rrelu_with_noise(
                    zk, torch.empty_like(zk), mod.lower, mod.upper, True, gen)
                    for zk, gen in zip(z, self.noise)])
            else:
                h = F.rrelu(z, mod.lower, mod.upper, training=False)
        elif isinstance(mod, nn.PReLU):
            h = torch.where(z >= 0, z, self.P[f"{prefix}.weight"].unsqueeze(1) * z)
        elif len(self.runs.get(prefix, ())) > 1:
            runs = self.runs[prefix]
            parts = z.split([count for count, _ in runs])
            h = torch.cat([act(part) for part, (_, act) in zip(parts, runs)])
        else:
            h = mod(z)
        if record:  # a unit is dead on this batch if its output is 0 for every example
            self.dead.append((~(h != 0).any(1)).double().mean(1).detach())
        return h

    def _mlp_forward(self, x: Tensor, training: bool, record: bool) -> Tensor:
        h = x
        nan = torch.full((x.shape[0],), math.nan, dtype=torch.float64)
        for name, mod in self.template.named_children():
            if isinstance(mod, _networks.Layer):
                z = self._norm(self._lin(h, f"{name}.linear"), f"{name}.norm", mod.norm, training)
                h = self._act(z, f"{name}.act", mod.act, record, training)
            elif isinstance(mod, _networks.ResidualBlock):
                u = self._norm(self._lin(h, f"{name}.fc1"), f"{name}.norm", mod.norm, training)
                a = self._act(u, f"{name}.act", mod.act, record, training)
                if record:
                    self.dead.append(nan)  # fc2: no activation follows it in the block
                h = h + mod.scale * self._lin(a, f"{name}.fc2")
            else:
                h = self._lin(h, name)
                if record:
                    self.dead.append(nan)
        return h

    def forward(self, x: Tensor, training: bool, record: bool = False) -> Tensor:
        k = len(self.models)
        x = x if x.dim() == 3 else x.expand(k, *x.shape)
        self.dead = []
        if self.mlp:
            return self._mlp_forward(x, training, record)
        from torch.func import functional_call, vmap
        self.template.train(training)

        def one(p: list[Tensor], b: list[Tensor], xi: Tensor) -> Tensor:
            return functional_call(self.template, {**dict(zip(self.names, p)),
                                                   **dict(zip(self.bnames, b))}, (xi,))
        out = vmap(one)([self.P[n] for n in self.names], [self.B[n] for n in self.bnames], x)
        if record:
            self.dead = [torch.full((k,), math.nan, dtype=torch.float64)] * len(self.layer_w)
        return out

    # -- one step ------------------------------------------------------------
    def step(self, x: Tensor, y: Tensor, loss_fn: Any, probe: bool) -> dict[str, Tensor]:
        cfg, params = self.cfg, [self.P[n] for n in self.names]
        loss = loss_fn(self.forward(x, True, probe), y)
        for p in params:
            p.grad = None
        loss.sum().backward()
        out: dict[str, Tensor] = {"loss": loss.detach().double()}
        self.alive &= torch.isfinite(out["loss"])
        mask = self.alive
        all_alive = bool(mask.all())
        with torch.no_grad():
            # A diverged member keeps its last finite weights, as train stops before the step.
            grads = [torch.zeros_like(p) if p.grad is None else p.grad if all_alive
                     else p.grad.masked_fill_(~_per_member(mask, p), 0.0)
                     for p in params]
            # Per member, the norm over all its gradient entries (as clip_grad_norm_).
            total = torch.cat([g.flatten(1) for g in grads], 1).norm(dim=1).double()
            out["grad_norm"] = torch.where(mask, total, math.nan)
            if cfg.clip_norm is not None:
                coef = (cfg.clip_norm / (total + 1e-6)).clamp(max=1.0)
                for g in grads:
                    g.mul_(_per_member(coef.to(g.dtype), g))
            if cfg.clip_value is not None:  # after the norm, as lib.training.train
                for g in grads:
                    g.clamp_(-cfg.clip_value, cfg.clip_value)
            if probe:
                g_of = dict(zip(self.names, grads))
                out["weight_grad_norm"] = torch.stack(
                    [g_of[w].flatten(1).norm(dim=1).double() for w in self.layer_w], 1)
                out["dead"] = torch.stack(self.dead, 1)
                before = [self.P[w].detach().clone() for w in self.layer_w]
            self._update(params, grads, torch.where(mask, self.lrs, 0.0))
            if probe:
                out["update_ratio"] = torch.stack(
                    [(self.P[w] - b).flatten(1).norm(dim=1).double()
                     / b.flatten(1).norm(dim=1).double().clamp_min(1e-30)
                     for w, b in zip(self.layer_w, before)], 1)
        for p in params:
            p.grad = None
        return out

    def _update(self, params: list[Tensor], grads: list[Tensor], lr64: Tensor) -> None:
        cfg = self.cfg
        self.t += 1
        lr = lr64.to(params[0].dtype)
        if cfg.optimizer == "sgd" and not cfg.momentum and not cfg.weight_decay:
            # Plain SGD, all tensors in two fused calls: p <- p - lr_k * g.
            steps = torch._foreach_mul(grads, [_per_member(lr, p) for p in params])
            torch._foreach_sub_(params, steps)
            return
        if cfg.optimizer == "adam":
            # The loop's Adam step below, op for op, as fused calls over all tensors.
            b1, b2 = 0.9, 0.999
            if cfg.weight_decay:
                grads = torch._foreach_add(grads, params, alpha=cfg.weight_decay)
            if "m" not in self.state:
                self.state["m"] = [torch.zeros_like(q) for q in params]
                self.state["s"] = [torch.zeros_like(q) for q in params]
            ms, ss = self.state["m"], self.state["s"]
            torch._foreach_lerp_(ms, grads, 1 - b1)
            torch._foreach_mul_(ss, b2)
            torch._foreach_addcmul_(ss, grads, grads, value=1 - b2)
            denom = torch._foreach_sqrt(ss)
            torch._foreach_div_(denom, math.sqrt(1 - b2 ** self.t))
            torch._foreach_add_(denom, 1e-8)
            step = lr / (1 - b1 ** self.t)
            upd = torch._foreach_mul(ms, [_per_member(step, p) for p in params])
            torch._foreach_div_(upd, denom)
            torch._foreach_sub_(params, upd)
            return
        for i, (p, g) in enumerate(zip(params, grads)):  # SGD with momentum/weight decay
            if cfg.weight_decay:
                g = g.add(p, alpha=cfg.weight_decay)
            if cfg.momentum:
                vs = self.state.setdefault("v", [None] * len(params))  # type: ignore[list-item]
                vs[i] = g.clone() if vs[i] is None else vs[i].mul_(cfg.momentum).add_(g)
                g = vs[i]
            p.sub_(_per_member(lr, p) * g)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, loss_fn: Any, classes: int) -> tuple[Tensor, Tensor]:
        out = self.forward(x, False)
        yk = y.expand(len(self.models), *y.shape)
        loss = torch.where(self.alive, loss_fn(out, yk).double(), math.nan)
        acc = ((out.argmax(2) == yk).double().mean(1) if classes
               else torch.full_like(loss, math.nan))
        return loss, torch.where(self.alive, acc, math.nan)

    @torch.no_grad()
    def write_back(self) -> None:
        for k, m in enumerate(self.models):
            for n, p in m.named_parameters():
                p.copy_(self._layout(n, self.P[n][k]))
            for n, b in m.named_buffers():
                b.copy_(self.B[n][k])


def _stacked_loss(data: Dataset) -> Any:
    if data.n_classes:
        return lambda out, y: F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)
    return lambda out, y: (out - y.reshape(out.shape)).pow(2).flatten(1).mean(1)


def _vmap_ok(group: _Group, data: Dataset) -> bool:
    """Try the vmap forward once; a module it cannot run goes to the loop."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in group.template.modules()):
        return False
    try:
        with torch.no_grad():
            group.forward(data.x_train[:2], True)
        return True
    except Exception:  # noqa: BLE001 - any failure means: train this group in a loop
        return False


def run(members: list[Any], models: list[nn.Module], data: Dataset, cfg: _training.Config,
        *, eval_train: bool, probes: tuple[str, ...], batched: bool, progress: bool,
        desc: str) -> dict[str, Any]:
    """Train all members; return the fields of a :class:`lib.population.Population`."""
    n, m_count, steps = data.x_train.shape[0], len(members), cfg.steps
    by_sig: dict[Any, list[int]] = {}
    for i, model in enumerate(models):
        if model.training is False:
            model.train()
        by_sig.setdefault(group_key(model), []).append(i)
    groups: list[_Group] = []
    loop: list[int] = []
    for idx in by_sig.values():
        # members with the same activations next to each other (contiguous runs)
        acts = {i: _acts_of(models[i]) for i in idx}
        order = {k: j for j, k in enumerate(dict.fromkeys(acts.values()))}
        idx = sorted(idx, key=lambda i: order[acts[i]])
        ms = [models[i] for i in idx]
        fast = _mlp_ok(ms[0])  # RReLU is batched there (per-member noise generators)
        if not batched or any(isinstance(mod, _RANDOM) and getattr(mod, "p", 1) != 0
                              and not (fast and isinstance(mod, nn.RReLU))
                              for mod in ms[0].modules()):
            loop += idx
            continue
        g = _Group(idx, ms, [members[i].lr for i in idx], cfg)
        if any(isinstance(mod, nn.RReLU) for mod in ms[0].modules()):
            g.noise = [torch.Generator().manual_seed(
                _seeds.stream(members[i].seed, "noise")) for i in idx]
        if g.mlp or _vmap_ok(g, data):
            groups.append(g)
        else:
            loop += idx
    eval_steps = [s for s in range(1, steps + 1) if s % cfg.eval_every == 0 or s == steps]
    probe_steps = ([s for s in range(1, steps + 1) if s == 1 or s % cfg.probe_every == 0]
                   if cfg.probe_every else [])
    layer_names = [nm for nm, _ in _probes.layer_modules(models[0])]
    nan = math.nan
    loss = torch.full((m_count, steps), nan, dtype=torch.float64)
    grad_norm = torch.full((m_count, steps), nan, dtype=torch.float64)
    test_loss = torch.full((m_count, len(eval_steps)), nan, dtype=torch.float64)
    test_acc, train_acc = test_loss.clone(), test_loss.clone()
    n_layers = len(layer_names)
    probe_t = {p: torch.full((m_count, len(probe_steps), n_layers), nan, dtype=torch.float64)
               for p in probes}
    diverged = torch.zeros(m_count, dtype=torch.bool)
    loss_fn = _stacked_loss(data)
    bar = _training.progress_bar(None, desc, progress, total=steps * (bool(groups) + len(loop)))

    if groups:
        gens = {members[i].seed: _training.batch_generator(members[i].seed)
                for g in groups for i in g.idx}
        for step in range(1, steps + 1):
            batch = ({s: _training.next_batch(gen, n, cfg.batch_size) for s, gen in gens.items()}
                     if cfg.batch_size < n else None)
            probing = step in probe_steps
            for g in groups:
                if batch is None:
                    x, y = data.x_train, data.y_train.expand(len(g.idx), *data.y_train.shape)
                else:
                    ids = torch.stack([batch[members[i].seed] for i in g.idx])
                    x, y = data.x_train[ids], data.y_train[ids]
                was_alive = g.alive.clone()
                out = g.step(x, y, loss_fn, probing)
                loss[g.idx, step - 1] = torch.where(was_alive, out["loss"], nan)
                grad_norm[g.idx, step - 1] = out["grad_norm"]
                if probing:
                    j = probe_steps.index(step)
                    for p in probes:
                        probe_t[p][g.idx, j] = torch.where(was_alive.unsqueeze(1) & g.alive
                                                           .unsqueeze(1), out[p], nan)
                if step in eval_steps:
                    j = eval_steps.index(step)
                    test_loss[g.idx, j], test_acc[g.idx, j] = g.evaluate(
                        data.x_test, data.y_test, loss_fn, data.n_classes)
                    if eval_train:
                        train_acc[g.idx, j] = g.evaluate(data.x_train, data.y_train, loss_fn,
                                                         data.n_classes)[1]
            bar.update(1)
            if not any(bool(g.alive.any()) for g in groups):
                bar.update(steps - step)
                break
        for g in groups:
            g.write_back()
            diverged[g.idx] = ~g.alive

    for i in loop:
        mem = members[i]
        h = _training.train(models[i], data, steps=steps, lr=mem.lr, optimizer=cfg.optimizer,
                            momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                            batch_size=cfg.batch_size, clip_norm=cfg.clip_norm,
                            clip_value=cfg.clip_value, seed=mem.seed,
                            eval_every=cfg.eval_every, eval_train=eval_train,
                            probe_every=cfg.probe_every, progress=False)
        loss[i, :len(h.loss)] = torch.tensor(h.loss, dtype=torch.float64)
        grad_norm[i, :len(h.grad_norm)] = torch.tensor(h.grad_norm, dtype=torch.float64)
        for j, s in enumerate(h.eval_steps):
            k = eval_steps.index(s)
            test_loss[i, k], test_acc[i, k] = h.test_loss[j], h.test_acc[j]
            if eval_train:
                train_acc[i, k] = h.train_acc[j]
        for j, s in enumerate(h.probe_steps):
            k = probe_steps.index(s)
            cols = {"weight_grad_norm": [r.weight_grad_norm for r in h.reports[j]],
                    "dead": [r.dead for r in h.reports[j]], "update_ratio": h.updates[j]}
            for p in probes:
                probe_t[p][i, k] = torch.tensor(cols[p], dtype=torch.float64)
        diverged[i] = h.diverged
        bar.update(steps)
    bar.close()
    is_batched = [False] * m_count
    for g in groups:
        for i in g.idx:
            is_batched[i] = True
    return dict(loss=loss, grad_norm=grad_norm, eval_steps=eval_steps, test_loss=test_loss,
                test_acc=test_acc, train_acc=train_acc if eval_train else None,
                probe_steps=probe_steps, probes=probe_t, layer_names=layer_names,
                diverged=diverged, models=models, batched=is_batched)
