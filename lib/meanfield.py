"""Mean-field signal propagation: the length and correlation maps, and networks to test them.

A wide random network with weights :math:`W_{ij} \\sim \\mathcal N(0, \\sigma_w^2/n)`
and biases :math:`b_i \\sim \\mathcal N(0, \\sigma_b^2)` transforms the squared
length :math:`q_l` of a pre-activation vector (per unit) and the correlation
:math:`c_l` between the pre-activations of two inputs layer by layer
(Poole et al. 2016; Schoenholz et al. 2017):

.. math::

    q_{l+1} = \\sigma_w^2 \\,\\mathbb E_z\\big[\\phi(\\sqrt{q_l} z)^2\\big] + \\sigma_b^2,
    \\qquad
    c_{l+1} = \\frac{\\sigma_w^2\\,\\mathbb E\\big[\\phi(u_1)\\phi(u_2)\\big]
    + \\sigma_b^2}{q^*},

with :math:`u_1 = \\sqrt{q^*} z_1`, :math:`u_2 = \\sqrt{q^*}(c_l z_1 +
\\sqrt{1-c_l^2}\\, z_2)` and :math:`z, z_1, z_2` independent standard normals.
Near the fixed points :math:`q^*, c^*` the deviations decay as
:math:`e^{-l/\\xi}` with the depth scales

.. math::

    \\chi_1 = \\sigma_w^2\\,\\mathbb E[\\phi'(\\sqrt{q^*} z)^2], \\quad
    \\xi_c = -1/\\ln\\big(\\sigma_w^2\\,\\mathbb E[\\phi'(u_1)\\phi'(u_2)]_{c^*}\\big),
    \\quad
    \\xi_q = -1/\\ln\\big(\\sigma_w^2\\,\\mathbb E[\\phi'(u)^2 + \\phi(u)\\phi''(u)]\\big).

:math:`\\chi_1 < 1` is the ordered phase (:math:`c^* = 1`, every input
looks alike deep down, gradients vanish), :math:`\\chi_1 > 1` the chaotic
phase (:math:`c^* < 1`, nearby inputs decorrelate, gradients explode);
:math:`\\xi_c` diverges on the line :math:`\\chi_1 = 1`. The expectations are
Gauss-Hermite quadrature (``nodes`` points per dimension, exact for
polynomials up to degree ``2 nodes - 1``). It suits moderate variances: for
tanh at the default 64 nodes the relative error of
:math:`\\mathbb E[\\phi'^2]` is about 1e-7 at :math:`q = 1`, 1e-4 at
:math:`q = 2` and 4e-3 at :math:`q = 4`, and it grows quickly beyond, where
:math:`\\phi'(\\sqrt q z)` becomes a bump narrower than the nodes' spacing (use
:func:`lib.init.gaussian_moments`, a fine midpoint rule, there). ReLU-like
kinks converge more slowly (about 1e-4 in one dimension, 1e-3 in two). :math:`\\phi\\phi''`
is never needed: Stein's lemma gives
:math:`\\mathbb E[\\phi'^2 + \\phi\\phi''] = \\mathbb E[\\phi\\,\\phi'\\,z]/\\sqrt q`.

The second half builds *stacked* networks: ``M`` independent MLPs in one set
of tensors (weights ``(M, n_out, n_in)``, one :func:`torch.bmm` per layer), so
a whole grid of :math:`(\\sigma_w^2, \\sigma_b^2)` or of seeds is one
computation. It is hand-written rather than :mod:`lib.population` because each
member needs its own weight and bias variance, orthogonal draws, per-layer
widths and the input-output Jacobian, which a population of ``nn.Module``
builders does not expose cheaply.

Examples:
    >>> s = depth_scales("tanh", 1.5, 0.05)
    >>> round(s.chi1, 3), s.xi_c > 1
    >>> net = stacked_mlp([1.5, 2.0], [0.05, 0.05], widths=[32] * 10, seeds=[1, 2])
    >>> net(torch.randn(8, 64)).shape
    torch.Size([2, 8, 10])
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from lib import activations as _acts
from lib import seeds as _seeds
from lib._checks import check_int, check_number

__all__ = ["gauss_expect", "q_map", "c_map", "q_fixed_point", "c_fixed_point", "chi1",
           "DepthScales", "depth_scales", "q_trajectory", "c_trajectory", "StackedMLP",
           "stacked_mlp", "StackedRun", "train_stacked", "correlation"]

_NODES = 64


@functools.lru_cache(maxsize=8)
def _gh_cached(nodes: int) -> tuple[Tensor, Tensor]:
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return torch.from_numpy(x), torch.from_numpy(w / math.sqrt(2 * math.pi))


def _gh(nodes: int) -> tuple[Tensor, Tensor]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to sum to 1."""
    return _gh_cached(check_int(nodes, "nodes", ge=2))


def _act(activation: Any) -> _acts.Activation:
    return activation if isinstance(activation, _acts.Activation) else _acts.get(activation)


def _arr(v: Any, name: str, *, ge: float = 0.0) -> Tensor:
    """A float64 tensor of ``v`` (a number or a sequence), every entry finite and >= ge."""
    if isinstance(v, (str, bytes, bool)) or v is None:
        raise TypeError(f"{name} must be a number or an array of numbers, got {v!r}")
    try:
        t = torch.as_tensor(np.asarray(v, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers") from None
    if not torch.isfinite(t).all() or (t < ge).any():
        raise ValueError(f"{name} must be finite and >= {ge:g}, got {v!r}")
    return t


def gauss_expect(fn: Any, q: Any, *, nodes: int = _NODES) -> np.ndarray:
    """:math:`\\mathbb E[f(\\sqrt q z)]`, :math:`z \\sim \\mathcal N(0,1)`, for each ``q``.

    Args:
        fn: a function of a float64 tensor, or an activation name (its forward).
        q: variance(s), any shape.
    """
    f = _act(fn).forward if isinstance(fn, (str, _acts.Activation)) else fn
    if not callable(f):
        raise TypeError(f"fn must be callable or an activation name, got {type(fn).__name__}")
    x, w = _gh(nodes)
    qt = _arr(q, "q")
    return (f(qt.sqrt()[..., None] * x) @ w).numpy()


def _moments(act: _acts.Activation, q: Tensor, nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """(E[phi^2], E[phi'^2], E[phi phi' z]/sqrt q) at variance q."""
    x, w = _gh(nodes)
    s = q.clamp_min(1e-12).sqrt()[..., None]
    f, d = act.forward(s * x), act.derivative(s * x)
    return f ** 2 @ w, d ** 2 @ w, (f * d * x) @ w / s[..., 0]


def q_map(activation: Any, q: Any, sigma_w2: Any, sigma_b2: Any, *,
          nodes: int = _NODES) -> np.ndarray:
    """One layer of the length map, :math:`\\sigma_w^2 \\mathbb E[\\phi(\\sqrt q z)^2] + \\sigma_b^2`.

    ``q``, ``sigma_w2`` and ``sigma_b2`` broadcast against each other.
    """
    act = _act(activation)
    m2 = _moments(act, _arr(q, "q"), nodes)[0]
    return (_arr(sigma_w2, "sigma_w2") * m2 + _arr(sigma_b2, "sigma_b2")).numpy()


def _c_expect(act: _acts.Activation, c: Tensor, q: Tensor, nodes: int,
              derivative: bool = False) -> Tensor:
    """E[g(u1) g(u2)] for correlation c at equal variance q (g = phi or phi')."""
    x, w = _gh(nodes)
    g = act.derivative if derivative else act.forward
    s = q.sqrt()[..., None, None]
    c_ = c[..., None, None]
    u1 = s * x[:, None]
    u2 = s * (c_ * x[:, None] + (1 - c_ * c_).clamp_min(0).sqrt() * x[None, :])
    return torch.einsum("...ij,i,j->...", g(u1) * g(u2), w, w)


def c_map(activation: Any, c: Any, q: Any, sigma_w2: Any, sigma_b2: Any, *,
          nodes: int = _NODES) -> np.ndarray:
    """One layer of the correlation map for two inputs of equal length ``q``.

    Returns :math:`(\\sigma_w^2 \\mathbb E[\\phi(u_1)\\phi(u_2)] + \\sigma_b^2)/q'`
    with :math:`q'` the length map at ``q`` (at the fixed point, :math:`q' = q = q^*`).
    """
    act = _act(activation)
    ct = _arr(c, "c", ge=-1.0)
    if (ct > 1).any():
        raise ValueError(f"c must lie in [-1, 1], got {c!r}")
    qt, sw, sb = _arr(q, "q"), _arr(sigma_w2, "sigma_w2"), _arr(sigma_b2, "sigma_b2")
    ct, qt, sw, sb = torch.broadcast_tensors(ct, qt, sw, sb)
    num = sw * _c_expect(act, ct, qt, nodes) + sb
    return (num / torch.as_tensor(q_map(act, qt, sw, sb, nodes=nodes))).numpy()


def q_fixed_point(activation: Any, sigma_w2: Any, sigma_b2: Any, *, nodes: int = _NODES,
                  q_max: float = 1e4, iters: int = 60) -> np.ndarray:
    """:math:`q^*` by bisection on :math:`q\\_map(q) - q` over ``[0, q_max]``.

    Assumes the map crosses the diagonal at most once on ``(0, q_max]`` (true
    for the concave maps of bounded activations such as tanh, and for the
    linear map of ReLU). ``inf`` where the length grows past ``q_max`` (no
    fixed point, e.g. ReLU with :math:`\\sigma_w^2 \\ge 2`); 0 where every
    length shrinks to 0 (tanh with :math:`\\sigma_b = 0`, :math:`\\sigma_w^2 \\le 1`).
    """
    act = _act(activation)
    sw, sb = torch.broadcast_tensors(_arr(sigma_w2, "sigma_w2"), _arr(sigma_b2, "sigma_b2"))
    q_max = check_number(q_max, "q_max", gt=0)
    iters = check_int(iters, "iters", ge=1)

    def h(q: Tensor) -> Tensor:
        return sw * _moments(act, q, nodes)[0] + sb - q

    lo, hi = torch.zeros_like(sw), torch.full_like(sw, q_max)
    grows = h(hi) > 0
    for _ in range(iters):
        mid = (lo + hi) / 2
        up = h(mid) > 0
        lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
    out = (lo + hi) / 2
    return torch.where(grows, math.inf, out).numpy()


def chi1(activation: Any, sigma_w2: Any, sigma_b2: Any, *, nodes: int = _NODES) -> np.ndarray:
    """:math:`\\chi_1 = \\sigma_w^2 \\mathbb E[\\phi'(\\sqrt{q^*} z)^2]`: the mean squared
    singular value of one layer's Jacobian at the fixed point (1 is critical)."""
    act = _act(activation)
    q = torch.as_tensor(q_fixed_point(act, sigma_w2, sigma_b2, nodes=nodes))
    sw = torch.broadcast_to(_arr(sigma_w2, "sigma_w2"), q.shape)
    return (sw * _moments(act, q, nodes)[1]).numpy()


def c_fixed_point(activation: Any, sigma_w2: Any, sigma_b2: Any, *, nodes: int = _NODES,
                  iters: int = 30) -> np.ndarray:
    """:math:`c^*`: 1 in the ordered phase (:math:`\\chi_1 \\le 1`), else the stable
    root of :math:`c\\_map(c) = c` below 1, by ``iters`` bisection steps on ``[-1, 1)``
    (computed only where the phase is chaotic)."""
    act = _act(activation)
    sw, sb = torch.broadcast_tensors(_arr(sigma_w2, "sigma_w2"), _arr(sigma_b2, "sigma_b2"))
    q = torch.as_tensor(q_fixed_point(act, sw, sb, nodes=nodes))
    chaotic = (torch.as_tensor(chi1(act, sw, sb, nodes=nodes)) > 1) & torch.isfinite(q)
    out = torch.ones_like(sw)
    if chaotic.any():
        qs, w_, b_ = q[chaotic], sw[chaotic], sb[chaotic]
        lo, hi = torch.full_like(qs, -1.0), torch.full_like(qs, 1 - 1e-9)
        for _ in range(check_int(iters, "iters", ge=1)):
            mid = (lo + hi) / 2
            up = (w_ * _c_expect(act, mid, qs, nodes) + b_) / qs - mid > 0
            lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
        out[chaotic] = (lo + hi) / 2
    return out.numpy()


@dataclass(frozen=True)
class DepthScales:
    """Fixed points, slopes and depth scales at each :math:`(\\sigma_w^2, \\sigma_b^2)`.

    ``chi_c`` is the slope of the correlation map at :math:`c^*` (equal to
    ``chi1`` in the ordered phase), ``chi_q`` that of the length map at
    :math:`q^*`; ``xi_c = -1/ln(chi_c)``, ``xi_q = -1/ln(chi_q)`` (``inf`` at 1).
    """

    q_star: np.ndarray
    c_star: np.ndarray
    chi1: np.ndarray
    chi_c: np.ndarray
    chi_q: np.ndarray
    xi_c: np.ndarray
    xi_q: np.ndarray


def _xi(chi: Tensor) -> Tensor:
    with np.errstate(divide="ignore"):
        return torch.where(chi >= 1, math.inf, -1 / torch.log(chi.clamp_min(1e-300)))


def depth_scales(activation: Any, sigma_w2: Any, sigma_b2: Any, *,
                 nodes: int = _NODES) -> DepthScales:
    """:class:`DepthScales` for every (broadcast) pair ``sigma_w2``, ``sigma_b2``."""
    act = _act(activation)
    sw, sb = torch.broadcast_tensors(_arr(sigma_w2, "sigma_w2"), _arr(sigma_b2, "sigma_b2"))
    q = torch.as_tensor(q_fixed_point(act, sw, sb, nodes=nodes))
    _, d2, stein = _moments(act, torch.where(torch.isfinite(q), q, 1.0), nodes)
    ch1 = sw * d2
    c = torch.as_tensor(c_fixed_point(act, sw, sb, nodes=nodes))
    qs = torch.where(torch.isfinite(q), q, 1.0)
    chi_c = torch.where(c >= 1, ch1, sw * _c_expect(act, c, qs, nodes, derivative=True))
    chi_q = sw * stein
    return DepthScales(q.numpy(), c.numpy(), ch1.numpy(), chi_c.numpy(), chi_q.numpy(),
                       _xi(chi_c).numpy(), _xi(chi_q).numpy())


def q_trajectory(activation: Any, q0: float, sigma_w2: float, sigma_b2: float, depth: int,
                 *, nodes: int = _NODES) -> np.ndarray:
    """:math:`q_1, \\dots, q_{depth}` from :math:`q_0` (the input's length per unit)."""
    q, out = float(check_number(q0, "q0", ge=0)), []
    for _ in range(check_int(depth, "depth", ge=1)):
        q = float(q_map(activation, q, sigma_w2, sigma_b2, nodes=nodes))
        out.append(q)
    return np.array(out)


def c_trajectory(activation: Any, c0: float, sigma_w2: float, sigma_b2: float, depth: int,
                 *, q0: float | None = None, nodes: int = _NODES) -> np.ndarray:
    """:math:`c_1, \\dots, c_{depth}` from :math:`c_0`, for two inputs of equal length.

    With ``q0=None`` the length is held at the fixed point :math:`q^*`; with
    ``q0`` it starts there and follows the length map alongside
    (:math:`c_{l+1}` uses :math:`q_l`), as in a real network whose first
    layers have not yet reached :math:`q^*`.
    """
    if q0 is None:
        q = float(q_fixed_point(activation, sigma_w2, sigma_b2, nodes=nodes))
        if not math.isfinite(q) or q < 1e-12:
            raise ValueError("c_trajectory needs a finite, non-zero fixed length q*; "
                             f"got q* = {q} for sigma_w2={sigma_w2}, sigma_b2={sigma_b2}")
    else:
        q = check_number(q0, "q0", gt=0)
    c, out = check_number(c0, "c0", ge=-1, le=1), []
    for _ in range(check_int(depth, "depth", ge=1)):
        c = float(c_map(activation, c, q, sigma_w2, sigma_b2, nodes=nodes))
        if q0 is not None:
            q = float(q_map(activation, q, sigma_w2, sigma_b2, nodes=nodes))
        out.append(c)
    return np.array(out)


# --- stacked networks: many independent MLPs as one computation ------------------


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
