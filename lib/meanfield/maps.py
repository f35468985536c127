"""The length and correlation maps, their fixed points and depth scales (see :mod:`lib.meanfield`)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lib import activations as _acts
from lib._checks import check_int, check_number

__all__ = ["gauss_expect", "q_map", "c_map", "q_fixed_point", "c_fixed_point", "chi1",
           "DepthScales", "depth_scales", "q_trajectory", "c_trajectory"]


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


