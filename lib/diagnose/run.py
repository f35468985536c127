"""Run one forward/backward pass under the probes and diagnose it: :func:`diagnose_model`."""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from lib import probes as _probes
from lib._checks import check_callable, check_tensor, default_loss
from lib.diagnose.rules import Diagnosis, Thresholds, diagnose

__all__ = ["ModelError", "diagnose_model"]


class ModelError(RuntimeError):
    """The model could not be run: its forward pass, loss or backward pass raised."""


def _call(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - user code, SystemExit included, reported plainly
        raise ModelError(f"{what}: {type(exc).__name__}: {exc}") from exc


def diagnose_model(model: nn.Module, x: Tensor, y: Tensor,
                   loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None, *,
                   thresholds: Thresholds | None = None) -> Diagnosis:
    """One forward/backward pass of ``model`` on ``(x, y)`` under :func:`lib.probes.watch`,
    diagnosed by :func:`lib.diagnose.diagnose`.

    ``loss_fn(output, y)`` defaults to :func:`lib._checks.default_loss`
    (cross-entropy for integer labels, mean squared error for float targets of
    the output's shape); an output of shape ``(batch, tokens, classes)`` with
    labels ``(batch, tokens)`` is flattened for it. The model's ``.grad``
    fields are cleared first and left holding this pass's gradients; its
    weights and train/eval mode are not changed. Raises :class:`ModelError`
    when the forward pass, the loss or the backward pass fails.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_tensor(x, "x", nonempty=True)
    check_tensor(y, "y", nonempty=True)
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of examples along dim 0; got "
                         f"shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.is_floating_point() and not bool(x.isfinite().all()):
        raise ValueError("x must be finite: it holds NaN or Inf")
    loss_fn = check_callable(loss_fn, "loss_fn", optional=True) or _sequence_loss
    if not _probes.layer_modules(model):
        raise ValueError("model has no layer with parameters (Linear, Conv, ...) to probe")

    model.zero_grad(set_to_none=True)
    with _probes.watch(model) as rec:
        out = _call(f"the model's forward pass failed on an input of shape {tuple(x.shape)}",
                    lambda: model(x))
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        loss = _call(f"the loss failed on the model's output ({shape}) and targets of shape "
                     f"{tuple(y.shape)}", lambda: loss_fn(out, y))
        if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.requires_grad:
            raise ModelError("the loss must be a scalar tensor that depends on the model's "
                             "parameters")
        _call("the backward pass failed", loss.backward)
    d = diagnose(rec.report(), thresholds=thresholds, parameters=rec.parameters())
    d.loss = float(loss.detach())
    d.coverage = rec.coverage()
    return d


def _sequence_loss(out: Tensor, y: Tensor) -> Tensor:
    """:func:`default_loss`, with (batch, tokens, classes) logits and (batch, tokens) labels."""
    if isinstance(out, Tensor) and not y.is_floating_point() and out.dim() == y.dim() + 1 > 2 \
            and out.shape[:-1] == y.shape:
        return default_loss(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return default_loss(out, y)
