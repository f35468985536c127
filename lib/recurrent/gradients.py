"""Gradient through time: dL/dh_t at every step of a recurrent model (see :mod:`lib.recurrent`)."""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from lib import _checks
from lib import networks as _networks

__all__ = ["GradientThroughTime", "find_recurrent", "hidden_gradients", "input_gradients",
           "gradient_through_time", "decay_rate"]

_RECURRENT = (nn.RNNBase, nn.RNNCellBase, _networks.VanillaRNN)
_Loss = Callable[..., Tensor]


def find_recurrent(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The recurrent submodules of ``model`` (itself included), as ``(name, module)``.

    Counts ``nn.RNN/LSTM/GRU``, their cells and :class:`lib.networks.VanillaRNN`;
    the modules inside a found one are not listed again.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    found: list[tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        if isinstance(mod, _RECURRENT) and not any(
                name.startswith(f"{n}.") or n == "" for n, _ in found):
            found.append((name, mod))
    return found


def _pick(model: nn.Module, module: nn.Module | str | None) -> nn.Module:
    if isinstance(module, nn.Module):
        if not any(m is module for m in model.modules()):
            raise ValueError("module must be a submodule of model")
        return module
    if isinstance(module, str):
        named = dict(model.named_modules())
        if module not in named:
            raise ValueError(f"model has no submodule {module!r}")
        return named[module]
    if module is not None:
        raise TypeError(f"module must be an nn.Module, a name or None, got "
                        f"{type(module).__name__}")
    found = find_recurrent(model)
    if not found:
        raise ValueError("model has no recurrent module (nn.RNN/LSTM/GRU, a cell or "
                         "VanillaRNN): pass the per-step module as module=")
    if len(found) > 1:
        names = ", ".join(repr(n) for n, _ in found)
        raise ValueError(f"model has {len(found)} recurrent modules ({names}): "
                         f"pass module= to choose one")
    return found[0][1]


def _check_rnnbase(mod: nn.RNNBase) -> None:
    if mod.bidirectional:
        raise ValueError(
            "bidirectional=True is not supported: the reverse direction's state at step t "
            "depends on the inputs after t, so there is no single state per step; "
            "use input_gradients, which supports it")
    if mod.dropout and mod.training and mod.num_layers > 1:
        raise ValueError("inter-layer dropout in training mode is random and is not "
                         "reproduced: call model.eval() or set dropout=0")


def _cell_step(mod: nn.RNNBase, k: int, x: Tensor, h: Tensor,
               c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """One step of layer ``k`` of ``mod``, as PyTorch documents the equations."""
    w_ih, w_hh = getattr(mod, f"weight_ih_l{k}"), getattr(mod, f"weight_hh_l{k}")
    gi = x @ w_ih.T
    gh = h @ w_hh.T
    if mod.bias:
        gi = gi + getattr(mod, f"bias_ih_l{k}")
        gh = gh + getattr(mod, f"bias_hh_l{k}")
    if isinstance(mod, nn.LSTM):
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if mod.proj_size:
            h = h @ getattr(mod, f"weight_hr_l{k}").T
        return h, c
    if isinstance(mod, nn.GRU):
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * h, None
    a = gi + gh
    return (torch.tanh(a) if mod.mode == "RNN_TANH" else torch.relu(a)), None


def _stepped_forward(mod: nn.RNNBase, record: list[tuple[list[Tensor], list[Tensor]]]
                     ) -> Callable[..., Any]:
    """A forward for ``mod`` that computes step by step and records every state."""

    def forward(input: Tensor, hx: Any = None) -> Any:
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError("packed sequences are not supported: pad them "
                            "(nn.utils.rnn.pad_packed_sequence) first")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1 if not mod.batch_first else 0) if unbatched else input
        if not mod.batch_first:
            x = x.transpose(0, 1)  # (batch, time, features) from here on
        n, steps = x.shape[0], x.shape[1]
        lstm = isinstance(mod, nn.LSTM)
        hsize = mod.proj_size if lstm and mod.proj_size else mod.hidden_size
        if hx is None:
            h = [x.new_zeros(n, hsize) for _ in range(mod.num_layers)]
            c = [x.new_zeros(n, mod.hidden_size) for _ in range(mod.num_layers)] if lstm \
                else [None] * mod.num_layers
        else:
            h0, c0 = hx if lstm else (hx, None)
            h0 = h0.unsqueeze(1) if unbatched else h0
            h = list(h0.unbind(0))
            c = list((c0.unsqueeze(1) if unbatched else c0).unbind(0)) if lstm \
                else [None] * mod.num_layers
        outs = []
        for t in range(steps):
            inp = x[:, t]
            hs, cs = [], []
            for k in range(mod.num_layers):
                h[k], c[k] = _cell_step(mod, k, inp, h[k], c[k])
                h[k].retain_grad()
                hs.append(h[k])
                if lstm:
                    c[k].retain_grad()
                    cs.append(c[k])
                inp = h[k]
            record.append((hs, cs))
            outs.append(inp)
        out = torch.stack(outs, 1)
        hn = torch.stack(h, 0)
        if not mod.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out, hn = out.squeeze(1 if not mod.batch_first else 0), hn.squeeze(1)
        if lstm:
            cn = torch.stack(c, 0)
            return out, (hn, cn.squeeze(1) if unbatched else cn)
        return out, hn

    return forward


@contextmanager
def _recording(mod: nn.Module) -> Iterator[list[tuple[list[Tensor], list[Tensor]]]]:
    record: list[tuple[list[Tensor], list[Tensor]]] = []
    if isinstance(mod, nn.RNNBase):
        _check_rnnbase(mod)
        mod.forward = _stepped_forward(mod, record)  # type: ignore[method-assign]
        try:
            yield record
        finally:
            del mod.forward
        return
    target = mod.act if isinstance(mod, _networks.VanillaRNN) else mod

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        h, c = (out if isinstance(out, tuple) else (out, None))
        if not isinstance(h, Tensor) or not h.requires_grad:
            return
        h.retain_grad()
        if isinstance(c, Tensor) and c.requires_grad:
            c.retain_grad()
        record.append(([h], [c] if isinstance(c, Tensor) else []))

    handle = target.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


def _loss(out: Any, target: Any, loss_fn: _Loss | None) -> Tensor:
    """The loss of a model's output ``out`` (its first element if a tuple)."""
    pred = out[0] if isinstance(out, tuple) else out
    if loss_fn is None:
        if target is None:
            raise ValueError("pass target= (for the default loss) or loss_fn=")
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be a tensor, got {type(target).__name__}")
        loss = _checks.default_loss(pred, target)
    else:
        loss = loss_fn(pred) if target is None else loss_fn(pred, target)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("the loss must be a tensor with one element")
    return loss


def hidden_gradients(model: nn.Module, x: Tensor, target: Tensor | None = None, *,
                     loss_fn: _Loss | None = None, module: nn.Module | str | None = None,
                     layer: int = -1, state: str = "h", reduce: str = "norm") -> Tensor:
    """Gradient of the loss with respect to the recurrent state at every time step.

    .. math::

        g_t = \\Bigl\\lVert \\frac{\\partial L}{\\partial h_t} \\Bigr\\rVert_F,
        \\qquad t = 1, \\dots, T,

    the total derivative (through every later step and every output), the
    norm taken over the batch and the units.

    Args:
        model: a recurrent module, or any model containing one (see the module
            docstring for what is supported).
        x: the model's input.
        target: passed to ``loss_fn``; with no ``loss_fn``, the default loss
            (cross-entropy for integer targets, else mean squared error).
        loss_fn: ``loss_fn(prediction, target)``, or ``loss_fn(prediction)``
            when ``target`` is None. ``prediction`` is ``model(x)``, or its
            first element if that is a tuple (for ``nn.RNN``: the outputs).
        module: which recurrent submodule (object or name); needed only if
            there are several.
        layer: which layer of a multi-layer ``nn.RNN/LSTM/GRU``.
        state: ``"h"``, or ``"c"`` for an LSTM's cell state.
        reduce: ``"norm"`` (shape ``(T,)``) or ``"none"`` (the gradients,
            shape ``(T, batch, hidden)``).

    Returns:
        Tensor of shape ``(T,)`` (or ``(T, batch, hidden)``), detached.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(x, nn.utils.rnn.PackedSequence):
        raise TypeError("packed sequences are not supported: pad them "
                        "(nn.utils.rnn.pad_packed_sequence) first")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor")
    _checks.check_callable(loss_fn, "loss_fn", optional=True)
    _checks.check_choice(state, "state", ("h", "c"))
    _checks.check_choice(reduce, "reduce", ("norm", "none"))
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    mod = _pick(model, module)
    layers = mod.num_layers if isinstance(mod, nn.RNNBase) else 1
    if not -layers <= layer < layers:
        raise ValueError(f"layer must be in [{-layers}, {layers - 1}] for a module with "
                         f"{layers} layer(s), got {layer}")
    if state == "c" and not isinstance(mod, (nn.LSTM, nn.LSTMCell)):
        raise ValueError(f"state='c' needs an LSTM; {type(mod).__name__} has no cell state")
    with torch.no_grad():
        reference = model(x)
    with torch.enable_grad(), _recording(mod) as record:
        out = model(x)
        _check_same(reference, out)
        if not record:
            raise ValueError("the recurrent module was not called: is module= right?")
        loss = _loss(out, target, loss_fn)
        loss.backward()
    grads = []
    for hs, cs in record:
        s = (cs if state == "c" else hs)[layer]
        grads.append(s.grad if s.grad is not None else torch.zeros_like(s))
    g = torch.stack(grads, 0).detach()
    if g.dim() == 2:  # unbatched input
        g = g.unsqueeze(1)
    return g.flatten(1).norm(dim=1) if reduce == "norm" else g


def _check_same(a: Any, b: Any) -> None:
    ta = a[0] if isinstance(a, tuple) else a
    tb = b[0] if isinstance(b, tuple) else b
    if isinstance(ta, Tensor) and isinstance(tb, Tensor):
        scale = 1.0 + float(ta.abs().max()) if ta.numel() else 1.0
        tol = 1e-4 if ta.dtype == torch.float32 else 1e-9
        if ta.shape != tb.shape or float((ta - tb.detach()).abs().max()) > tol * scale:
            raise RuntimeError("the step-by-step recurrence does not reproduce the "
                               "module's own forward; this configuration is not supported")


def input_gradients(model: nn.Module, x: Tensor, target: Tensor | None = None, *,
                    loss_fn: _Loss | None = None, time_dim: int | None = None) -> Tensor:
    """``||dL/dx_t||`` at every step: works for any model, bidirectional ones too.

    Args:
        time_dim: the time dimension of ``x``; default 0 for a bare
            ``nn.RNN/LSTM/GRU`` with ``batch_first=False``, else 1.

    Returns:
        Tensor of shape ``(T,)``: the norm over every other dimension.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor")
    if time_dim is None:
        time_dim = 0 if isinstance(model, nn.RNNBase) and not model.batch_first else 1
    time_dim = _checks.check_int(time_dim, "time_dim", ge=-x.dim(), le=x.dim() - 1)
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        _loss(model(xg), target, loss_fn).backward()
    g = xg.grad.movedim(time_dim, 0)
    return g.flatten(1).norm(dim=1) if g.dim() > 1 else g.abs()


def decay_rate(norms: Tensor, start: int = 0, stop: int | None = None) -> float:
    """Geometric factor per step, going back in time, fitted to ``norms[start:stop]``.

    Fits :math:`\\log g_t = a + b t` by least squares and returns
    :math:`e^{-b}`: below 1 the gradient shrinks as it travels back (vanishing),
    above 1 it grows (exploding). Zero norms are refused (log of 0).
    """
    g = torch.as_tensor(norms, dtype=torch.float64).flatten()[start:stop]
    if g.numel() < 2:
        raise ValueError("decay_rate needs at least 2 steps in norms[start:stop]")
    if not torch.isfinite(g).all() or (g <= 0).any():
        raise ValueError("norms must be finite and > 0 to fit a geometric rate")
    t = torch.arange(g.numel(), dtype=torch.float64)
    y = g.log()
    b = ((t - t.mean()) * (y - y.mean())).sum() / ((t - t.mean()) ** 2).sum()
    return float(torch.exp(-b))


@dataclass(frozen=True)
class GradientThroughTime:
    """What :func:`gradient_through_time` measured on one recurrent module.

    ``norms[t]`` is :math:`\\lVert\\partial L/\\partial h_t\\rVert`; ``rate``
    the fitted factor per step back in time (:func:`decay_rate`);
    ``first_to_last`` is ``norms[0] / norms[-1]``; ``module`` the module's
    name in the model, ``layer`` and ``state`` what was measured.
    """

    norms: Tensor
    rate: float
    first_to_last: float
    module: str
    layer: int
    state: str


def gradient_through_time(model: nn.Module, x: Tensor, target: Tensor | None = None, *,
                          loss_fn: _Loss | None = None, module: nn.Module | str | None = None,
                          layer: int = -1, state: str = "h") -> GradientThroughTime:
    """:func:`hidden_gradients` plus its summary (rate per step, first/last ratio).

    The rate is fitted over all steps but the last (the loss's own step).
    A zero or non-finite norm gives ``rate = nan``.
    """
    mod = _pick(model, module)
    g = hidden_gradients(model, x, target, loss_fn=loss_fn, module=mod, layer=layer,
                         state=state)
    name = next(n for n, m in model.named_modules() if m is mod)
    try:
        rate = decay_rate(g, 0, max(2, g.numel() - 1))
    except ValueError:
        rate = math.nan
    last = float(g[-1])
    ratio = float(g[0]) / last if last > 0 else math.inf
    return GradientThroughTime(g, rate, ratio, name, layer, state)
