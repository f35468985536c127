"""Per-layer statistics of many same-shaped MLPs at once (the grids' engine).

The interactive figures show, for every point of a grid (activation x init x
depth x ...), what :mod:`lib.probes` would report for one forward/backward
pass. Probing each model with hooks costs a Python callback per layer per
model; here the ``K`` models that share a shape (say the same net under three
init schemes and two seeds) are stacked: each Linear weight becomes one
``(K, out, in)`` tensor and each layer one batched matrix product

.. math::  u^{(k)} = h^{(k)} W^{(k)\\top} + b^{(k)},\\qquad k = 1..K,

and one backward pass of :math:`\\sum_k L_k` gives every model the gradient
of its own loss. ``tests/test_interactive.py`` checks the result against
:mod:`lib.probes` on the same models. Training grids use
:func:`lib.population.train` instead; this engine only measures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lib import activations as _acts
from lib import init as _init
from lib import networks as _networks
from lib import probes as _probes

_ELEMENTWISE = tuple(c for c in _acts.ACTIVATION_MODULES if c not in (nn.PReLU, nn.RReLU))


@dataclass
class Stats:
    """What one stacked pass measured; arrays have the model dimension first.

    ``names``/``grad``/``delta``: every weight layer of :func:`lib.probes.layer_modules`
    in forward order, its weight-gradient norm and the norm of the gradient of the
    loss w.r.t. its output (lib.probes' ``weight_grad_norm``, ``output_grad_norm``).
    ``hidden``: the layers followed by an activation, with ``pre_std``,
    ``act_std``, ``dead`` (fraction of units whose output is 0 on every example)
    and ``saturated`` (fraction of pre-activations beyond
    :data:`lib.probes.SATURATION`; NaN for an unbounded activation).
    ``hist_act``/``hist_grad``: per hidden layer asked for, (K, bins) fractions
    of the activations in :attr:`act_edges` and of ``log10 |dL/d activation|`` in
    :attr:`grad_edges` (values outside fall in the end bins).
    """

    names: list[str]
    grad: np.ndarray
    delta: np.ndarray
    hidden: list[str]
    pre_std: np.ndarray
    act_std: np.ndarray
    dead: np.ndarray
    saturated: np.ndarray
    loss: np.ndarray
    act_edges: np.ndarray | None = None
    grad_edges: np.ndarray | None = None
    hist_act: dict[int, np.ndarray] = field(default_factory=dict)
    hist_grad: dict[int, np.ndarray] = field(default_factory=dict)


def _check_models(models: Sequence[nn.Module]) -> list[_networks.MLP]:
    if isinstance(models, nn.Module) or not isinstance(models, (list, tuple)) or not models:
        raise TypeError("models must be a non-empty list of lib.networks.MLP")
    sig = None
    for k, m in enumerate(models):
        if not isinstance(m, _networks.MLP):
            raise TypeError(f"models[{k}] must be a lib.networks.MLP (from lib.networks.mlp), "
                            f"got {type(m).__name__}")
        for name, mod in m.hidden():
            if not isinstance(getattr(mod, "act", None), _ELEMENTWISE):
                raise ValueError(f"models[{k}].{name}: the activation must be elementwise "
                                 "and parameter-free (not PReLU or RReLU)")
        if len({repr(mod.act) for _, mod in m.hidden()}) != 1:
            raise ValueError(f"models[{k}] uses more than one activation across its layers")
        s = [(n, type(mod)) for n, mod in m.named_modules() if not n.endswith(".act")] + \
            [(n, tuple(p.shape), p.dtype) for n, p in m.named_parameters()]
        if sig is None:
            sig = s
        elif s != sig:
            raise ValueError(f"models[{k}] differs in structure from models[0]: "
                             "all models must share layers and shapes")
    return list(models)


def _histogram(v: Tensor, edges: np.ndarray) -> np.ndarray:
    """(K, bins) fraction of each model's entries per bin; outliers go to the end bins."""
    lo, hi, bins = float(edges[0]), float(edges[-1]), len(edges) - 1
    flat = v.detach().flatten(1).double()
    idx = ((flat - lo) / (hi - lo) * bins).floor().clamp(0, bins - 1).long()
    counts = torch.zeros(flat.shape[0], bins, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones_like(flat))
    return (counts / flat.shape[1]).numpy()


def init_states(template: nn.Module, inits: Sequence[str], *, seed: int,
                init_params: Sequence[dict[str, Any] | None] | None = None
                ) -> list[dict[str, Tensor]]:
    """The parameters ``template`` gets from :func:`lib.init.apply` under each scheme.

    ``lib.networks.mlp(..., init=scheme, seed=seed)`` is the same architecture
    re-initialised by ``lib.init.apply(model, scheme, seed=seed)``, so these are
    the parameters of those models, drawn without building a model per scheme
    (building is most of the cost of a grid of small networks). The template's
    own parameters are left as the last scheme set them.
    """
    if not isinstance(template, nn.Module):
        raise TypeError(f"template must be an nn.Module, got {type(template).__name__}")
    inits = list(inits)
    extra = list(init_params) if init_params is not None else [None] * len(inits)
    if len(extra) != len(inits):
        raise ValueError(f"init_params needs one entry per init ({len(inits)}), got {len(extra)}")
    states = []
    for scheme, params in zip(inits, extra):
        _init.apply(template, scheme, seed=seed, **(params or {}))
        states.append({n: p.detach().clone() for n, p in template.named_parameters()})
    return states


def stacked_stats(models: Sequence[nn.Module] | nn.Module, x: Tensor, y: Tensor, *,
                  states: Sequence[dict[str, Tensor]] | None = None,
                  activations: Sequence[str] | None = None,
                  hist_layers: Sequence[int] = (), act_edges: np.ndarray | None = None,
                  grad_edges: np.ndarray | None = None) -> Stats:
    """One forward/backward pass of every model on ``(x, y)``, stacked; see :class:`Stats`.

    Args:
        models: same-shaped :class:`lib.networks.MLP` models (train mode: a
            BatchNorm normalises with the batch's statistics, as in lib.probes);
            or one MLP used as the template for ``states``.
        states: with a template, one parameter dict per model (e.g. from
            :func:`init_states`).
        activations: with a template, one activation name per state (default:
            the template's); models that share one are applied as one slice.
        x: (batch, in_features) inputs, shared by all models.
        y: (batch,) class labels; the loss is cross-entropy, as lib.probes'
            :func:`~lib.probes.gradient_norms`.
        hist_layers: indices into :attr:`Stats.hidden` to histogram.
        act_edges, grad_edges: histogram bin edges (default: 41 edges on
            [-3, 3] and on ``log10 |grad|`` in [-12, 0]).

    Examples::

        >>> ms = [networks.mlp(10, 64, "tanh", init=s, seed=0) for s in ("he", "default")]
        >>> stacked_stats(ms, x, y).grad.shape       # (2, 11): 10 hidden + output
    """
    if states is not None:
        if not isinstance(models, _networks.MLP):
            raise TypeError("with states, models must be one lib.networks.MLP (the template)")
        _check_models([models])
        template, each = models, list(states)
        if not each:
            raise ValueError("states must not be empty")
        names0 = {n: p.shape for n, p in template.named_parameters()}
        for k, st in enumerate(each):
            if not isinstance(st, dict) or {n: t.shape for n, t in st.items()} != names0:
                raise ValueError(f"states[{k}] must map the template's parameter names to "
                                 "tensors of the same shapes")
        if activations is None:
            mods = [models.hidden()[0][1].act] * len(each)
        else:
            if isinstance(activations, str) or len(activations) != len(each):
                raise ValueError("activations must list one activation name per state")
            mods = [_acts.get(a).module() for a in activations]
            if not all(isinstance(m, _ELEMENTWISE) for m in mods):
                raise ValueError("activations must be elementwise and parameter-free "
                                 "(not prelu or rrelu)")
    else:
        if activations is not None:
            raise ValueError("activations are given only with a template and states")
        models = _check_models(models)
        template, each = models[0], [dict(m.named_parameters()) for m in models]
        mods = [m.hidden()[0][1].act for m in models]
    # Consecutive models with the same activation form one slice of the stack.
    groups: list[tuple[int, nn.Module]] = []
    for m in mods:
        if groups and repr(groups[-1][1]) == repr(m):
            groups[-1] = (groups[-1][0] + 1, groups[-1][1])
        else:
            groups.append((1, m))
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor of shape (batch, in_features)")
    if not isinstance(y, Tensor) or y.shape != x.shape[:1] or y.is_floating_point():
        raise TypeError("y must be an integer tensor of class labels of shape (batch,)")
    k = len(each)
    hidden_mods = template.hidden()
    hist_layers = [int(i) for i in hist_layers]
    n_act = len(hidden_mods)
    for i in hist_layers:
        if not 0 <= i < n_act:
            raise ValueError(f"hist_layers must index the {n_act} hidden layers, got {i}")
    act_edges = np.linspace(-3, 3, 41) if act_edges is None else np.asarray(act_edges, float)
    grad_edges = np.linspace(-12, 0, 41) if grad_edges is None else np.asarray(grad_edges, float)
    dtype = next(template.parameters()).dtype
    x = x.to(dtype)

    params = {n: torch.stack([p[n].detach() for p in each]).requires_grad_()
              for n in each[0]}

    def lin(h: Tensor, prefix: str) -> Tensor:
        w, b = params[f"{prefix}.weight"], params.get(f"{prefix}.bias")
        wt = w.transpose(1, 2)
        u = torch.bmm(h, wt) if b is None else torch.baddbmm(b.unsqueeze(1), h, wt)
        u.retain_grad()
        outs.append(u)
        names.append(prefix)
        return u

    def norm(z: Tensor, prefix: str, mod: nn.Module | None) -> Tensor:
        if mod is None:
            return z
        if isinstance(mod, nn.LayerNorm):
            z = F.layer_norm(z, mod.normalized_shape, eps=mod.eps)
        else:  # BatchNorm1d in training mode: each model's own batch statistics
            mean, var = z.mean(1, keepdim=True), z.var(1, unbiased=False, keepdim=True)
            z = (z - mean) / torch.sqrt(var + mod.eps)
        w = params.get(f"{prefix}.weight")
        if w is not None:
            z = z * w.unsqueeze(1) + params[f"{prefix}.bias"].unsqueeze(1)
        return z

    def act(z: Tensor) -> Tensor:
        if len(groups) == 1:
            a = groups[0][1](z)
        else:
            a = torch.cat([f(part) for part, (_, f) in zip(z.split(counts), groups)])
        a.retain_grad()
        pres.append(z)
        acts.append(a)
        return a

    counts = [c for c, _ in groups]
    outs: list[Tensor] = []
    names: list[str] = []  # the weight layers in forward order, as lib.probes names them
    pres: list[Tensor] = []
    acts: list[Tensor] = []
    h = x.expand(k, *x.shape)
    for name, mod in template.named_children():
        if isinstance(mod, _networks.Layer):
            h = act(norm(lin(h, f"{name}.linear"), f"{name}.norm", mod.norm))
        elif isinstance(mod, _networks.ResidualBlock):
            a = act(norm(lin(h, f"{name}.fc1"), f"{name}.norm", mod.norm))
            h = h + mod.scale * lin(a, f"{name}.fc2")
        else:
            h = lin(h, name)
    loss = F.cross_entropy(h.transpose(1, 2), y.expand(k, *y.shape), reduction="none").mean(1)
    loss.sum().backward()

    with torch.no_grad():
        def norms(ts: list[Tensor]) -> Tensor:
            # float64 inside the norm: the squares of a vanishing gradient underflow float32
            return torch.stack([torch.linalg.vector_norm(t, dim=(1, 2), dtype=torch.float64)
                                for t in ts], 1)

        grad = norms([params[f"{n}.weight"].grad for n in names])
        delta = norms([u.grad for u in outs])
        # Saturation only for bounded activations; NaN for the others.
        thr = torch.tensor([_probes.SATURATION.get(_acts.name_of_module(f) or "", math.nan)
                            for c, f in groups for _ in range(c)], dtype=pres[0].dtype)
        z_all = torch.stack([z.detach() for z in pres])      # (layers, K, batch, units)
        a_all = torch.stack([a.detach() for a in acts])
        pre_std = z_all.flatten(2).std(2, unbiased=False).T.double()
        act_std = a_all.flatten(2).std(2, unbiased=False).T.double()
        dead = (~(a_all != 0).any(2)).double().mean(2).T
        sat = (z_all.abs() > thr.view(1, -1, 1, 1)).flatten(2).double().mean(2).T
        sat[torch.isnan(thr)] = math.nan
        stats = Stats(names=names, grad=grad.numpy(), delta=delta.numpy(),
                      hidden=[n for n, _ in hidden_mods], pre_std=pre_std.numpy(),
                      act_std=act_std.numpy(), dead=dead.numpy(), saturated=sat.numpy(),
                      loss=loss.detach().double().numpy(), act_edges=act_edges,
                      grad_edges=grad_edges)
        for i in hist_layers:
            stats.hist_act[i] = _histogram(acts[i], act_edges)
            g = acts[i].grad.abs().double().clamp_min(1e-300).log10()
            stats.hist_grad[i] = _histogram(g, grad_edges)
    return stats
