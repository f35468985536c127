"""A small, seeded, deterministic training loop that records gradient flow.

:func:`train` runs minibatch SGD or Adam on a :class:`lib.data.Dataset`, with
optional gradient clipping, and returns a :class:`History`: the loss at every
step, test accuracy at intervals, the total gradient norm before clipping, and,
every ``probe_every`` steps, a full :mod:`lib.probes` report plus each layer's
relative update size ``||dW|| / ||W||``.

A tqdm progress bar shows when run interactively; set the environment variable
``TQDM_DISABLE=1`` (the Makefile does, for builds and tests) to silence it.

The two optimisers are written out here (:class:`SGD`, :class:`Adam`) rather
than taken from ``torch.optim``, for two reasons: the book discusses what
Adam's update does to a vanishing gradient, so its few lines should be
readable; and the first ``torch.optim`` optimiser in a process imports
``torch._dynamo``, about a second per chapter. The tests check both against
``torch.optim`` step by step.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from lib import probes as _probes
from lib import seeds as _seeds
from lib.data import Dataset

with warnings.catch_warnings():
    # In a notebook without ipywidgets tqdm.auto warns once at import and falls back to the
    # text bar, which is all we want; the warning would otherwise print on every chapter page.
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

__all__ = ["History", "train", "train_side_by_side", "evaluate", "OPTIMIZERS", "SGD", "Adam"]

OPTIMIZERS = ("sgd", "adam")


class SGD:
    """Stochastic gradient descent with momentum and L2 weight decay, as ``torch.optim.SGD``.

    ``v <- momentum * v + (g + weight_decay * w)`` (``v`` starts at the first
    gradient), then ``w <- w - lr * v``.
    """

    def __init__(self, params: list[nn.Parameter], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        self.params, self.lr, self.momentum, self.weight_decay = list(params), lr, momentum, weight_decay
        self._velocity: list[Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad if not self.weight_decay else p.grad.add(p, alpha=self.weight_decay)
            if self.momentum:
                v = self._velocity[i]
                if v is None:
                    v = self._velocity[i] = g.clone()
                else:
                    v.mul_(self.momentum).add_(g)
                g = v
            p.add_(g, alpha=-self.lr)


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction and L2 weight decay, as ``torch.optim.Adam``.

    Per weight: ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, then
    ``w <- w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``. The step
    is about ``lr * sign(g)`` whatever the gradient's size, until ``|g|``
    falls towards ``eps``.
    """

    def __init__(self, params: list[nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.weight_decay = weight_decay
        self._m = [torch.zeros_like(p) for p in self.params]
        self._v = [torch.zeros_like(p) for p in self.params]
        self._t = [0] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad if not self.weight_decay else p.grad.add(p, alpha=self.weight_decay)
            self._t[i] += 1
            t = self._t[i]
            m, v = self._m[i], self._v[i]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g.conj(), value=1 - b2)
            step_size = self.lr / (1 - b1**t)
            denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)


@dataclass
class History:
    """What :func:`train` measured. Lists indexed by step unless named otherwise."""

    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # total, before clipping
    eval_steps: list[int] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    probe_steps: list[int] = field(default_factory=list)
    reports: list[list[_probes.LayerStats]] = field(default_factory=list)
    updates: list[list[float]] = field(default_factory=list)  # per probe step, per layer
    layer_names: list[str] = field(default_factory=list)
    diverged: bool = False

    @property
    def final_loss(self) -> float:
        return self.loss[-1] if self.loss else math.nan

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else math.nan

    def column(self, field_name: str) -> list[list[float]]:
        """One probe column over time: ``[[layer values] for each probe step]``."""
        valid = [f.name for f in fields(_probes.LayerStats)]
        if field_name not in valid:
            raise ValueError(f"unknown column {field_name!r}; columns: {', '.join(valid)}")
        return [[getattr(r, field_name) for r in rep] for rep in self.reports]


def _loss_fn(data: Dataset) -> Callable[[Tensor, Tensor], Tensor]:
    if data.n_classes:
        return nn.functional.cross_entropy
    return lambda out, y: nn.functional.mse_loss(out, y.reshape(out.shape))


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(loss, accuracy) of ``model`` on (x, y) in eval mode; accuracy is NaN for regression."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be torch.Tensors")
    was_training = model.training
    model.eval()
    try:
        out = model(x)
        if y.is_floating_point():
            return float(nn.functional.mse_loss(out, y.reshape(out.shape))), math.nan
        return float(nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())
    finally:
        model.train(was_training)


def _batch_generator(seed: int) -> torch.Generator:
    """The private generator a run with ``seed`` draws its minibatches from."""
    return torch.Generator().manual_seed(_seeds.stream(seed, "batches"))


def _next_batch(gen: torch.Generator, n: int, bs: int) -> Tensor | slice:
    """The indices of the next minibatch of ``bs`` out of ``n`` examples (all of them if bs >= n)."""
    return torch.randperm(n, generator=gen)[:bs] if bs < n else slice(None)


def _positive_number(name: str, v: Any, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}, got {v!r}")


def _check_schedule(steps: Any, lr: Any, batch_size: Any, probe_every: Any, eval_every: Any,
                    n: int) -> tuple[int, int]:
    """Validate what :func:`train` and :func:`train_side_by_side` share; return (batch, eval_every)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    _positive_number("lr", lr)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1 or None (full batch), got {batch_size!r}")
    if isinstance(probe_every, bool) or not isinstance(probe_every, int) or probe_every < 0:
        raise ValueError(f"probe_every must be an int >= 0 (0 = never), got {probe_every!r}")
    if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int)
                                   or eval_every < 0):
        raise ValueError(f"eval_every must be an int >= 1, or None or 0 (every steps // 10), "
                         f"got {eval_every!r}")
    return (n if batch_size is None else min(batch_size, n)), (eval_every or max(1, steps // 10))


def train(model: nn.Module, data: Dataset, *, steps: int = 200, lr: float = 0.1,
          optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
          batch_size: int | None = 64, clip_norm: float | None = None,
          clip_value: float | None = None, seed: int = 0, eval_every: int | None = None,
          probe_every: int = 0, progress: bool = True, desc: str | None = None) -> History:
    """Train ``model`` in place on ``data`` and return its :class:`History`.

    Same model, data, arguments and seed give the same history, bit for bit, on
    the same machine (batches come from a private generator seeded with ``seed``).
    ``batch_size=None`` trains full-batch. Training stops early, with
    ``history.diverged = True``, if the loss becomes NaN or infinite.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a lib.data.Dataset, got {type(data).__name__}")
    for name, v in (("momentum", momentum), ("weight_decay", weight_decay)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    _positive_number("clip_norm", clip_norm, allow_none=True)
    _positive_number("clip_value", clip_value, allow_none=True)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    n = data.x_train.shape[0]
    bs, eval_every = _check_schedule(steps, lr, batch_size, probe_every, eval_every, n)

    params = [p for p in model.parameters() if p.requires_grad]
    opt: SGD | Adam
    if optimizer == "sgd":
        opt = SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = Adam(params, lr=lr, weight_decay=weight_decay)
    loss_fn = _loss_fn(data)
    layers = _probes.layer_modules(model)
    hist = History(layer_names=[name for name, _ in layers])
    gen = _batch_generator(seed)

    # A private RNG stream for dropout/RReLU noise: training never disturbs the caller's state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seeds.stream(seed, "noise"))
        model.train()
        # TQDM_DISABLE is read here, not left to tqdm: its notebook bar sets disable=False
        # itself, and builds use the variable to keep progress widgets (whose script comes
        # from a CDN) out of the published pages.
        quiet = not progress or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
        bar = tqdm(range(1, steps + 1), desc=desc or "training", leave=False, disable=quiet)
        for step in bar:
            idx = _next_batch(gen, n, bs)
            x, y = data.x_train[idx], data.y_train[idx]
            probing = probe_every and (step == 1 or step % probe_every == 0)
            for p in params:
                p.grad = None
            if probing:
                with _probes.watch(model) as rec:
                    out = model(x)
                    loss = loss_fn(out, y)
                    loss.backward()
            else:
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()
            lv = float(loss.detach())
            hist.loss.append(lv)
            if not math.isfinite(lv):
                hist.diverged = True
                break
            total = float(nn.utils.clip_grad_norm_(params, clip_norm if clip_norm else math.inf))
            hist.grad_norm.append(total)
            if clip_value is not None:
                nn.utils.clip_grad_value_(params, clip_value)
            if probing:
                before = [m.weight.detach().clone() for _, m in layers]
            opt.step()
            if probing:
                hist.probe_steps.append(step)
                hist.reports.append(rec.report())
                hist.updates.append([
                    float((m.weight.detach() - b).norm() / b.norm().clamp_min(1e-30))
                    for (_, m), b in zip(layers, before)
                ])
            if step % eval_every == 0 or step == steps:
                tl, ta = evaluate(model, data.x_test, data.y_test)
                _, tra = evaluate(model, data.x_train, data.y_train)
                hist.eval_steps.append(step)
                hist.test_loss.append(tl)
                hist.test_acc.append(ta)
                hist.train_acc.append(tra)
                bar.set_postfix(loss=f"{lv:.3g}", test_acc=f"{ta:.3f}")
        bar.close()
    return hist


def _plain_mlp_signature(model: Any, k: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(parameter shapes and dtype, activation key) of ``models[k]``, or a clear error."""
    from lib import networks as _networks  # lazy: lib.training does not need it otherwise

    if not isinstance(model, _networks.MLP):
        raise TypeError(f"models[{k}] must be a lib.networks.MLP (from lib.networks.mlp), "
                        f"got {type(model).__name__}")
    hidden = model.hidden()
    output = getattr(model, "output", None)
    if not hidden or not isinstance(output, nn.Linear):
        raise ValueError(f"models[{k}] must have hidden layers and a Linear 'output' layer")
    act_keys = set()
    for name, layer in hidden:
        if not isinstance(layer, _networks.Layer) or layer.norm is not None:
            raise ValueError(f"models[{k}].{name} is not a plain Linear -> activation layer: "
                             "train_side_by_side takes plain MLPs (no residual blocks, no norm)")
        act = layer.act
        if any(True for _ in act.parameters()) or isinstance(act, nn.RReLU):
            raise ValueError(f"models[{k}].{name} has a learnable or random activation "
                             f"({type(act).__name__}); use lib.training.train for it")
        act_keys.add((type(act), repr(act), tuple(sorted(
            (a, v) for a, v in vars(act).items()
            if not a.startswith("_") and isinstance(v, (bool, int, float, str))))))
    if len(act_keys) != 1:
        raise ValueError(f"models[{k}] uses more than one activation across its layers")
    linears = [layer.linear for _, layer in hidden] + [output]
    if any(lin.bias is None for lin in linears):
        raise ValueError(f"models[{k}] has Linear layers without bias; train_side_by_side needs biases")
    if not all(p.requires_grad for p in model.parameters()):
        raise ValueError(f"models[{k}] has frozen parameters; train_side_by_side trains all of them")
    shapes = tuple(tuple(lin.weight.shape) for lin in linears) + (linears[0].weight.dtype,)
    return shapes, next(iter(act_keys))


def _stacked_forward(weights: list[Tensor], biases: list[Tensor], x: Tensor,
                     groups: list[tuple[int, nn.Module]]) -> Tensor:
    """Outputs (M, batch, out) of M stacked MLPs, one batched matrix product per layer.

    ``weights[i]`` is (M, in, out) (each Linear weight transposed), ``biases[i]`` is (M, out);
    ``x`` is (batch, in), shared by all, or (M, batch, in); ``groups`` lists (count, activation)
    for consecutive runs of models that share an activation.
    """
    h = x if x.dim() == 3 else x.expand(len(weights[0]), *x.shape)
    counts = [count for count, _ in groups]
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b.unsqueeze(1), h, w)
        if i < len(weights) - 1:  # no activation after the output layer
            if len(groups) == 1:
                h = groups[0][1](h)
            else:
                h = torch.cat([f(part) for part, (_, f) in zip(h.split(counts), groups)])
    return h


def _stacked_loss(data: Dataset, out: Tensor, y: Tensor) -> Tensor:
    """The loss :func:`train` uses, for each of the M stacked models: shape (M,)."""
    if data.n_classes:
        return nn.functional.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)
    return (out - y.reshape(out.shape)).pow(2).flatten(1).mean(1)


def train_side_by_side(models: Sequence[nn.Module], data: Dataset, seeds: Sequence[int], *,
                       steps: int, lr: float, batch_size: int | None = 64,
                       eval_every: int | None = None,
                       probe_every: int = 0) -> tuple[list[History], np.ndarray | None]:
    """Train several same-shaped plain MLPs with plain SGD at once, as :func:`train` would one by one.

    Model ``k`` sees the minibatches of ``train(models[k], data, seed=seeds[k], ...)`` and takes
    the same SGD steps (equal up to float rounding), but the weights of all models are stacked
    and each layer is one batched matrix product for all of them, so training M small models
    costs little more than training one. The models are trained in place.

    Scope: plain SGD only (no momentum, weight decay, clipping or Adam) and only plain
    :class:`lib.networks.MLP` stacks from :func:`lib.networks.mlp` (``Linear -> activation``
    layers with biases, no residual blocks, no normalisation, no learnable or random
    activation such as PReLU or RReLU). The activation may differ between models.
    For anything else use :func:`train`.

    Each returned :class:`History` holds, like :func:`train`'s, the loss and total gradient
    norm at every step and the test loss and accuracy every ``eval_every`` steps (``None`` or
    0: every ``steps // 10``). It leaves ``train_acc`` empty (a pass over the whole training
    set per evaluation would cost more than the training steps of small runs) and holds no
    probe reports. A model whose loss becomes
    NaN or infinite stops there with ``diverged = True`` while the others go on.

    The second value, if ``probe_every > 0``, is the norm of each model's first-layer weight
    gradient at step 1 and every ``probe_every`` steps, as a float64 (probe step, model)
    array (NaN once a model has diverged); otherwise ``None``.
    """
    if isinstance(models, nn.Module) or not isinstance(models, (list, tuple)):
        raise TypeError(f"models must be a list or tuple of lib.networks.MLP, "
                        f"got {type(models).__name__}")
    if not models:
        raise ValueError("models must not be empty")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a lib.data.Dataset, got {type(data).__name__}")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (list, tuple)):
        raise TypeError(f"seeds must be a list or tuple of ints, got {type(seeds).__name__}")
    if len(seeds) != len(models):
        raise ValueError(f"seeds must have one seed per model: len(seeds) = {len(seeds)}, "
                         f"len(models) = {len(models)}")
    for k, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seeds[{k}] must be an int >= 0, got {s!r}")
    if len({id(m) for m in models}) != len(models):
        raise ValueError("models must be distinct objects (the same model appears twice)")
    signatures = [_plain_mlp_signature(m, k) for k, m in enumerate(models)]
    for k, (shape, _) in enumerate(signatures):
        if shape != signatures[0][0]:
            raise ValueError(f"models must all have the same shape: models[{k}] has layers/dtype "
                             f"{shape}, models[0] has {signatures[0][0]}")
    n = data.x_train.shape[0]
    bs, eval_every = _check_schedule(steps, lr, batch_size, probe_every, eval_every, n)
    first_shape, dtype = signatures[0][0][0], signatures[0][0][-1]
    if first_shape[1] != data.n_features or signatures[0][0][-2][0] != data.out_features:
        raise ValueError(f"the models map {first_shape[1]} inputs to {signatures[0][0][-2][0]} "
                         f"outputs, but data has {data.n_features} features and needs "
                         f"{data.out_features} outputs")
    if dtype != data.x_train.dtype:
        raise ValueError(f"the models' dtype {dtype} differs from the data's {data.x_train.dtype}")

    # Models sharing an activation are stacked next to each other; results go back in input order.
    by_act: dict[tuple[Any, ...], list[int]] = {}
    for k, (_, key) in enumerate(signatures):
        by_act.setdefault(key, []).append(k)
    order = [k for ks in by_act.values() for k in ks]
    groups = [(len(ks), models[ks[0]].hidden()[0][1].act) for ks in by_act.values()]
    ordered = [models[k] for k in order]
    run_seeds = [seeds[k] for k in order]
    m_count = len(ordered)

    linears = [[lay.linear for _, lay in m.hidden()] + [m.output] for m in ordered]
    weights = [torch.stack([lin.weight.detach().T for lin in layer]).requires_grad_()
               for layer in zip(*linears)]
    biases = [torch.stack([lin.bias.detach() for lin in layer]).requires_grad_()
              for layer in zip(*linears)]
    params = weights + biases
    layer_names = [name for name, _ in _probes.layer_modules(ordered[0])]
    hists = [History(layer_names=list(layer_names)) for _ in ordered]
    gens = {s: _batch_generator(s) for s in dict.fromkeys(run_seeds)}
    alive = [True] * m_count
    y_test = data.y_test.expand(m_count, *data.y_test.shape)
    y_full = data.y_train.expand(m_count, *data.y_train.shape)
    grad1: list[Tensor] = []

    for step in range(1, steps + 1):
        if bs < n:
            batch = {s: _next_batch(g, n, bs) for s, g in gens.items()}
            idx = torch.stack([batch[s] for s in run_seeds])
            x, y = data.x_train[idx], data.y_train[idx]
        else:
            x, y = data.x_train, y_full
        loss = _stacked_loss(data, _stacked_forward(weights, biases, x, groups), y)
        loss.sum().backward()  # each model's parameters get the gradient of its own loss only
        for k, value in enumerate(loss.tolist()):
            if alive[k]:
                hists[k].loss.append(value)
                if not math.isfinite(value):
                    hists[k].diverged = True
                    alive[k] = False
        with torch.no_grad():
            if not all(alive):
                # As train stops before the step, a diverged model keeps its last finite weights.
                dead = ~torch.tensor(alive)
                for p in params:
                    p.grad[dead] = 0.0
            # As clip_grad_norm_ in train: the norm of the per-tensor norms, here per model.
            total = torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1)
                                 for p in params]).norm(dim=0)
            for k, g in enumerate(total.tolist()):
                if alive[k]:
                    hists[k].grad_norm.append(g)
            if probe_every and (step == 1 or step % probe_every == 0):
                g1 = weights[0].grad.double().flatten(1).norm(dim=1)
                grad1.append(torch.where(torch.tensor(alive), g1, math.nan))
            # p <- p - lr * grad for all tensors in one call, as torch.optim.SGD does internally.
            torch._foreach_add_(params, [p.grad for p in params], alpha=-lr)
            for p in params:
                p.grad = None
            if not any(alive):
                break
            if step % eval_every == 0 or step == steps:
                out = _stacked_forward(weights, biases, data.x_test, groups)
                test_loss = _stacked_loss(data, out, y_test).tolist()
                test_acc = ((out.argmax(2) == y_test).float().mean(1).tolist() if data.n_classes
                            else [math.nan] * m_count)
                for k, h in enumerate(hists):
                    if alive[k]:
                        h.eval_steps.append(step)
                        h.test_loss.append(test_loss[k])
                        h.test_acc.append(test_acc[k])

    with torch.no_grad():
        for layer, w, b in zip(zip(*linears), weights, biases):
            for lin, w_k, b_k in zip(layer, w, b):
                lin.weight.copy_(w_k.T)
                lin.bias.copy_(b_k)
    inverse = [0] * m_count
    for j, k in enumerate(order):
        inverse[k] = j
    probes_out = torch.stack(grad1)[:, inverse].numpy() if grad1 else None
    return [hists[j] for j in inverse], probes_out
