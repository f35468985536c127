"""A small, seeded, deterministic training loop that records gradient flow.

:func:`train` runs minibatch SGD or Adam on a :class:`lib.data.Dataset`, with
optional gradient clipping, and returns a :class:`History`: the loss at every
step, test loss and accuracy at intervals (training-set accuracy too, if
asked: it costs a pass over the training set), the total gradient norm before
clipping, and, every ``probe_every`` steps, a full :mod:`lib.probes` report
plus each layer's relative update size ``||dW|| / ||W||``. One step is
:func:`train_step`. To train many seeds or learning rates at once, use
:func:`lib.population.train`.

Determinism: the same model, data, arguments and seed give the same history,
bit for bit, on the same machine *at the same torch thread count* (the book
runs every chapter with one thread; a different count changes the order of
float reductions inside matrix products, and so the last bits).

A tqdm progress bar (:func:`progress_bar`) shows when run interactively; set
the environment variable ``TQDM_DISABLE=1`` (the Makefile does, for builds
and tests) to silence it.

The two optimisers are written out here (:class:`SGD`, :class:`Adam`) rather
than taken from ``torch.optim``, for two reasons: the book discusses what
Adam's update does to a vanishing gradient, so its few lines should be
readable; and the first ``torch.optim`` optimiser in a process imports
``torch._dynamo``, about a second per chapter. The tests check both against
``torch.optim`` step by step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from lib import _checks
from lib import probes as _probes
from lib import seeds as _seeds
from lib._progress import progress_bar
from lib.data import Dataset

__all__ = ["History", "Config", "train", "train_step", "evaluate", "progress_bar",
           "check_config", "loss_function", "batch_generator", "next_batch",
           "OPTIMIZERS", "SGD", "Adam"]

#: The optimisers :func:`train` accepts by name.
OPTIMIZERS = ("sgd", "adam")


def _number(name: str, v: Any, *, positive: bool = False, allow_none: bool = False,
            minimum: float | None = None) -> float | None:
    """``v`` as a finite float (numpy scalars accepted), or a TypeError/ValueError naming it."""
    if v is None and allow_none:
        return None
    return _checks.check_number(v, name, gt=0.0 if positive else None, ge=minimum)


def _int(name: str, v: Any, minimum: int, *, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    return _checks.check_int(v, name, ge=minimum)


class SGD:
    """Stochastic gradient descent with momentum and L2 weight decay, as ``torch.optim.SGD``.

    .. math::

        v \\leftarrow \\mu v + (g + \\lambda w) \\quad (v_1 = g_1 + \\lambda w), \\qquad
        w \\leftarrow w - \\eta v.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr = _number("lr", lr, positive=True)
        self.momentum = _number("momentum", momentum, minimum=0.0)
        self.weight_decay = _number("weight_decay", weight_decay, minimum=0.0)
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

    Per weight, with :math:`g` the gradient plus :math:`\\lambda w`:

    .. math::

        m \\leftarrow \\beta_1 m + (1 - \\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + (1 - \\beta_2) g^2, \\quad
        w \\leftarrow w - \\eta \\frac{m / (1 - \\beta_1^t)}
        {\\sqrt{v / (1 - \\beta_2^t)} + \\epsilon}.

    The step is about ``lr * sign(g)`` whatever the gradient's size, until
    ``|g|`` falls towards ``eps``.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr = _number("lr", lr, positive=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        for k, b in enumerate(betas):
            if _number(f"betas[{k}]", b, minimum=0.0) >= 1:  # type: ignore[operator]
                raise ValueError(f"betas[{k}] must be in [0, 1), got {b!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _number("eps", eps, positive=True)
        self.weight_decay = _number("weight_decay", weight_decay, minimum=0.0)
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
    train_acc: list[float] = field(default_factory=list)  # only with eval_train=True
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


def loss_function(data: Dataset) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss :func:`train` uses: cross-entropy for classes, MSE for regression."""
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
        return (float(nn.functional.cross_entropy(out, y)),
                float((out.argmax(1) == y).float().mean()))
    finally:
        model.train(was_training)


def batch_generator(seed: int) -> torch.Generator:
    """The private generator a run with ``seed`` draws its minibatches from."""
    return torch.Generator().manual_seed(_seeds.stream(seed, "batches"))


def next_batch(gen: torch.Generator, n: int, bs: int) -> Tensor | slice:
    """The indices of the next minibatch of ``bs`` out of ``n`` examples (all if bs >= n)."""
    return torch.randperm(n, generator=gen)[:bs] if bs < n else slice(None)


@dataclass(frozen=True)
class Config:
    """The validated schedule and optimiser settings of a run (see :func:`check_config`)."""

    steps: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    batch_size: int
    eval_every: int
    probe_every: int
    clip_norm: float | None
    clip_value: float | None


def check_config(*, steps: Any, lr: Any, optimizer: Any, momentum: Any, weight_decay: Any,
                 batch_size: Any, clip_norm: Any, clip_value: Any, eval_every: Any,
                 probe_every: Any, n: int) -> Config:
    """Validate :func:`train`'s settings for ``n`` training examples; refuse ignored ones."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    mom = _number("momentum", momentum, minimum=0.0)
    if optimizer == "adam" and mom:
        raise ValueError("momentum is an SGD setting; Adam would ignore it (its first-moment "
                         "decay is betas[0]): pass momentum=0 with optimizer='adam'")
    bs = _int("batch_size", batch_size, 1, allow_none=True)
    steps_i = int(_int("steps", steps, 1))  # type: ignore[arg-type]
    ev = _int("eval_every", eval_every, 0, allow_none=True)
    return Config(steps_i, float(_number("lr", lr, positive=True)),  # type: ignore[arg-type]
                  optimizer, float(mom),  # type: ignore[arg-type]
                  float(_number("weight_decay", weight_decay, minimum=0.0)),  # type: ignore
                  n if bs is None else min(bs, n), ev or max(1, steps_i // 10),
                  int(_int("probe_every", probe_every, 0)),  # type: ignore[arg-type]
                  _number("clip_norm", clip_norm, positive=True, allow_none=True),
                  _number("clip_value", clip_value, positive=True, allow_none=True))


def train_step(model: nn.Module, params: list[nn.Parameter], opt: SGD | Adam,
               loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, *,
               clip_norm: float | None = None, clip_value: float | None = None,
               probe: bool = False) -> tuple[float, float, list[_probes.LayerStats] | None,
                                             list[float] | None]:
    """One step on the batch (x, y): (loss, total gradient norm, probe report, update sizes).

    The loss is computed before the step. If it is not finite, no step is
    taken and the gradient norm is NaN. With ``probe``, the report of
    :func:`lib.probes.watch` and each layer's ``||dW|| / ||W||`` come back;
    otherwise both are None.
    """
    for p in params:
        p.grad = None
    if probe:
        with _probes.watch(model) as rec:
            loss = loss_fn(model(x), y)
            loss.backward()
    else:
        loss = loss_fn(model(x), y)
        loss.backward()
    lv = float(loss.detach())
    if not math.isfinite(lv):
        return lv, math.nan, None, None
    total = float(nn.utils.clip_grad_norm_(params, clip_norm if clip_norm else math.inf))
    if clip_value is not None:
        nn.utils.clip_grad_value_(params, clip_value)
    layers = _probes.layer_modules(model) if probe else []
    before = [m.weight.detach().clone() for _, m in layers]
    opt.step()
    if not probe:
        return lv, total, None, None
    updates = [float((m.weight.detach() - b).norm() / b.norm().clamp_min(1e-30))
               for (_, m), b in zip(layers, before)]
    return lv, total, rec.report(), updates


def train(model: nn.Module, data: Dataset, *, steps: int = 200, lr: float = 0.1,
          optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
          batch_size: int | None = 64, clip_norm: float | None = None,
          clip_value: float | None = None, seed: int = 0, eval_every: int | None = None,
          eval_train: bool = False, probe_every: int = 0, progress: bool = True,
          desc: str | None = None) -> History:
    """Train ``model`` in place on ``data`` and return its :class:`History`.

    Batches come from a private generator seeded with ``seed``, and random
    layers (dropout, RReLU) draw from a private stream, so the caller's RNG
    state is untouched. ``batch_size=None`` trains full-batch. Test loss and
    accuracy are recorded every ``eval_every`` steps (None or 0: every
    ``steps // 10``) and at the last step; ``eval_train=True`` adds the
    training-set accuracy. Training stops early, with ``diverged = True``,
    if the loss becomes NaN or infinite. Arguments the chosen optimiser
    would ignore (``momentum`` with Adam) are refused.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a lib.data.Dataset, got {type(data).__name__}")
    for name, flag in (("eval_train", eval_train), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    seed = int(_checks.check_seed(seed))  # type: ignore[arg-type]
    n = data.x_train.shape[0]
    cfg = check_config(steps=steps, lr=lr, optimizer=optimizer, momentum=momentum,
                       weight_decay=weight_decay, batch_size=batch_size, clip_norm=clip_norm,
                       clip_value=clip_value, eval_every=eval_every, probe_every=probe_every,
                       n=n)
    params = [p for p in model.parameters() if p.requires_grad]
    opt: SGD | Adam
    if cfg.optimizer == "sgd":
        opt = SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = loss_function(data)
    hist = History(layer_names=[name for name, _ in _probes.layer_modules(model)])
    gen = batch_generator(seed)

    # A private RNG stream for dropout/RReLU noise: training never disturbs the caller's state.
    with _seeds.torch_seeded(_seeds.stream(seed, "noise")):
        model.train()
        bar = progress_bar(range(1, cfg.steps + 1), desc or "training", progress)
        for step in bar:
            idx = next_batch(gen, n, cfg.batch_size)
            probing = bool(cfg.probe_every) and (step == 1 or step % cfg.probe_every == 0)
            lv, total, report, updates = train_step(
                model, params, opt, loss_fn, data.x_train[idx], data.y_train[idx],
                clip_norm=cfg.clip_norm, clip_value=cfg.clip_value, probe=probing)
            hist.loss.append(lv)
            if not math.isfinite(lv):
                hist.diverged = True
                break
            hist.grad_norm.append(total)
            if report is not None and updates is not None:
                hist.probe_steps.append(step)
                hist.reports.append(report)
                hist.updates.append(updates)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                tl, ta = evaluate(model, data.x_test, data.y_test)
                hist.eval_steps.append(step)
                hist.test_loss.append(tl)
                hist.test_acc.append(ta)
                if eval_train:
                    hist.train_acc.append(evaluate(model, data.x_train, data.y_train)[1])
                bar.set_postfix(loss=f"{lv:.3g}", test_acc=f"{ta:.3f}")
        bar.close()
    return hist
