"""Running a user's model on a user's input, with failures put where they belong (internal).

:func:`call_model` runs ``model(x)`` (``model(**x)`` for a mapping of
keyword arguments). When the forward pass raises, it looks at which module
was running: if that module is the one the input reaches first (it received
``x`` itself, or no layer with parameters finished before it), the input
is at fault and the caller gets a :class:`TypeError` (the wrong dtype:
integers into a floating layer, or floats of another precision) or a
:class:`ValueError` (the wrong shape, or token ids outside an embedding's
table) naming the argument, the layer and what it takes. Any other failure
is the model's own, reported as :class:`ModelError` with the layer's name
and the original exception chained, so its traceback stays available.

Checking these cases before the forward pass would need to know which layer
reads the input, which only the forward pass tells for a model that is not
an ``nn.Sequential`` (registration order need not be call order).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import Tensor, nn

from lib._checks import default_loss

__all__ = ["ModelError", "call_model", "call_user", "output_tensor", "default_output_loss"]


class ModelError(RuntimeError):
    """The model could not be run: its forward pass, loss or backward pass raised."""


def call_user(what: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, user code (a loss, a backward pass), any failure raised as
    :class:`ModelError` saying ``what`` failed, with the original chained."""
    try:
        return fn()
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - user code, SystemExit included, reported plainly
        raise ModelError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _params(module: nn.Module) -> list[Tensor]:
    return [p for p in module.parameters(recurse=False)
            if not isinstance(p, nn.parameter.UninitializedParameter)]


def _fault(arg: str, x: Tensor, what: str, module: nn.Module, layer: bool,
           exc: BaseException) -> Exception | None:
    """The argument error for input ``x`` failing in ``module``, or None if it is not one."""
    got = f"got {arg} of shape {tuple(x.shape)} and dtype {x.dtype}"
    floats = [p for p in _params(module) if p.is_floating_point()]
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        if x.is_floating_point():
            return TypeError(f"{arg} must hold integer token ids for {what}, {got}")
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= module.num_embeddings:
            return ValueError(f"{arg} must hold token ids in 0..{module.num_embeddings - 1} "
                              f"for {what}, got ids {lo}..{hi}")
    if floats and not x.is_floating_point():
        return TypeError(f"{arg} must be floating ({floats[0].dtype}) for {what}, {got}; "
                         f"integers go only into a model that starts with an embedding "
                         f"(convert with {arg}.to({floats[0].dtype}))")
    if floats and x.dtype != floats[0].dtype:
        return TypeError(f"{arg} must have the dtype of {what}, {floats[0].dtype}, {got} "
                         f"(convert with {arg}.to({floats[0].dtype}))")
    if not layer:
        return None  # the model's own code failed: not known to be the input's doing
    return ValueError(f"{arg} does not fit {what}, the first layer it reaches: "
                      f"{type(exc).__name__}: {exc}; {got}")


def call_model(model: nn.Module, x: Tensor | Mapping[str, Any], name: str = "x") -> Any:
    """``model(x)``, or ``model(**x)`` for a mapping; see the module docstring.

    Raises:
        TypeError, ValueError: the input is not what the layer it reaches first takes.
        ModelError: the forward pass failed anywhere else.
    """
    pairs = list(x.items()) if isinstance(x, Mapping) else [(None, x)]
    by_id = {id(t): k for k, t in pairs if isinstance(t, Tensor)}
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[tuple[nn.Module, int | None]] = []  # running modules, the input they got
    done = [0]  # layers with parameters that finished

    def pre(module: nn.Module, args: Any, kwargs: Any) -> None:
        got = next((id(a) for a in (*args, *kwargs.values()) if id(a) in by_id), None)
        stack.append((module, got))

    def post(module: nn.Module, args: Any, output: Any) -> None:
        if stack:
            stack.pop()
        if _params(module):
            done[0] += 1

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post))
    try:
        return model(**x) if isinstance(x, Mapping) else model(x)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - user code, SystemExit included
        failed, got = stack[-1] if stack else (model, None)
        layer = bool(_params(failed))
        path = names.get(id(failed), "")
        what = f"layer {path!r} ({failed})" if path else f"the model ({type(failed).__name__})"
        if got is None and layer and done[0] == 0 and not isinstance(x, Mapping):
            got = id(x)  # the first layer to run, on something computed from x alone
        if got is not None and isinstance(exc, (RuntimeError, IndexError, TypeError,
                                                ValueError)):
            key = by_id[got]
            arg = name if key is None else f"{name}[{key!r}]"
            t = x if key is None else x[key]
            err = _fault(arg, t, what, failed, layer, exc)
            if err is not None:
                raise err from None
        at = f" in layer {path!r} ({type(failed).__name__})" if path else ""
        raise ModelError(f"the model's forward pass failed{at}: "
                         f"{type(exc).__name__}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()


def output_tensor(out: Any) -> Tensor:
    """The tensor the default loss reads from a model's output.

    A tensor itself; of a Hugging Face ``ModelOutput`` (or any object or
    mapping with ``logits``) its ``logits``; of a tuple or list (``nn.LSTM``'s
    ``(output, state)``) its first element.

    Raises:
        TypeError: none of these; the message says to pass a ``loss_fn``.
    """
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    keys = f" with keys {list(out)[:6]}" if isinstance(out, Mapping) else ""
    raise TypeError(f"the model's output must be a tensor, a tuple or list that starts with "
                    f"one, or hold a 'logits' tensor (a Hugging Face ModelOutput) for the "
                    f"default loss; got {type(out).__name__}{keys}: pass a loss_fn(output, y) "
                    f"that takes it")


def default_output_loss(out: Any, y: Tensor) -> Tensor:
    """:func:`lib._checks.default_loss` of :func:`output_tensor` ``(out)``; logits of shape
    ``(batch, tokens, classes)`` with labels ``(batch, tokens)`` are flattened for it."""
    out = output_tensor(out)
    if not y.is_floating_point() and out.dim() == y.dim() + 1 > 2 and out.shape[:-1] == y.shape:
        return default_loss(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return default_loss(out, y)
