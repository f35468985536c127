"""Many independent random MLPs as one computation, to test the maps (see :mod:`lib.meanfield`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from lib import activations as _acts
from lib import seeds as _seeds
from lib._checks import check_int, check_number

__all__ = ["StackedMLP", "stacked_mlp", "StackedRun", "train_stacked", "correlation"]



@dataclass
class StackedMLP:
    """``M`` MLPs ``x -> W_1 .. W_L (hidden, activation) -> W_out``, stacked.

    ``weights[k]``: ``(M, n_out, n_in)``; ``biases[k]``: ``(M, n_out)``; the last
    pair is the linear read-out. Calling the object maps ``x`` of shape
    ``(B, n_in)`` (the same batch for every member) or ``(M, B, n_in)`` to the
    read-out ``(M, B, n_out)``; :meth:`forward` can also return every hidden
    pre-activation. With ``depths`` (one int per member), member ``m`` uses only
    its first ``depths[m]`` hidden layers and passes its signal unchanged through
    the rest (which then get no gradient), so networks of several depths train
    as one computation.
    """

    weights: list[Tensor]
    biases: list[Tensor]
    activation: str
    depths: Tensor | None = None

    @property
    def members(self) -> int:
        return self.weights[0].shape[0]

    def parameters(self) -> list[Tensor]:
        return [*self.weights, *self.biases]

    def forward(self, x: Tensor, keep: bool = False) -> tuple[Tensor, list[Tensor]]:
        act = _acts.get(self.activation)
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError("x must be a floating-point torch.Tensor")
        if x.dim() == 2:
            x = x.expand(self.members, *x.shape)
        if x.dim() != 3 or x.shape[0] != self.members or x.shape[2] != self.weights[0].shape[2]:
            raise ValueError(f"x must have shape (B, {self.weights[0].shape[2]}) or "
                             f"({self.members}, B, {self.weights[0].shape[2]}), "
                             f"got {tuple(x.shape)}")
        h, zs = x.to(self.weights[0].dtype), []
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
            if k == len(self.weights) - 1:
                return z, zs
            if keep:
                zs.append(z)
            if self.depths is None or k == 0:
                h = act.forward(z)
            else:
                h = torch.where((k < self.depths)[:, None, None], act.forward(z), h)
        raise AssertionError("unreachable")  # pragma: no cover

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)[0]

    def jacobian(self, x: Tensor) -> Tensor:
        """:math:`\\partial a_L / \\partial x = D_L W_L \\cdots D_1 W_1` of the hidden
        stack at one input ``x`` (shape ``(n_in,)``), per member: ``(M, n_L, n_in)``."""
        if not isinstance(x, Tensor) or x.dim() != 1:
            raise ValueError("x must be one input, a 1-D tensor")
        act = _acts.get(self.activation)
        _, zs = self.forward(x[None].detach(), keep=True)
        jac = None
        with torch.no_grad():
            for k, (w, z) in enumerate(zip(self.weights[:-1], zs)):
                step = w if jac is None else torch.bmm(w, jac)
                new = act.derivative(z[:, 0, :])[:, :, None] * step
                if self.depths is not None and k > 0:
                    new = torch.where((k < self.depths)[:, None, None], new, jac)
                jac = new
        return jac


def _draw(shape: tuple[int, int], var: float, orthogonal: bool, gen: torch.Generator,
          dtype: torch.dtype) -> Tensor:
    a = torch.randn(shape, generator=gen, dtype=torch.float64)
    if orthogonal:
        rows, cols = shape
        qm, r = torch.linalg.qr(a if rows >= cols else a.T)
        qm = qm * torch.sign(torch.diagonal(r))  # Haar-distributed, as torch.nn.init.orthogonal_
        a = (qm if rows >= cols else qm.T) * math.sqrt(shape[1])
    return (a * math.sqrt(var / shape[1])).to(dtype)


def stacked_mlp(sigma_w2: Sequence[float], sigma_b2: Sequence[float], *, widths: Sequence[int],
                seeds: Sequence[int], in_features: int = 64, out_features: int = 10,
                activation: str = "tanh", orthogonal: bool = False,
                depths: Sequence[int] | None = None,
                readout_sigma_w2: float | None = None,
                dtype: torch.dtype = torch.float32) -> StackedMLP:
    """``M = len(seeds)`` MLPs with hidden ``widths``; member ``m`` has weights
    :math:`\\mathcal N(0, \\sigma_{w,m}^2/n_{in})` (or orthogonal with the same
    :math:`n_{in}\\operatorname{Var}[w] = \\sigma_{w,m}^2`) and biases
    :math:`\\mathcal N(0, \\sigma_{b,m}^2)` in every layer, the read-out included,
    drawn from its own seed's stream (:func:`lib.seeds.stream`). ``depths``
    (one per member, each in ``1..len(widths)``, square hidden layers) makes
    member ``m`` a ``depths[m]``-layer network (see :class:`StackedMLP`).
    ``readout_sigma_w2`` gives the read-out layer its own weight variance
    (times fan-in) for every member, e.g. a small one for calm initial logits.
    """
    seeds = list(seeds)
    if not seeds or len(sigma_w2) != len(seeds) or len(sigma_b2) != len(seeds):
        raise ValueError("sigma_w2, sigma_b2 and seeds must have the same non-zero length, got "
                         f"{len(sigma_w2)}, {len(sigma_b2)}, {len(seeds)}")
    sw = [check_number(v, f"sigma_w2[{i}]", gt=0) for i, v in enumerate(sigma_w2)]
    sb = [check_number(v, f"sigma_b2[{i}]", ge=0) for i, v in enumerate(sigma_b2)]
    widths = [check_int(n, f"widths[{i}]", ge=1) for i, n in enumerate(widths)]
    if not widths:
        raise ValueError("widths must hold at least one hidden layer")
    dims = [check_int(in_features, "in_features", ge=1), *widths,
            check_int(out_features, "out_features", ge=1)]
    _acts.get(activation)
    ro = None if readout_sigma_w2 is None else check_number(readout_sigma_w2,
                                                            "readout_sigma_w2", gt=0)
    ws: list[list[Tensor]] = [[] for _ in dims[1:]]
    bs: list[list[Tensor]] = [[] for _ in dims[1:]]
    for m, s in enumerate(seeds):
        gen = torch.Generator().manual_seed(_seeds.stream(_seeds._check_seed(s), "meanfield"))
        for k, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
            var = sw[m] if k < len(widths) or readout_sigma_w2 is None else ro
            ws[k].append(_draw((n_out, n_in), var, orthogonal, gen, dtype))
            bs[k].append((torch.randn(n_out, generator=gen, dtype=torch.float64)
                          * math.sqrt(sb[m])).to(dtype))
    d = None
    if depths is not None:
        if len(depths) != len(seeds):
            raise ValueError(f"depths must have one entry per member ({len(seeds)}), "
                             f"got {len(depths)}")
        if len(set(widths)) != 1:
            raise ValueError("depths needs equal hidden widths (skipped layers pass h on)")
        d = torch.tensor([check_int(v, f"depths[{i}]", ge=1, le=len(widths))
                          for i, v in enumerate(depths)])
    return StackedMLP([torch.stack(w) for w in ws], [torch.stack(b) for b in bs], activation,
                      d)


@dataclass(frozen=True)
class StackedRun:
    """What :func:`train_stacked` measured: ``loss`` (M, steps) minibatch loss
    (NaN once a member diverged), ``train_acc``/``test_acc`` (M,) at the end,
    and with ``record_updates`` the update-to-data ratio
    :math:`\\lVert \\Delta W_k \\rVert / \\lVert W_k \\rVert` of every weight
    layer at every step, ``updates`` (M, steps, layers)."""

    loss: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    updates: np.ndarray | None = None


def train_stacked(net: StackedMLP, data: Any, *, steps: int, lr: float | Sequence[float],
                  batch_size: int = 64, seed: int = 0,
                  record_updates: bool = False) -> StackedRun:
    """Plain SGD on cross-entropy for every member at once (in place).

    Every member sees the same minibatches (drawn from ``seed``'s stream);
    ``lr`` is one rate or one per member. One backward pass of the summed
    losses gives each member its own gradient, since members share no weight.
    """
    steps = check_int(steps, "steps", ge=1)
    batch_size = check_int(batch_size, "batch_size", ge=1)
    m = net.members
    lrs = torch.as_tensor(np.broadcast_to(np.asarray(lr, dtype=np.float64), (m,)).copy())
    if not torch.isfinite(lrs).all() or (lrs <= 0).any():
        raise ValueError(f"lr must be > 0 (one value or one per member), got {lr!r}")
    x, y = data.x_train, data.y_train
    gen = torch.Generator().manual_seed(_seeds.stream(_seeds._check_seed(seed), "batches"))
    params = net.parameters()
    for p in params:
        p.requires_grad_(True)
    losses = torch.empty(m, steps, dtype=torch.float64)
    ups = torch.empty(m, steps, len(net.weights), dtype=torch.float64) if record_updates \
        else None
    alive = torch.ones(m, dtype=torch.bool)
    for t in range(steps):
        idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=gen)
        out = net(x[idx])
        loss = torch.nn.functional.cross_entropy(
            out.reshape(-1, out.shape[-1]), y[idx].repeat(m), reduction="none"
        ).reshape(m, -1).mean(1)
        alive &= torch.isfinite(loss.detach())
        losses[:, t] = torch.where(alive, loss.detach().double(), math.nan)
        grads = torch.autograd.grad(torch.where(alive, loss, 0.0).sum(), params)
        with torch.no_grad():
            for k, (p, g) in enumerate(zip(params, grads)):
                g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
                step = lrs.to(p.dtype).view(-1, *[1] * (p.dim() - 1)) * g
                if ups is not None and k < len(net.weights):
                    ups[:, t, k] = (step.flatten(1).norm(dim=1)
                                    / p.flatten(1).norm(dim=1).clamp_min(1e-30)).double()
                p -= step
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        accs = [(net(xx).argmax(-1) == yy).double().mean(1)
                for xx, yy in ((x, y), (data.x_test, data.y_test))]
    chance = 1.0 / net.weights[-1].shape[1]
    train_acc, test_acc = (torch.where(alive, a, chance).numpy() for a in accs)
    return StackedRun(losses.numpy(), train_acc, test_acc,
                      None if ups is None else ups.numpy())


def correlation(a: Tensor, b: Tensor) -> float:
    """:math:`\\mathbb E[a \\cdot b] / \\sqrt{\\mathbb E\\|a\\|^2\\,\\mathbb E\\|b\\|^2}`
    over the first dimension (members or pairs): the correlation the mean-field
    maps describe, averaged over random networks."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape:
        raise ValueError("a and b must be tensors of the same shape")
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    den = ((a * a).sum(1).mean() * (b * b).sum(1).mean()).sqrt()
    if den == 0:
        raise ValueError("correlation of all-zero vectors is undefined")
    return float((a * b).sum(1).mean() / den)
