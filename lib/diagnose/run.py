"""Run one forward/backward pass under the probes and diagnose it: :func:`diagnose_model`."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import Tensor, nn

from lib import probes as _probes
from lib._checks import check_callable, check_loss, check_model_input, check_tensor
from lib.diagnose.rules import Diagnosis, Thresholds, diagnose
from lib.probes._forward import ModelError, call_model, call_user, default_output_loss

__all__ = ["ModelError", "diagnose_model"]

def diagnose_model(model: nn.Module, x: Tensor | Mapping[str, Tensor], y: Tensor,
                   loss_fn: Callable[[Any, Tensor], Tensor] | None = None, *,
                   thresholds: Thresholds | None = None) -> Diagnosis:
    """One forward/backward pass of ``model`` on ``(x, y)`` under :func:`lib.probes.watch`,
    diagnosed by :func:`lib.diagnose.diagnose`.

    ``x`` is the model's input: a tensor (``model(x)``), or a mapping of
    keyword arguments such as a Hugging Face tokenizer's ``input_ids`` and
    ``attention_mask`` (``model(**x)``). ``loss_fn(output, y)`` defaults to
    :func:`lib._checks.default_loss` (cross-entropy for integer labels, mean
    squared error for float targets of the output's shape); an output of
    shape ``(batch, tokens, classes)`` with labels ``(batch, tokens)`` is
    flattened for it, and of an output that is not a tensor the default loss
    takes its ``logits`` (a Hugging Face ``ModelOutput``) or its first
    element (a tuple, such as ``nn.LSTM``'s ``(output, state)``). The model's
    ``.grad`` fields are cleared first and left holding this pass's
    gradients; its weights and train/eval mode are not changed.

    Raises:
        TypeError, ValueError: bad arguments, or an ``x`` the model's first
            layer cannot take (checked before the pass where that layer is known,
            else from where the forward pass failed: :mod:`lib.probes._forward`).
        ModelError: the forward pass, the loss or the backward pass failed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(x, Mapping):
        if not x or not all(isinstance(k, str) for k in x):
            raise ValueError("x as a mapping must hold the model's keyword arguments by name")
        for k, v in x.items():
            if isinstance(v, Tensor):
                check_tensor(v, f"x[{k!r}]", finite=True)
        inputs = dict(x)
    else:
        check_tensor(x, "x", nonempty=True, finite=True)
        if x.dim() == 0:
            raise ValueError("x must be a batch (at least one dimension), got a scalar")
        inputs = check_model_input(model, x, "x")
    check_tensor(y, "y", nonempty=True, finite=True)
    loss_fn = check_callable(loss_fn, "loss_fn", optional=True) or default_output_loss
    if not _probes.layer_modules(model):
        raise ValueError("model has no layer with parameters (Linear, Conv, ...) to probe")

    model.zero_grad(set_to_none=True)
    with _probes.watch(model) as rec:
        out = call_model(model, inputs, "x")
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        if loss_fn is default_output_loss:
            # lib's own loss: its ValueError/TypeError name y and the shapes allowed
            loss = default_output_loss(out, y)
        else:
            loss = call_user(f"the loss failed on the model's output ({shape}) and targets of "
                         f"shape {tuple(y.shape)}", lambda: loss_fn(out, y))
        try:
            check_loss(loss, "the loss")
        except (TypeError, ValueError) as exc:  # the model's or loss_fn's doing, not an argument
            raise ModelError(str(exc)) from None
        call_user("the backward pass failed", loss.backward)
    d = diagnose(rec.report(), thresholds=thresholds, parameters=rec.parameters())
    d.loss = float(loss.detach())
    d.coverage = rec.coverage()
    return d
