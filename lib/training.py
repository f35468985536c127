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
from typing import Any, Callable

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

__all__ = ["History", "train", "evaluate", "OPTIMIZERS", "SGD", "Adam"]

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


def _positive_number(name: str, v: Any, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}, got {v!r}")


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
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    _positive_number("lr", lr)
    for name, v in (("momentum", momentum), ("weight_decay", weight_decay)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    _positive_number("clip_norm", clip_norm, allow_none=True)
    _positive_number("clip_value", clip_value, allow_none=True)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    n = data.x_train.shape[0]
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1 or None (full batch), got {batch_size!r}")
    bs = n if batch_size is None else min(batch_size, n)
    if isinstance(probe_every, bool) or not isinstance(probe_every, int) or probe_every < 0:
        raise ValueError(f"probe_every must be an int >= 0 (0 = never), got {probe_every!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int)
                                   or eval_every < 0):
        raise ValueError(f"eval_every must be an int >= 1, or None or 0 (every steps // 10), "
                         f"got {eval_every!r}")
    eval_every = eval_every or max(1, steps // 10)

    params = [p for p in model.parameters() if p.requires_grad]
    opt: SGD | Adam
    if optimizer == "sgd":
        opt = SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = Adam(params, lr=lr, weight_decay=weight_decay)
    loss_fn = _loss_fn(data)
    layers = _probes.layer_modules(model)
    hist = History(layer_names=[name for name, _ in layers])
    gen = torch.Generator().manual_seed(_seeds.stream(seed, "batches"))

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
            idx = torch.randperm(n, generator=gen)[:bs] if bs < n else slice(None)
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
