"""The architectures people train today, small enough for a CPU, many seeds at once.

* :class:`ResNet1d` - a 1-D residual CNN (for MNIST-1D) in the orderings the
  literature compares: post-activation BatchNorm (He et al. 2016a),
  pre-activation BatchNorm (He et al. 2016b, "identity mappings"), no
  normalisation with He init, Fixup (Zhang, Dauphin & Ma 2019) and SkipInit
  (De & Smith 2020). One instance holds a whole *population* of ``members``
  independent networks.
* :func:`transformer` - a token model around PyTorch's own
  ``nn.TransformerEncoderLayer`` (``norm_first=False``: post-LN,
  ``norm_first=True``: pre-LN), and :class:`TransformerPopulation`, which runs
  several seeds of it as one vmapped computation.
* :func:`sequence_task` - small offline token tasks (sort, copy, reverse,
  modular addition) for the transformers.

Why the population is written here and not with ``torch.func.vmap``: a vmapped
BatchNorm needs its running statistics batched by hand, and a vmapped grouped
problem is slower than one grouped convolution. :class:`ResNet1d` stacks the
members along the channel axis and uses convolutions with ``groups=members``:
member ``m`` owns channels ``m*width .. (m+1)*width - 1`` of every layer, the
grouped convolution never mixes groups and BatchNorm's statistics are per
channel, so each member computes exactly what a separate network would, in
one kernel per layer. Training each member at its own SGD learning rate is
exact too: the gradient of ``sum_m lr_m * loss_m`` with respect to member
``m``'s weights is ``lr_m`` times its own gradient, and SGD with momentum is
linear in the gradient (see :func:`population_loss`). Transformers have no
BatchNorm, so :class:`TransformerPopulation` uses ``vmap`` over
``functional_call`` instead, with PyTorch's math attention kernel (the fused
CPU kernel has no batching rule and would loop over the members).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib import seeds as _seeds

__all__ = ["ORDERINGS", "ResNet1d", "population_loss", "transformer",
           "TokenTransformer", "TransformerPopulation", "MLPPopulation",
           "TASKS", "sequence_task"]

#: ``(norm, init)`` pairs :class:`ResNet1d` accepts, by name.
ORDERINGS = {
    "post-BN": ("post", "he"),
    "pre-BN": ("pre", "he"),
    "no norm": ("none", "he"),
    "Fixup": ("none", "fixup"),
    "SkipInit": ("none", "skipinit"),
}


def _int(name: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return v


def _seed_list(seeds: Any, members: int) -> list[int]:
    if not isinstance(seeds, (list, tuple)) or len(seeds) != members:
        raise ValueError(f"seeds must be a list of {members} ints (one per "
                         f"member), got {seeds!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seeds must hold ints >= 0, got {s!r}")
    return list(seeds)


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


class TokenTransformer(nn.Module):
    """Token embedding + learned positions, ``nn.TransformerEncoder`` of
    PyTorch's ``nn.TransformerEncoderLayer``, a linear read-out per position.

    ``norm_first=False`` is the original post-LN transformer
    (:math:`x \\leftarrow \\mathrm{LN}(x + F(x))`), ``True`` pre-LN
    (:math:`x \\leftarrow x + F(\\mathrm{LN}(x))`, plus a final LayerNorm).
    Dropout is 0, so training mode is deterministic.

    Shape: input ``(B, S)`` int64 tokens; output ``(B, S, vocab)``.
    """

    def __init__(self, vocab: int, length: int, d_model: int, nhead: int,
                 layers: int, norm_first: bool, dim_feedforward: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(length, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True,
            norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(d_model) if norm_first else None,
            enable_nested_tensor=False)
        self.readout = nn.Linear(d_model, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.readout(self.encoder(self.embed(tokens) + self.pos))

    def layer_grad_norms(self) -> Tensor:
        """Gradient norm of each encoder layer's parameters, input to output."""
        out = []
        for layer in self.encoder.layers:
            sq = sum(float(p.grad.pow(2).sum()) for p in layer.parameters()
                     if p.grad is not None)
            out.append(math.sqrt(sq))
        return torch.tensor(out)


def transformer(*, vocab: int = 10, length: int = 8, d_model: int = 16,
                nhead: int = 2, layers: int = 4, norm_first: bool = False,
                dim_feedforward: int | None = None, seed: int = 0
                ) -> TokenTransformer:
    """A seeded :class:`TokenTransformer` (PyTorch's default initialisation,
    drawn from ``seed``'s own stream).

    Examples:
        >>> net = transformer(layers=2, norm_first=True, seed=0)
        >>> net(torch.zeros(3, 8, dtype=torch.long)).shape
        torch.Size([3, 8, 10])
    """
    for name, v, lo in (("vocab", vocab, 2), ("length", length, 1),
                        ("d_model", d_model, 1), ("nhead", nhead, 1),
                        ("layers", layers, 1)):
        _int(name, v, lo)
    if d_model % nhead:
        raise ValueError(f"d_model ({d_model}) must be divisible by nhead "
                         f"({nhead})")
    if not isinstance(norm_first, bool):
        raise TypeError(f"norm_first must be a bool, got "
                        f"{type(norm_first).__name__}")
    ff = 2 * d_model if dim_feedforward is None else \
        _int("dim_feedforward", dim_feedforward, 1)
    _seed_list([seed], 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seeds.stream(seed, "transformer"))
        net = TokenTransformer(vocab, length, d_model, nhead, layers,
                               norm_first, ff)
        nn.init.normal_(net.pos, std=0.02)
    return net


class TransformerPopulation:
    """Several :class:`TokenTransformer` s of one shape as one vmapped model.

    ``params`` holds every parameter stacked along a new first axis (one entry
    per member, leaf tensors ready for ``torch.optim``); :meth:`__call__` runs
    all members on the same batch. Adam is elementwise, so one
    ``torch.optim.Adam`` over the stacked tensors trains each member exactly as
    its own optimiser would.

    Shape: input ``(B, S)``; output ``(members, B, S, vocab)``.
    """

    def __init__(self, models: list[TokenTransformer]) -> None:
        if not models or not all(isinstance(m, TokenTransformer)
                                 for m in models):
            raise TypeError("models must be a non-empty list of "
                            "TokenTransformer")
        from torch.func import stack_module_state

        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().clone().requires_grad_()
                       for k, v in params.items()}
        self.buffers = buffers
        self.members = len(models)
        self._base = copy.deepcopy(models[0]).to("meta")
        self.layers = len(models[0].encoder.layers)

    def __call__(self, tokens: Tensor) -> Tensor:
        from torch.func import functional_call, vmap
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def one(p: dict, b: dict, x: Tensor) -> Tensor:
            return functional_call(self._base, (p, b), (x,))

        with sdpa_kernel(SDPBackend.MATH):
            return vmap(one, in_dims=(0, 0, None))(self.params, self.buffers,
                                                   tokens)

    def layer_grad_norms(self) -> Tensor:
        """Per-member gradient norm of each encoder layer, ``(members, L)``."""
        out = torch.zeros(self.members, self.layers)
        for k, p in self.params.items():
            if k.startswith("encoder.layers.") and p.grad is not None:
                l = int(k.split(".")[2])
                out[:, l] += p.grad.view(self.members, -1).pow(2).sum(1)
        return out.sqrt()


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
