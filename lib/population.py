"""Train a population of networks (seeds x learning rates x arms) as one computation.

A verdict about training needs many runs: several seeds per arm, and a small
learning-rate grid per arm so that no arm is handicapped by a shared rate.
:func:`train` trains all of them at once. Members that share an architecture
are *stacked*: each parameter becomes one tensor with a leading member
dimension, each Linear layer one batched matrix product
``h <- baddbmm(b, h, W^T)`` over all members, and one backward pass gives
every member the gradient of its own loss, since

.. math::

    \\frac{\\partial}{\\partial \\theta_m} \\sum_k L_k(\\theta_k)
    = \\frac{\\partial L_m}{\\partial \\theta_m}.

Each member sees the minibatches ``lib.training.train`` would draw for its
seed (members with the same seed see the same batches, so arms can be
compared seed by seed), and takes the steps of ``lib.training.train`` with
its own learning rate (SGD with momentum and weight decay, or Adam; optional
clipping by norm), equal up to float rounding.

Which models are batched:

* :class:`lib.networks.MLP` from :func:`lib.networks.mlp`, plain or residual,
  with any elementwise activation of :mod:`lib.activations` (PReLU included,
  its slope stacked per member; RReLU too, see below), LayerNorm, and BatchNorm (batch statistics
  per member in training, running statistics per member in evaluation) - by
  a hand-written stacked forward, the fast path. Members whose MLPs differ
  only in a parameter-free activation (ReLU and tanh arms, say) share one
  stack, each activation applied to its own contiguous run of members;
* any other module whose forward is a pure function of its parameters and
  buffers, through :func:`torch.func.functional_call` and
  :func:`torch.func.vmap` (a model with BatchNorm in training mode, or
  any module that draws random numbers, is not: it falls back to the loop);
  RReLU on the fast path draws each member's noise from a generator of its
  own, seeded as ``lib.training.train`` seeds its private noise stream, so a
  member draws the numbers it would draw alone;
* the loop: Dropout, RReLU outside the fast path (random in training: batched
  members could not draw the numbers ``lib.training.train`` draws) and
  anything vmap refuses are trained one member at a time with
  ``lib.training.train``. The result is the same object;
  :attr:`Population.batched` says which path ran.

Bit-identity: the same call gives the same result on the same machine at a
fixed torch thread count (the book runs with one thread); a batched member
equals its ``lib.training.train`` run to float rounding, not bit for bit.

Examples::

    >>> from lib import data, networks, population, seeds
    >>> digits = data.digits()
    >>> pop = population.train(
    ...     {act: (lambda s, a=act: networks.mlp(4, 32, a, init="he", seed=s))
    ...      for act in ("relu", "tanh")},
    ...     digits, seeds.member_seeds(5, "doc"), lrs=(0.03, 0.1), steps=100)
    >>> pop.loss.shape                 # (members, steps)
    >>> best = population.best_lr_per_arm(pop)   # {"relu": 0.1, "tanh": 0.1}
    >>> pop.values("test_acc", arm="relu", lr=best["relu"])  # one per seed
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from lib import (
    _checks,
    _stacked,  # the engine, kept apart so each module stays small
)
from lib import training as _training
from lib.data import Dataset

__all__ = ["Member", "Population", "train", "best_lr_per_arm", "PROBES"]

#: Probe columns :func:`train` can record, each (members, probe steps, layers):
#: ``weight_grad_norm`` (norm of each layer's weight gradient, before
#: clipping), ``dead`` (fraction of a layer's units whose activation output
#: is 0 on every example of the minibatch), ``update_ratio`` (the step's
#: ``||dW|| / ||W||``). Layers are those of :func:`lib.probes.layer_modules`.
PROBES = ("weight_grad_norm", "dead", "update_ratio")


@dataclass(frozen=True)
class Member:
    """One member of a population: its arm, learning rate and seed."""

    arm: str
    lr: float
    seed: int


@dataclass
class Population:
    """What :func:`train` measured; tensors have the member dimension first.

    ``loss``/``grad_norm``: (members, steps), the minibatch loss and total
    gradient norm at every step (NaN from a member's divergence on);
    ``test_loss``/``test_acc`` (and ``train_acc`` when asked for): (members,
    len(eval_steps)); ``probes[name]``: (members,
    len(probe_steps), layers). Accuracy is NaN for regression.
    """

    members: list[Member]
    loss: Tensor
    grad_norm: Tensor
    eval_steps: list[int]
    test_loss: Tensor
    test_acc: Tensor
    train_acc: Tensor | None
    probe_steps: list[int]
    probes: dict[str, Tensor]
    layer_names: list[str]
    diverged: Tensor
    models: list[nn.Module]
    batched: list[bool] = field(default_factory=list)

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(m.arm for m in self.members))

    @property
    def lrs(self) -> list[float]:
        return list(dict.fromkeys(m.lr for m in self.members))

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(m.seed for m in self.members))

    def select(self, arm: str | None = None, lr: float | None = None) -> list[int]:
        """Indices of the members of ``arm`` (any if None) at ``lr`` (any if None), seed order."""
        if arm is not None and arm not in self.arms:
            raise ValueError(f"unknown arm {arm!r}; arms: {', '.join(self.arms)}")
        if lr is not None and not any(math.isclose(lr, v) for v in self.lrs):
            raise ValueError(f"lr {lr!r} is not in the population's grid {self.lrs}")
        return [i for i, m in enumerate(self.members)
                if (arm is None or m.arm == arm) and (lr is None or math.isclose(m.lr, lr))]

    def values(self, name: str, arm: str | None = None, lr: float | None = None,
               at: int = -1, tail: int = 1) -> np.ndarray:
        """One value per selected member: ``name`` at record ``at``, as float64.

        ``name`` is ``loss`` (mean over the last ``tail`` steps), ``grad_norm``,
        ``test_loss``, ``test_acc``, ``train_acc`` or
        ``final_loss`` (the minibatch loss averaged over the last ``tail``
        steps; ``inf`` for a diverged member).
        """
        idx = self.select(arm, lr)
        if name in ("loss", "final_loss"):
            if isinstance(tail, bool) or not isinstance(tail, int) or tail < 1:
                raise ValueError(f"tail must be an int >= 1, got {tail!r}")
            out = self.loss[idx, -tail:].double().mean(1)
            if name == "final_loss":
                out = torch.where(self.diverged[idx], math.inf, out)
            return out.numpy()
        table = {"grad_norm": self.grad_norm, "test_loss": self.test_loss,
                 "test_acc": self.test_acc, "train_acc": self.train_acc}
        if name not in table:
            raise ValueError(f"unknown value {name!r}; choose from final_loss, loss, "
                             f"{', '.join(table)}")
        if table[name] is None:
            raise ValueError(f"{name} was not recorded: pass eval_train=True to train()")
        return table[name][idx, at].double().numpy()


def best_lr_per_arm(pop: Population, *, metric: str = "final_loss", tail: int = 10,
                    higher_is_better: bool = False) -> dict[str, float]:
    """Each arm's best learning rate: the one with the best median ``metric`` over seeds.

    The default ranks by the minibatch loss averaged over the last ``tail``
    steps (a diverged member counts as ``inf``), lower being better; ties go
    to the smaller rate.
    """
    if not isinstance(pop, Population):
        raise TypeError(f"pop must be a lib.population.Population, got {type(pop).__name__}")
    best: dict[str, float] = {}
    for arm in pop.arms:
        scored = []
        for lr in pop.lrs:
            if not pop.select(arm, lr):
                continue
            v = pop.values(metric, arm=arm, lr=lr, tail=tail)
            med = float(np.median(np.where(np.isnan(v), -np.inf if higher_is_better
                                           else np.inf, v)))
            scored.append(((-med if higher_is_better else med), lr))
        best[arm] = min(scored)[1]
    return best


# --- input checks -------------------------------------------------------------

def _builders(build: Any) -> dict[str, Callable[[int], nn.Module]]:
    if callable(build) and not isinstance(build, nn.Module):
        return {"": build}
    if isinstance(build, Mapping) and build:
        for k, f in build.items():
            if not isinstance(k, str) or not callable(f) or isinstance(f, nn.Module):
                raise TypeError("build must map arm names (str) to builders seed -> nn.Module; "
                                f"got {k!r}: {type(f).__name__}")
        return dict(build)
    raise TypeError("build must be a function seed -> nn.Module or a non-empty dict "
                    f"{{arm: function}}, got {type(build).__name__}")


def _grid(lrs: Any) -> list[float]:
    grid = [lrs] if not isinstance(lrs, (list, tuple, np.ndarray)) else list(lrs)
    if not grid:
        raise ValueError("lrs must not be empty")
    out = []
    for v in grid:
        _checks.check_number(v, "lrs", gt=0.0)
        out.append(float(v))
    if len(set(out)) != len(out):
        raise ValueError(f"lrs must not repeat a value, got {out}")
    return out


def _seed_list(seeds: Any) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (list, tuple, range)):
        raise TypeError(f"seeds must be a list of ints, got {type(seeds).__name__}")
    if not seeds:
        raise ValueError("seeds must not be empty")
    out = [int(_checks.check_seed(s, f"seeds[{k}]"))  # type: ignore[arg-type]
           for k, s in enumerate(seeds)]
    if len(set(out)) != len(out):
        raise ValueError("seeds must be distinct (a repeated seed would train the same run twice)")
    return out


def train(build: Callable[[int], nn.Module] | Mapping[str, Callable[[int], nn.Module]],
          data: Dataset, seeds: Sequence[int], *, lrs: float | Sequence[float] = 0.1,
          steps: int = 200, optimizer: str = "sgd", momentum: float = 0.0,
          weight_decay: float = 0.0, batch_size: int | None = 64,
          clip_norm: float | None = None, eval_every: int | None = None,
          eval_train: bool = False, probe_every: int = 0,
          probes: Sequence[str] = ("weight_grad_norm",), batched: bool = True,
          progress: bool = True, desc: str | None = None,
          clip_value: float | None = None) -> Population:
    """Train every (arm, lr, seed) member and return the :class:`Population`.

    Args:
        build: ``build(seed) -> nn.Module``, or a dict ``{arm: build}``; each
            member's model is ``build(seed)`` (so the seed fixes its
            initialisation) and is trained in place (``Population.models``).
        data: the data set; cross-entropy for classes, MSE for regression.
        seeds: the members' seeds (e.g. :func:`lib.seeds.member_seeds`); also
            seed each member's minibatches, as ``lib.training.train(seed=)``.
        lrs: one learning rate or a grid; every arm is trained at every rate.
        steps, optimizer, momentum, weight_decay, batch_size, clip_norm, clip_value, eval_every: as
            :func:`lib.training.train` (``momentum`` is refused with Adam; clipping
            by norm first, then by value, as there).
        eval_train: also record loss and accuracy on the whole training set.
        probe_every: record ``probes`` at step 1 and every ``probe_every``
            steps (0: never); see :data:`PROBES`.
        batched: False forces the loop (one ``lib.training.train`` per member).

    Members are ordered arm by arm, then lr, then seed.
    """
    builders = _builders(build)
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a lib.data.Dataset, got {type(data).__name__}")
    seed_list, grid = _seed_list(seeds), _grid(lrs)
    for name, v in (("eval_train", eval_train), ("batched", batched), ("progress", progress)):
        if not isinstance(v, bool):
            raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    if isinstance(probes, str) or not all(p in PROBES for p in probes):
        raise ValueError(f"probes must be a sequence of names from {', '.join(PROBES)}; "
                         f"got {probes!r}")
    cfg = _training.check_config(steps=steps, lr=grid[0], optimizer=optimizer,
                                 momentum=momentum, weight_decay=weight_decay,
                                 batch_size=batch_size, clip_norm=clip_norm,
                                 clip_value=clip_value,
                                 eval_every=eval_every, probe_every=probe_every,
                                 n=data.x_train.shape[0])
    members = [Member(arm, lr, s) for arm in builders for lr in grid for s in seed_list]
    models = []
    for m in members:
        model = builders[m.arm](m.seed)
        if not isinstance(model, nn.Module):
            raise TypeError(f"build for arm {m.arm!r} returned {type(model).__name__}, "
                            "not an nn.Module")
        models.append(model)
    if len({id(m) for m in models}) != len(models):
        raise ValueError("build must return a new model on every call")
    fields_ = _stacked.run(members, models, data, cfg, eval_train=eval_train,
                           probes=tuple(probes), batched=batched, progress=progress,
                           desc=desc or "population")
    return Population(members=members, **fields_)
