"""One-call measurements built on the probe: gradient norms, hidden outputs, Jacobians, dead units.

Each runs one forward (and, for :func:`gradient_norms`, backward) pass and
returns plain numbers; the chapters use them where a whole report is more
than the experiment needs.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from lib._checks import check_callable, check_loss, check_model_input, check_tensor
from lib.probes._forward import call_model, call_user, default_output_loss
from lib.probes.recorder import Recorder, watch

__all__ = ["gradient_norms", "hidden_outputs", "jacobian_singular_values", "active_fraction",
           "dead_units"]


def gradient_norms(model: nn.Module, x: Tensor, y: Tensor,
                   loss_fn: Callable[[Any, Tensor], Tensor] | None = None) -> list[float]:
    r"""Weight-gradient norm :math:`\lVert \partial L / \partial W_l \rVert` of every layer
    after one forward/backward pass on ``(x, y)``, in forward order (the rows of
    :meth:`Recorder.report`: ``rec.column('name')`` names them).

    ``loss_fn(output, y)`` defaults to :func:`lib._checks.default_loss`
    (cross-entropy for integer labels, mean squared error for float targets of
    the output's shape; a target of another shape is refused, never
    broadcast), read from the output as :func:`lib.diagnose.diagnose_model`
    reads it: a Hugging Face ``ModelOutput``'s ``logits``, a tuple's first
    element, ``(batch, tokens, classes)`` logits flattened for
    ``(batch, tokens)`` labels. The model's ``.grad`` fields are cleared
    first and left holding the result.

    Raises:
        TypeError, ValueError: bad arguments, NaN/Inf in ``x`` or ``y``, or an
            ``x`` the layer it reaches first cannot take.
        lib.diagnose.ModelError: the model's forward pass failed elsewhere, or
            ``loss_fn`` or the backward pass raised.
    """
    check_tensor(x, "x", finite=True)
    x = check_model_input(model, x, "x")
    check_tensor(y, "y", nonempty=True, finite=True)
    loss_fn = check_callable(loss_fn, "loss_fn", optional=True) or default_output_loss
    model.zero_grad(set_to_none=True)
    with watch(model) as rec:
        out = call_model(model, x, "x")
        if loss_fn is default_output_loss:  # its errors name y and the shapes allowed
            loss = loss_fn(out, y)
        else:
            loss = call_user("loss_fn(model(x), y) failed", lambda: loss_fn(out, y))
        check_loss(loss, "loss_fn(model(x), y)")
        call_user("the backward pass failed", loss.backward)
    return rec.column("weight_grad_norm")


def hidden_outputs(model: nn.Module, x: Tensor) -> list[tuple[str, Tensor]]:
    """(name, output) of every top-level child of a sequential ``model`` on the batch ``x``.

    For a :class:`lib.networks.MLP` these are each hidden layer's activations (or,
    with ``residual=True``, the residual stream after each block) and last the
    output layer's logits. Runs without gradients, in the model's current mode.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"hidden_outputs needs an nn.Sequential (e.g. lib.networks.mlp), "
                        f"got {type(model).__name__}")
    check_tensor(x, "x", dtype="floating")
    x = check_model_input(model, x, "x")
    outs = []
    h = x
    with torch.no_grad():
        for name, module in model.named_children():
            h = module(h)
            outs.append((name, h))
    return outs


def jacobian_singular_values(module: nn.Module, x: Tensor) -> Tensor:
    r"""Singular values, largest first, of the Jacobian :math:`\partial f(x)/\partial x` at one input.

    The Jacobian of a stack of layers is the product of the per-layer
    Jacobians :math:`D_l W_l`; its singular values say how much the stack
    stretches or shrinks each input direction (the gradient flows back through
    its transpose). ``x`` has shape ``(features,)`` or ``(1, features)``; the
    output is flattened. A non-finite output is refused. Convert a deep stack to
    float64 (``module.double()``): its smallest singular values fall below
    float32 precision within a few tens of layers.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    check_tensor(x, "x", dtype="floating", finite=True)
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"x must be one input of shape (features,) or (1, features), "
                         f"got shape {tuple(x.shape)}")
    check_model_input(module, x.unsqueeze(0), "x")
    bn = [type(m).__name__ for m in module.modules()
          if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if bn:
        raise ValueError(f"module is in training mode and holds {bn[0]}, whose batch statistics "
                         f"need more than one input: call module.eval() first")
    # Autograd is off under torch.inference_mode (the Jacobian would be all zeros) and
    # an inference tensor cannot join a graph: leave the mode, use a normal copy of x.
    with torch.inference_mode(False):
        x = x.detach().clone() if x.is_inference() else x.detach()
        with torch.no_grad():
            probe_out = call_model(module, x.unsqueeze(0), "x")
        with torch.enable_grad():
            return _svdvals_of_jacobian(module, x, probe_out)


def _svdvals_of_jacobian(module: nn.Module, x: Tensor, probe_out: Any) -> Tensor:
    if not isinstance(probe_out, Tensor):
        raise TypeError(f"module must return one tensor, got {type(probe_out).__name__} "
                        f"(an nn.LSTM returns (output, state): wrap it to return the output)")
    jac = torch.autograd.functional.jacobian(lambda v: module(v.unsqueeze(0)).reshape(-1),
                                             x, vectorize=False)
    if not bool(torch.isfinite(jac).all()):
        raise ValueError("the module's output or its Jacobian at x is not finite (NaN or Inf)")
    return torch.linalg.svdvals(jac.detach())


def active_fraction(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Per layer and per unit, the fraction of the inputs in ``x`` with pre-activation > 0.

    Keys are the layer names of :func:`lib.probes.layer_modules`, in forward
    order, for every layer followed by an activation, as :func:`watch` pairs
    them: an activation module, or a functional call (``torch.relu(x)``,
    ``F.gelu(x)``, ``x.relu()``, and those inside PyTorch's own modules such
    as ``nn.TransformerEncoderLayer``'s default ReLU). Values are float64
    tensors with one entry per unit (per channel for a Conv layer, pooled
    over positions; per output feature for any other layer, pooled over
    everything before it, e.g. a transformer's sequence positions), pooled
    over the calls of a layer used several times. The pre-activation is read
    before the activation runs, so an in-place activation cannot overwrite
    it. A ReLU unit whose fraction is 0 is a *dead unit* on ``x``. ``x`` must
    be a finite, non-empty batch (NaN would make every unit look dead):
    floating, or integer token ids for a model that starts with an
    embedding. One forward pass without gradients, in the model's current
    mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_tensor(x, "x", finite=True)  # integer token ids too (a model that embeds)
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of shape (batch, ...), got {tuple(x.shape)}")
    x = check_model_input(model, x, "x")
    rec = Recorder(model)
    rec.count_positive = True
    rec.attach()
    try:
        with torch.no_grad():
            call_model(model, x, "x")
    finally:
        rec.detach()
    return {s.name: s.positive / s.positive_n for s in rec._order if s.positive is not None}


def dead_units(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Per layer, a boolean mask of the units whose pre-activation is <= 0 on every input in ``x``.

    For ReLU these are the dead units (output 0 and zero gradient on all of
    ``x``); see :func:`active_fraction`, which this thresholds at 0.
    """
    return {name: frac == 0 for name, frac in active_fraction(model, x).items()}
