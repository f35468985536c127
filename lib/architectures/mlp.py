"""Stacked MLPs (for autocast runs of many seeds) and offline token tasks."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lib import seeds as _seeds
from lib.architectures._common import _int, _seed_list

__all__ = ["MLPPopulation", "TASKS", "sequence_task"]


class MLPPopulation(nn.Module):
    r"""``members`` plain MLPs of one shape as stacked weights, one matmul a layer.

    Layer :math:`k` computes :math:`h \leftarrow \phi(h W_k + b_k)` for every
    member at once with ``torch.baddbmm`` (the last layer without
    :math:`\phi`); :math:`W_k` is Xavier-normal,
    :math:`\mathcal N(0, 2/(n_\text{in} + n_\text{out}))`, biases 0. It
    exists for experiments that :mod:`lib.population` does not run, such as
    training under ``torch.autocast`` with a ``GradScaler``: autocast turns
    each ``baddbmm`` into one reduced-precision kernel for all members.

    Args:
        depth: hidden layers.
        width: units per hidden layer.
        in_features, out_features: input and output sizes.
        activation: ``"sigmoid"``, ``"tanh"`` or ``"relu"``.
        seeds: one seed per member.

    Shape:
        input ``(B, in_features)``; output ``(members, B, out_features)``.
    """

    _ACTS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}

    def __init__(self, depth: int, width: int, *, in_features: int,
                 out_features: int, activation: str = "sigmoid",
                 seeds: list[int]) -> None:
        super().__init__()
        _int("depth", depth, 1)
        _int("width", width, 1)
        _int("in_features", in_features, 1)
        _int("out_features", out_features, 1)
        if activation not in self._ACTS:
            raise ValueError(f"activation must be one of {sorted(self._ACTS)}"
                             f", got {activation!r}")
        if not isinstance(seeds, (list, tuple)) or not seeds:
            raise ValueError("seeds must be a non-empty list of ints")
        seeds = _seed_list(list(seeds), len(seeds))
        self.members, self.act = len(seeds), self._ACTS[activation]
        sizes = [in_features] + [width] * depth + [out_features]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        gens = [torch.Generator().manual_seed(_seeds.stream(s, "mlp-pop"))
                for s in seeds]
        for a, b in zip(sizes[:-1], sizes[1:]):
            std = math.sqrt(2.0 / (a + b))
            w = torch.stack([torch.randn(a, b, generator=g) * std
                             for g in gens])
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(self.members, 1, b)))

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 \
                or x.shape[1] != self.weights[0].shape[1]:
            raise ValueError(f"input must have shape (B, "
                             f"{self.weights[0].shape[1]})")
        h = x.unsqueeze(0).expand(self.members, -1, -1)
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if k < last:
                h = self.act(h)
        return h


#: The token tasks :func:`sequence_task` generates.
TASKS = ("sort", "copy", "reverse", "modadd")


def sequence_task(kind: str, n: int, *, length: int = 8, vocab: int = 10,
                  seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` random token sequences and their targets, position by position.

    * ``"sort"``: the tokens in increasing order;
    * ``"copy"``: the tokens themselves;
    * ``"reverse"``: the tokens back to front;
    * ``"modadd"``: the running sum modulo ``vocab`` (position ``i`` holds
      :math:`\\sum_{j\\le i} x_j \\bmod V`).

    Returns:
        ``(tokens, targets)``, both int64 of shape ``(n, length)``.
    """
    if kind not in TASKS:
        raise ValueError(f"kind must be one of {TASKS}, got {kind!r}")
    _int("n", n, 1)
    _int("length", length, 1)
    _int("vocab", vocab, 2)
    _seed_list([seed], 1)
    g = torch.Generator().manual_seed(_seeds.stream(seed, f"task-{kind}"))
    x = torch.randint(0, vocab, (n, length), generator=g)
    if kind == "sort":
        y = torch.sort(x, 1).values
    elif kind == "copy":
        y = x.clone()
    elif kind == "reverse":
        y = torch.flip(x, [1])
    else:
        y = torch.cumsum(x, 1) % vocab
    return x, y

