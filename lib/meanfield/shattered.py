"""Shattered gradients and width-against-depth spread: two finite-network effects.

:func:`input_gradients` reproduces the set-up of Balduzzi et al. (2017): ReLU
networks with one input :math:`x` on a grid, He initialisation, optionally
batch normalisation over the grid, plain or residual, and the derivative
:math:`dy_L/dx` of a scalar read-out after every layer :math:`L` at every grid
point. The input is one number, so the derivative is carried forward next to
the activations (forward mode: ``t = dh/dx``), which gives all depths in one
pass. :func:`autocorrelation` is their measure of whiteness: the correlation
of the gradient sequence with itself shifted by ``lag`` grid points.

:func:`log_norms` measures what Hanin & Rolnick (2018) and Hanin (2018) study:
the squared length of the last activation and of the derivative along one
input coordinate, ReLU + He, zero biases, for several widths and depths at
once (their log varies across networks by about :math:`5\\sum_l 1/n_l`).

Examples:
    >>> f = input_gradients(8, 32, [1, 2], batchnorm=True)
    >>> f.grads.shape            # members, depths, grid points
    torch.Size([2, 8, 256])
    >>> autocorrelation(f.grads, 1).shape
    torch.Size([2, 8])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from lib import seeds as _seeds
from lib._checks import check_int, check_number

__all__ = ["GradientField", "input_gradients", "autocorrelation", "log_norms",
           "relu_log_norm_variance", "variance_and_error"]


@dataclass(frozen=True)
class GradientField:
    """What :func:`input_gradients` measured.

    ``x`` (N,) the grid; ``outputs`` (M, depth, N): the read-out :math:`y_L`
    after layer (or block) ``L = 1..depth`` at every grid point; ``grads``
    (same shape): its derivative :math:`dy_L/dx`;
    ``coactive`` (M, depth): the neighbour co-activation factor of each layer,
    :math:`\\sum_k a_k(x_i) a_k(x_{i+1}) / \\sqrt{\\sum_k a_k(x_i)
    \\sum_k a_k(x_{i+1})}` averaged over neighbours (1 when neighbours switch
    the same units on, 1/2 when each unit is on for half the inputs
    independently: the factor per layer in Balduzzi et al.'s Theorem 1).
    """

    x: Tensor
    outputs: Tensor
    grads: Tensor
    coactive: Tensor


def _normalise(z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    # batch normalisation over the grid (dim 1); its statistics are held fixed
    # when differentiating, as in evaluation mode (detached, also for autograd)
    zd = z.detach()
    mu, sd = zd.mean(1, keepdim=True), zd.std(1, keepdim=True).clamp_min(1e-30)
    return (z - mu) / sd, t / sd


def _coactive(a: Tensor) -> Tensor:
    both = (a[:, 1:] * a[:, :-1]).sum(2)
    den = (a[:, 1:].sum(2) * a[:, :-1].sum(2)).sqrt()
    return torch.where(den > 0, both / den.clamp_min(1e-30), 0.0).mean(1)


def input_gradients(depth: int, width: int, seeds: Sequence[int], *, residual: bool = False,
                    batchnorm: bool = True, points: int = 256,
                    span: tuple[float, float] = (-2.0, 2.0), sigma_b2: float = 0.0,
                    branch_scale: float = 1.0,
                    dtype: torch.dtype = torch.float64) -> GradientField:
    """Gradients :math:`dy_L/dx` of ReLU networks with one input, at every depth.

    Each member (one per seed) is: a first layer :math:`z_1 = w x + b`
    (:math:`w \\sim \\mathcal N(0, 2)`, He for fan-in 1), then ``depth``
    layers. Plain: :math:`h_l = \\mathrm{relu}(\\mathrm{BN}(W_l h_{l-1} + b_l))`.
    Residual (pre-activation blocks, as Balduzzi et al.):
    :math:`h_l = h_{l-1} + \\beta\\,(W_l\\,\\mathrm{relu}(\\mathrm{BN}(h_{l-1})) + b_l)`
    with :math:`\\beta` = ``branch_scale``, and :math:`h_0 = \\mathrm{BN}(z_1)`.
    ``batchnorm=False`` drops BN. Weights :math:`\\mathcal N(0, 2/n)`, biases
    :math:`\\mathcal N(0, \\sigma_b^2)`; BN uses the grid's statistics, held
    fixed when differentiating. The read-out after layer ``L`` is
    :math:`y_L = v \\cdot h_L` with one :math:`v \\sim \\mathcal N(0, 1/n)` per
    member. ``points`` grid points evenly spaced over ``span``.
    """
    depth = check_int(depth, "depth", ge=1)
    width = check_int(width, "width", ge=1)
    points = check_int(points, "points", ge=3)
    sb = math.sqrt(check_number(sigma_b2, "sigma_b2", ge=0))
    beta = check_number(branch_scale, "branch_scale", gt=0)
    if not isinstance(residual, bool) or not isinstance(batchnorm, bool):
        raise TypeError("residual and batchnorm must be True or False")
    if (not isinstance(span, (tuple, list)) or len(span) != 2
            or not float(span[0]) < float(span[1])):
        raise ValueError(f"span must be (lo, hi) with lo < hi, got {span!r}")
    seeds = [_seeds._check_seed(s, "seeds") for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    gens = [torch.Generator().manual_seed(_seeds.stream(s, "shattered")) for s in seeds]

    def draw(*shape: int, var: float) -> Tensor:
        return torch.stack([torch.randn(shape, generator=g, dtype=torch.float64)
                            for g in gens]).mul_(math.sqrt(var)).to(dtype)

    x = torch.linspace(float(span[0]), float(span[1]), points, dtype=dtype)
    return _field(x, draw, depth, width, sb, beta, residual, batchnorm, dtype)


def _field(x: Tensor, draw: Callable[..., Tensor], depth: int, width: int, sb: float, beta: float,
           residual: bool, batchnorm: bool, dtype: torch.dtype) -> GradientField:
    w1, b1 = draw(width, var=2.0), draw(width, var=1.0) * sb
    v = draw(width, 1, var=1.0 / width)
    z = x[None, :, None] * w1[:, None, :] + b1[:, None, :]
    t = w1[:, None, :].expand_as(z)
    if batchnorm:
        z, t = _normalise(z, t)
    if residual:
        h, tan = z, t
    else:
        act = (z > 0).to(dtype)
        h, tan = z * act, t * act
    outs, grads, coact = [], [], []
    for _ in range(depth):
        w, b = draw(width, width, var=2.0 / width), draw(1, width, var=1.0) * sb
        if residual:
            u, tu = _normalise(h, tan) if batchnorm else (h, tan)
            act = (u > 0).to(dtype)
            h = h + beta * (torch.bmm(u * act, w) + b)
            tan = tan + beta * torch.bmm(tu * act, w)
        else:
            z, t = torch.bmm(h, w) + b, torch.bmm(tan, w)
            if batchnorm:
                z, t = _normalise(z, t)
            act = (z > 0).to(dtype)
            h, tan = z * act, t * act
        coact.append(_coactive(act))
        outs.append(torch.bmm(h, v)[..., 0])
        grads.append(torch.bmm(tan, v)[..., 0])
    return GradientField(x, torch.stack(outs, 1), torch.stack(grads, 1),
                         torch.stack(coact, 1))


def autocorrelation(g: Tensor, lag: int) -> Tensor:
    """Correlation of each sequence ``g[..., :]`` with itself ``lag`` steps on.

    :math:`\\sum_i (g_i - \\bar g)(g_{i+k} - \\bar g) / \\sum_i (g_i - \\bar g)^2`
    (the autocorrelation function of Balduzzi et al., normalised to 1 at lag
    0), over the last dimension; one number per leading index.
    """
    if not isinstance(g, Tensor) or not g.is_floating_point() or g.dim() < 1:
        raise TypeError("g must be a floating-point torch.Tensor")
    lag = check_int(lag, "lag", ge=0, le=g.shape[-1] - 1)
    c = g - g.mean(-1, keepdim=True)
    den = (c * c).sum(-1)
    if (den == 0).any():
        raise ValueError("g holds a constant sequence: its autocorrelation is undefined")
    return (c[..., lag:] * c[..., :c.shape[-1] - lag]).sum(-1) / den


def log_norms(widths: Sequence[int], depths: Sequence[int], seeds: Sequence[int], *,
              in_features: int = 16) -> dict[tuple[int, int], tuple[Tensor, Tensor]]:
    """:math:`\\log(\\lVert a_L\\rVert^2 / \\lVert x\\rVert^2 \\cdot n_0/n)` and
    :math:`\\log(\\lVert \\partial a_L/\\partial x_1\\rVert^2 \\cdot n_0 / n)`
    over random ReLU + He networks (zero biases, weights
    :math:`\\mathcal N(0, 2/n_{in})`), at one fixed input.

    One network per seed and width, deep as ``max(depths)``; the value at depth
    ``L`` is read after its ``L``-th hidden layer. The factor :math:`n_0/n`
    makes both 1 on average. Returns ``{(width, depth): (log_act, log_grad)}``,
    each a tensor with one entry per seed (:math:`-\\infty` where every unit
    of some layer was off, probability :math:`2^{-n}` per layer).
    """
    widths = [check_int(n, f"widths[{i}]", ge=1) for i, n in enumerate(widths)]
    depths = [check_int(d, f"depths[{i}]", ge=1) for i, d in enumerate(depths)]
    n0 = check_int(in_features, "in_features", ge=1)
    seeds = [_seeds._check_seed(s, "seeds") for s in seeds]
    if not widths or not depths or not seeds:
        raise ValueError("widths, depths and seeds must each hold at least one entry")
    x = torch.ones(n0, dtype=torch.float64)
    out: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
    deepest = max(depths)
    for n in widths:
        gens = [torch.Generator().manual_seed(_seeds.stream(s, f"log-norms-{n}"))
                for s in seeds]
        # per member: the first layer (n, n0), then every further layer at once
        first = torch.stack([torch.randn(n, n0, generator=g, dtype=torch.float64)
                             for g in gens]) * math.sqrt(2.0 / n0)
        rest = torch.stack([torch.randn(deepest - 1, n, n, generator=g,
                                        dtype=torch.float64) for g in gens]) \
            * math.sqrt(2.0 / n)
        h = x.expand(len(seeds), n0)
        t = torch.zeros(len(seeds), n0, dtype=torch.float64)
        t[:, 0] = 1.0
        for layer in range(1, deepest + 1):
            w = first if layer == 1 else rest[:, layer - 2]
            z = torch.bmm(w, h[:, :, None])[..., 0]
            act = (z > 0).double()
            h, t = z * act, torch.bmm(w, t[:, :, None])[..., 0] * act
            if layer in depths:
                scale = n0 / n
                out[n, layer] = (torch.log((h * h).sum(1) / n0 * scale),
                                 torch.log((t * t).sum(1) * scale))
    return out


def relu_log_norm_variance(widths: Sequence[int]) -> float:
    """Exact :math:`\\operatorname{Var}\\log \\lVert a_L\\rVert^2` of a ReLU + He
    network with zero biases and hidden ``widths`` (Gaussian weights).

    Each layer multiplies the squared length by an independent factor
    :math:`(2/n)\\,\\chi^2_K` with :math:`K \\sim \\mathrm{Binomial}(n, 1/2)`
    active units; given :math:`K` its log has variance :math:`\\psi'(K/2)`
    and mean :math:`\\psi(K/2) + \\log(4/n)`, so the variances add over layers.
    (:math:`K = 0` kills the signal; its probability :math:`2^{-n}` is left
    out.) For large :math:`n` a layer contributes :math:`5/n`.
    """
    total = 0.0
    for i, n in enumerate(widths):
        n = check_int(n, f"widths[{i}]", ge=1)
        k = torch.arange(1, n + 1, dtype=torch.float64)
        logp = (math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1))
        p = torch.exp(logp - logp.max())
        p = p / p.sum()
        mean_k = torch.digamma(k / 2)
        total += float((p * torch.special.polygamma(1, k / 2)).sum()
                       + (p * mean_k ** 2).sum() - (p * mean_k).sum() ** 2)
    return total


def variance_and_error(values: Tensor) -> tuple[float, float]:
    """Sample variance of ``values`` (one per network) and its standard error,
    :math:`\\sqrt{(m_4 - s^4)/M}` from the sample's fourth central moment
    (no normality assumed: log norms are skewed). Values of :math:`-\\infty`
    (networks whose signal died, :math:`\\log 0`) are left out, as
    :func:`relu_log_norm_variance` leaves out :math:`K = 0`."""
    if not isinstance(values, Tensor) or values.dim() != 1:
        raise ValueError("values must be a 1-D tensor")
    if torch.isnan(values).any() or (values == math.inf).any():
        raise ValueError("values must not hold NaN or +inf")
    v = values[torch.isfinite(values)].double()
    if v.numel() < 4:
        raise ValueError("values must hold at least 4 finite numbers")
    c = v - v.mean()
    var = float(c.pow(2).sum() / (v.numel() - 1))
    m4 = float(c.pow(4).mean())
    return var, math.sqrt(max(m4 - var * var, 0.0) / v.numel())
