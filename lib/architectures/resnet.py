"""Residual 1-D CNNs (post-BN, pre-BN, no norm, Fixup, SkipInit), many seeds at once."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib import seeds as _seeds
from lib.architectures._common import _int, _seed_list

__all__ = ["ORDERINGS", "ResNet1d", "population_loss"]

#: ``(norm, init)`` pairs :class:`ResNet1d` accepts, by name.
ORDERINGS = {
    "post-BN": ("post", "he"),
    "pre-BN": ("pre", "he"),
    "no norm": ("none", "he"),
    "Fixup": ("none", "fixup"),
    "SkipInit": ("none", "skipinit"),
}


class ResNet1d(nn.Module):
    r"""A population of 1-D residual CNNs, one per member, as one module.

    With residual stream :math:`x_l` (``width`` channels) and ``depth`` blocks:

    * ``norm="post"``: :math:`x_{l+1} = \mathrm{relu}(x_l + \mathrm{BN}(W_2
      \mathrm{relu}(\mathrm{BN}(W_1 x_l))))` (the original ResNet);
    * ``norm="pre"``: :math:`x_{l+1} = x_l + W_2\,\mathrm{relu}(\mathrm{BN}(
      W_1\,\mathrm{relu}(\mathrm{BN}(x_l))))` (identity mappings);
    * ``norm="none"``: :math:`x_{l+1} = x_l + \alpha_l\,(W_2\,\mathrm{relu}(
      W_1 (\mathrm{relu}(x_l) + a_l) + b_l) + c_l) + d_l`, where ``init``
      decides the scalars: ``"he"``: :math:`\alpha=1`, no biases (fixed);
      ``"fixup"``: :math:`W_2 = 0`, :math:`W_1` He-initialised and scaled by
      :math:`L^{-1/(2m-2)} = L^{-1/2}` (:math:`m = 2` layers per branch),
      learnable scalar biases :math:`a, b, c, d = 0` and multiplier
      :math:`\alpha = 1`, zero classifier; ``"skipinit"``: learnable
      :math:`\alpha = 0`, no biases.

    Each :math:`W` is a width-3 convolution, He-initialised (fan-in
    :math:`3\cdot\mathrm{width}`). A stem convolution of stride 2 maps the
    1-channel input to ``width`` channels at half the length (half the cost
    of every block); the head averages over positions and applies a linear
    classifier.

    Args:
        depth: residual blocks :math:`L`.
        width: channels of each member.
        members: independent networks (e.g. seeds) held side by side.
        norm: ``"post"``, ``"pre"`` or ``"none"``.
        init: ``"he"``, ``"fixup"`` or ``"skipinit"`` (the last two need
            ``norm="none"``).
        seeds: one seed per member (member ``m``'s weights depend only on
            ``seeds[m]``).
        classes: outputs per member.

    Shape:
        input ``(B, length)`` or ``(B, 1, length)``; output
        ``(members, B, classes)``.

    Examples:
        >>> net = ResNet1d(4, 8, members=2, norm="pre", seeds=[0, 1])
        >>> net(torch.randn(5, 40)).shape
        torch.Size([2, 5, 10])
    """

    def __init__(self, depth: int, width: int, *, members: int = 1,
                 norm: str = "pre", init: str = "he",
                 seeds: list[int] | None = None, classes: int = 10) -> None:
        super().__init__()
        self.depth = _int("depth", depth, 1)
        self.width = _int("width", width, 1)
        self.members = _int("members", members, 1)
        self.classes = _int("classes", classes, 1)
        if norm not in ("post", "pre", "none"):
            raise ValueError(
                f"norm must be 'post', 'pre' or 'none', got {norm!r}")
        if init not in ("he", "fixup", "skipinit"):
            raise ValueError(
                f"init must be 'he', 'fixup' or 'skipinit', got {init!r}")
        if init != "he" and norm != "none":
            raise ValueError(f"init={init!r} is for networks without "
                             f"normalisation: use norm='none', not {norm!r}")
        self.norm, self.init = norm, init
        seeds = _seed_list(list(range(members)) if seeds is None else seeds,
                           members)
        M, C = members, width
        self.stem = nn.Conv1d(M, M * C, 3, stride=2, padding=1, groups=M)
        self.conv1 = nn.ModuleList(
            nn.Conv1d(M * C, M * C, 3, padding=1, groups=M, bias=False)
            for _ in range(depth))
        self.conv2 = nn.ModuleList(
            nn.Conv1d(M * C, M * C, 3, padding=1, groups=M, bias=False)
            for _ in range(depth))
        if norm != "none":
            self.bn1 = nn.ModuleList(nn.BatchNorm1d(M * C) for _ in range(depth))
            self.bn2 = nn.ModuleList(nn.BatchNorm1d(M * C) for _ in range(depth))
        if norm == "pre":
            self.bn_out = nn.BatchNorm1d(M * C)
        self.head = nn.Conv1d(M * C, M * classes, 1, groups=M)
        learn = init != "he"
        scalars = {"alpha": 0.0 if init == "skipinit" else 1.0}
        if init == "fixup":
            scalars.update(a=0.0, b=0.0, c=0.0, d=0.0)
        for name, value in scalars.items():
            t = torch.full((depth, M), value)
            if learn:
                self.register_parameter(name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        self._init(seeds)

    @torch.no_grad()
    def _init(self, seeds: list[int]) -> None:
        C = self.width
        he = math.sqrt(2.0 / (3 * C))
        fixup_scale = self.depth ** -0.5 if self.init == "fixup" else 1.0
        for m, s in enumerate(seeds):
            g = torch.Generator().manual_seed(_seeds.stream(s, "resnet1d"))
            rows = slice(m * C, (m + 1) * C)
            self.stem.weight[rows] = torch.randn(C, 1, 3, generator=g) \
                * math.sqrt(2.0 / 3)
            self.stem.bias[rows] = 0.0
            for c1, c2 in zip(self.conv1, self.conv2):
                c1.weight[rows] = torch.randn(C, C, 3, generator=g) * he \
                    * fixup_scale
                w2 = torch.randn(C, C, 3, generator=g) * he
                c2.weight[rows] = 0.0 if self.init == "fixup" else w2
            k = self.classes
            w = torch.randn(k, C, 1, generator=g) / math.sqrt(C)
            self.head.weight[m * k:(m + 1) * k] = \
                0.0 if self.init == "fixup" else w
            self.head.bias[m * k:(m + 1) * k] = 0.0

    def _scale(self, h: Tensor, s: Tensor, add: bool = False) -> Tensor:
        """``h`` (B, M*width, L) times (or plus) a per-member scalar ``s`` (M,)."""
        B, _, L = h.shape
        s = s.view(1, self.members, 1, 1)
        hm = h.view(B, self.members, self.width, L)
        return (hm + s if add else hm * s).view(B, -1, L)

    def _block(self, l: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Block ``l``'s output and its branch (what is added to the skip)."""
        c1, c2 = self.conv1[l], self.conv2[l]
        if self.norm == "post":
            h = self.bn2[l](c2(F.relu(self.bn1[l](c1(x)))))
            return F.relu(x + h), h
        if self.norm == "pre":
            h = c2(F.relu(self.bn2[l](c1(F.relu(self.bn1[l](x))))))
            return x + h, h
        sc = self._scale
        if self.init == "fixup":
            h = sc(c1(sc(F.relu(x), self.a[l], True)), self.b[l], True)
            h = sc(c2(F.relu(h)), self.c[l], True)
            h = sc(sc(h, self.alpha[l]), self.d[l], True)
        elif self.init == "skipinit":
            h = sc(c2(F.relu(c1(F.relu(x)))), self.alpha[l])
        else:
            h = c2(F.relu(c1(F.relu(x))))
        return x + h, h

    def _stem(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError("input must be a floating-point tensor")
        if x.dim() == 3 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 2 or x.shape[1] < 1:
            raise ValueError("input must have shape (B, length) or "
                             f"(B, 1, length), got {tuple(x.shape)}")
        return self.stem(x.unsqueeze(1).expand(-1, self.members, -1))

    def _head(self, x: Tensor) -> Tensor:
        if self.norm == "pre":
            x = F.relu(self.bn_out(x))
        elif self.norm == "none":
            x = F.relu(x)
        out = self.head(x.mean(2, keepdim=True))[:, :, 0]  # (B, M*classes)
        return out.view(-1, self.members, self.classes).transpose(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self._stem(x)
        for l in range(self.depth):
            h, _ = self._block(l, h)
        return self._head(h)

    def stream(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The forward pass, recording the variance of the stream and branches.

        Returns ``(stream, branch, logits)``: ``stream`` ``(members,
        depth + 1)``, where ``stream[:, l]`` is the variance of :math:`x_l`
        (``l = 0``: the stem's output); ``branch`` ``(members, depth)``, the
        variance of block ``l+1``'s branch, both over batch, channels and
        positions and detached; ``logits`` as :meth:`forward` returns them
        (still in the graph, so one pass serves a backward too).
        """
        def var(t: Tensor) -> Tensor:
            t = t.detach().view(t.shape[0], self.members, -1, t.shape[-1])
            return t.transpose(0, 1).reshape(self.members, -1).var(1)

        h = self._stem(x)
        streams, branches = [var(h)], []
        for l in range(self.depth):
            h, b = self._block(l, h)
            streams.append(var(h))
            branches.append(var(b))
        return torch.stack(streams, 1), torch.stack(branches, 1), self._head(h)

    def block_grad_norms(self) -> Tensor:
        r"""Per-member gradient norm of each block's convolution weights.

        :math:`\lVert(\partial L/\partial W_1, \partial L/\partial W_2)\rVert`
        for every block, after a backward pass; shape ``(members, depth)``.
        Zero where no gradient has been computed.
        """
        out = torch.zeros(self.members, self.depth)
        for l, (c1, c2) in enumerate(zip(self.conv1, self.conv2)):
            for w in (c1.weight, c2.weight):
                if w.grad is not None:
                    out[:, l] += w.grad.view(self.members, -1).pow(2).sum(1)
        return out.sqrt()


def population_loss(logits: Tensor, y: Tensor, lrs: Tensor | None = None
                    ) -> tuple[Tensor, Tensor]:
    r"""Sum of the members' cross-entropies, each weighted by its learning rate.

    :math:`\sum_m \eta_m L_m` over the members whose loss is finite, so that
    ``torch.optim.SGD(lr=1)`` steps member ``m`` by :math:`-\eta_m \nabla L_m`
    (exact, also with momentum); a diverged member drops out of the sum and
    cannot contaminate the others.

    Args:
        logits: ``(members, B, classes)``.
        y: ``(B,)`` class indices.
        lrs: ``(members,)`` learning rates (default: all 1).

    Returns:
        ``(total, per_member)``: the scalar to call ``backward`` on and the
        members' losses ``(members,)`` (detached; ``inf`` where not finite).
    """
    if logits.dim() != 3 or y.dim() != 1 or logits.shape[1] != y.shape[0]:
        raise ValueError("logits must be (members, B, classes) and y (B,), "
                         f"got {tuple(logits.shape)} and {tuple(y.shape)}")
    M = logits.shape[0]
    per = F.cross_entropy(logits.reshape(-1, logits.shape[2]), y.repeat(M),
                          reduction="none").view(M, -1).mean(1)
    lrs = torch.ones(M) if lrs is None else lrs
    if lrs.shape != (M,):
        raise ValueError(f"lrs must have shape ({M},), got {tuple(lrs.shape)}")
    ok = torch.isfinite(per)
    total = torch.where(ok, per * lrs, torch.zeros_like(per)).sum()
    shown = torch.where(ok, per.detach(), torch.full_like(per, math.inf))
    return total, shown

