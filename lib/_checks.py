"""Argument checks shared by every lib module (private; imports nothing from lib).

Every public lib function validates its arguments with these helpers, so the
same mistake raises the same exception with the same kind of message
everywhere:

* the wrong *kind* of value (a string for a number, a float for a count, an
  integer tensor where floats are needed) raises :class:`TypeError`;
* a value of the right kind outside what is allowed (a negative width, a NaN
  learning rate, a float too large for float32, a tensor of the wrong shape,
  a name that is not one of the choices) raises :class:`ValueError`.

Each message names the argument and says what is allowed, e.g.
``ValueError: noise must be a finite real number >= 0, got nan``.

Real numbers are accepted in every form Python and numpy give them (``int``,
``float``, ``numpy.float32(0.1)``, ``numpy.int64(3)``, a 0-d real tensor);
``bool`` is refused where a number is meant, since ``True`` as a learning rate
is a mistake, not a 1.

Examples:
    >>> check_number(np.float32(0.5), "lr", gt=0)
    0.5
    >>> check_int(3, "depth", ge=1)
    3
    >>> check_choice("batch", "norm", ("none", "batch", "layer"))
    'batch'
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["FLOAT32_MAX", "check_bool", "check_int", "check_number", "check_choice",
           "check_seed", "SEED_MAX", "check_tensor", "check_model_input", "check_callable",
           "check_loss", "default_loss"]

#: The largest finite float32: a Python float above it becomes ``inf`` in a tensor.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _bounds_text(ge: float | None, gt: float | None, le: float | None,
                 lt: float | None) -> str:
    parts = []
    if ge is not None:
        parts.append(f">= {ge:g}")
    if gt is not None:
        parts.append(f"> {gt:g}")
    if le is not None:
        parts.append(f"<= {le:g}")
    if lt is not None:
        parts.append(f"< {lt:g}")
    return " and ".join(parts)


def _in_bounds(v: float, ge: float | None, gt: float | None, le: float | None,
               lt: float | None) -> bool:
    return ((ge is None or v >= ge) and (gt is None or v > gt)
            and (le is None or v <= le) and (lt is None or v < lt))


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is a ``bool`` (or ``numpy.bool_``), else :class:`TypeError`.

    A string such as ``'no'`` is truthy, so accepting it would silently mean True.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} "
                    f"{value!r}")


def check_int(value: Any, name: str, *, ge: int | None = None, le: int | None = None) -> int:
    """``value`` as a Python ``int`` if it is an integer within ``[ge, le]``.

    Accepts ``int`` and numpy integers; refuses ``bool`` and floats (even ``3.0``)
    with :class:`TypeError`; out of range is :class:`ValueError`.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if not _in_bounds(v, ge, None, le, None):
        raise ValueError(f"{name} must be an int {_bounds_text(ge, None, le, None)}, got {v}")
    return v


def check_number(value: Any, name: str, *, ge: float | None = None, gt: float | None = None,
                 le: float | None = None, lt: float | None = None, allow_nan: bool = False,
                 allow_inf: bool = False, float32: bool = True) -> float:
    """``value`` as a Python ``float`` if it is a real number within the bounds.

    Args:
        value: any real number: ``int``, ``float``, numpy scalar, 0-d real tensor.
        name: the argument's name, used in the message.
        ge, gt, le, lt: bounds (``>=``, ``>``, ``<=``, ``<``); ``None`` for none.
        allow_nan: accept NaN (off by default: NaN compares false with every
            bound, so it would slip through them).
        allow_inf: accept ``+-inf`` (off by default).
        float32: refuse finite values whose magnitude exceeds float32's range
            (about ``3.4e38``), which would become ``inf`` in a float32 tensor.

    Raises:
        TypeError: not a real number (``bool``, ``str``, ``None``, complex, ...).
        ValueError: NaN, infinite, too large for float32, or out of bounds.
    """
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number, got a tensor of shape "
                            f"{tuple(value.shape)} and dtype {value.dtype}")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{name} must be a finite real number, got {value!r}") from None
    bounds = _bounds_text(ge, gt, le, lt)
    what = f"a {'' if allow_inf else 'finite '}real number{' ' + bounds if bounds else ''}"
    if math.isnan(v):
        if allow_nan:
            return v
        raise ValueError(f"{name} must be {what}, got nan")
    if math.isinf(v) and not allow_inf:
        raise ValueError(f"{name} must be {what}, got {v}")
    if float32 and math.isfinite(v) and abs(v) > FLOAT32_MAX:
        raise ValueError(f"{name} must fit in float32 (|{name}| <= {FLOAT32_MAX:.4g}), "
                         f"got {v:g}")
    if not _in_bounds(v, ge, gt, le, lt):
        raise ValueError(f"{name} must be {what}, got {v:g}")
    return v


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared with ``==``).

    A value of another type than every choice (e.g. a number where names are
    expected) is :class:`TypeError`; an unknown value of the right type is
    :class:`ValueError`. The message lists the choices.
    """
    options = list(choices)
    listed = ", ".join(repr(c) for c in options)
    types = {type(c) for c in options}
    if options and not any(isinstance(value, t) for t in types):
        raise TypeError(f"{name} must be one of {listed}; got {type(value).__name__} {value!r}")
    if value not in options:
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


#: The largest seed torch's generators take (an unsigned 64-bit integer).
SEED_MAX = 2**64 - 1


def check_seed(value: Any, name: str = "seed", *, optional: bool = False) -> int | None:
    """A seed: any integer >= 0 (numpy integers accepted); ``None`` if ``optional``.

    lib hashes seeds (:func:`lib.seeds.stream`) or reduces them modulo
    :data:`SEED_MAX` + 1 before they reach a torch generator, which takes
    64 bits only."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        allowed = "an int >= 0" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    v = int(value)
    if v < 0:
        raise ValueError(f"{name} must be an int >= 0, got {v}")
    return v


_DTYPE_KINDS = {"floating": "a floating-point dtype", "integer": "an integer dtype"}


def check_tensor(value: Any, name: str, *, dtype: str | torch.dtype | Sequence[torch.dtype] | None = None,
                 ndim: int | Sequence[int] | None = None, shape: Sequence[int | None] | None = None,
                 finite: bool = False, nonempty: bool = False) -> Tensor:
    """``value`` if it is a tensor of the required dtype, rank, shape and values.

    Args:
        dtype: ``"floating"``, ``"integer"``, a ``torch.dtype`` or a sequence of them.
        ndim: the allowed number of dimensions (an int or a sequence of ints).
        shape: the required shape, ``None`` for a free dimension, e.g. ``(None, 64)``.
        finite: refuse NaN and infinite entries.
        nonempty: refuse a tensor with no elements.

    Raises:
        TypeError: not a tensor, or the wrong dtype.
        ValueError: wrong rank or shape, empty, or non-finite entries.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dtype is not None:
        if dtype == "floating":
            ok = value.is_floating_point()
        elif dtype == "integer":
            ok = not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool
        elif isinstance(dtype, torch.dtype):
            ok = value.dtype == dtype
        else:
            ok = value.dtype in tuple(dtype)
        if not ok:
            want = _DTYPE_KINDS.get(dtype, str(dtype)) if isinstance(dtype, str) else str(dtype)
            raise TypeError(f"{name} must have {want}, got {value.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                             f"got shape {tuple(value.shape)}")
    if shape is not None:
        want = tuple(shape)
        if value.dim() != len(want) or any(w is not None and s != w
                                           for s, w in zip(value.shape, want)):
            shown = "(" + ", ".join("*" if w is None else str(w) for w in want) + ")"
            raise ValueError(f"{name} must have shape {shown}, got {tuple(value.shape)}")
    if nonempty and value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if finite and (value.is_floating_point() or value.is_complex()):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite, got NaN or Inf entries")
    return value


_INPUT_LAYERS = (nn.Linear, nn.Bilinear, nn.RNNBase, nn.Embedding, nn.modules.conv._ConvNd)


def _first_input_layer(model: nn.Module) -> nn.Module | None:
    """The layer ``model`` feeds its input to, where that can be known without running it.

    ``model`` itself when it is such a layer; else, down a chain of
    ``nn.Sequential`` containers (whose order is their forward order), the
    first parameterised module. Any other container registers its children
    in whatever order its author wrote them, which need not be the order its
    forward calls them: there it returns ``None`` (no guess).
    """
    m = model
    while True:
        if isinstance(m, _INPUT_LAYERS):
            return m
        if not isinstance(m, nn.Sequential) or len(m) == 0:
            return None
        first = m[0]
        if any(True for _ in first.parameters(recurse=False)) and not isinstance(first, _INPUT_LAYERS):
            return None  # a layer we cannot read the input size from: stop guessing
        if not any(True for _ in first.parameters()) and not isinstance(first, nn.Sequential):
            return None  # a parameter-free first step (Flatten, a reshape): it changes x
        m = first


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype every floating parameter of ``model`` has, if they agree."""
    kinds = {p.dtype for p in model.parameters()
             if p.is_floating_point() and not isinstance(p, nn.parameter.UninitializedParameter)}
    return kinds.pop() if len(kinds) == 1 else None


def check_model_input(model: nn.Module, x: Any, name: str = "x") -> Tensor:
    """``x`` if it can go into ``model``'s first layer: right dtype and feature count.

    Reads the layer the input goes to (``Linear``, ``Conv``, ``RNN``/``LSTM``/
    ``GRU``, ``Embedding``), where that is known without running the model:
    the model itself, or the first layer of an ``nn.Sequential`` (see
    :func:`_first_input_layer`; in any other module, registration order need
    not be forward order, so only a floating ``x`` of another dtype than all
    the model's floating parameters is refused there). A Linear layer of
    ``in_features`` needs ``x.shape[-1] == in_features``, a ConvNd of
    ``in_channels`` needs channels in dimension 1, an RNN needs ``input_size``
    in the last dimension; floating layers need ``x`` of the weight's dtype,
    an Embedding needs integer ``x``. When the first layer is of another kind,
    only the tensor type is checked and the model's own error stands.

    Raises:
        TypeError: ``model`` not a module, ``x`` not a tensor or of the wrong dtype.
        ValueError: the wrong number of features/channels, or an empty batch.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_tensor(x, name, nonempty=True)
    first = _first_input_layer(model)
    if first is None:
        dtype = _model_dtype(model)
        if dtype is not None and x.is_floating_point() and x.dtype != dtype:
            raise TypeError(f"{name} must have the model's dtype {dtype}, got {x.dtype} "
                            f"(convert with {name}.to({dtype}))")
        return x
    if isinstance(first, nn.Embedding):
        check_tensor(x, name, dtype="integer")
        return x
    w = getattr(first, "weight", None)
    if w is None and isinstance(first, nn.RNNBase):
        w = first.all_weights[0][0]
    lazy = isinstance(w, nn.parameter.UninitializedParameter)
    if isinstance(w, Tensor) and w.is_floating_point() and not lazy:
        if x.dtype != w.dtype:
            raise TypeError(f"{name} must have the model's dtype {w.dtype}, got {x.dtype} "
                            f"(convert with {name}.to({w.dtype}))")
    if isinstance(first, nn.Linear) and not isinstance(first, nn.LazyLinear):
        if x.dim() < 1 or x.shape[-1] != first.in_features:
            raise ValueError(f"{name} must have {first.in_features} features in its last "
                             f"dimension (the model's first Linear layer), got shape "
                             f"{tuple(x.shape)}")
    elif isinstance(first, nn.modules.conv._ConvNd):
        k = len(first.kernel_size)
        if x.dim() not in (k + 1, k + 2):
            raise ValueError(f"{name} must have {k + 2} dimensions (batch, channels, ...) for "
                             f"the model's first Conv{k}d layer, got shape {tuple(x.shape)}")
        channels = x.shape[1] if x.dim() == k + 2 else x.shape[0]
        if channels != first.in_channels:
            raise ValueError(f"{name} must have {first.in_channels} channels (the model's "
                             f"first Conv{k}d layer), got shape {tuple(x.shape)}")
    elif isinstance(first, nn.RNNBase):
        if x.dim() not in (2, 3) or x.shape[-1] != first.input_size:
            raise ValueError(f"{name} must have {first.input_size} features in its last "
                             f"dimension (the model's first {type(first).__name__}), got "
                             f"shape {tuple(x.shape)}")
    return x


def check_callable(value: Any, name: str, *, optional: bool = False) -> Callable[..., Any] | None:
    """``value`` if it is callable (or ``None`` when ``optional``), else :class:`TypeError`."""
    if value is None and optional:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable{' or None' if optional else ''}, "
                        f"got {type(value).__name__}")
    return value


def check_loss(loss: Any, name: str = "loss") -> Tensor:
    """``loss`` if backward can start from it: a real floating scalar in the graph.

    Raises:
        TypeError: not a tensor, or not a real floating dtype.
        ValueError: more than one element (reduce it to a scalar), or no
            gradient path to any parameter (it does not depend on them).
    """
    if not isinstance(loss, Tensor):
        raise TypeError(f"{name} must return a scalar torch.Tensor, got {type(loss).__name__}")
    if not loss.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point scalar, got dtype {loss.dtype}")
    if loss.numel() != 1:
        raise ValueError(f"{name} must be a scalar (one element; reduce it with .mean() or "
                         f".sum()), got shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise ValueError(f"{name} does not depend on any parameter that requires a gradient "
                         f"(no gradient can flow back from it)")
    return loss


def default_loss(out: Tensor, y: Tensor) -> Tensor:
    r"""The loss every lib function uses when given none.

    Integer ``y`` (class indices): cross-entropy,
    :math:`\ell = -\frac1N \sum_i \log \operatorname{softmax}(o_i)_{y_i}`;
    ``out`` must be ``(N, C)`` and ``y`` ``(N,)`` with labels in ``0..C-1``.
    Floating ``y`` (regression targets): mean squared error,
    :math:`\ell = \frac1{N} \sum_i \lVert o_i - y_i \rVert^2 / D`; ``y`` must hold
    exactly as many numbers as ``out`` (``(N,)`` for ``(N, 1)`` outputs is fine),
    so a target of the wrong shape is refused rather than broadcast.

    Raises:
        TypeError: ``out`` or ``y`` not a tensor, or ``out`` not floating.
        ValueError: shapes that do not match, or labels out of range.
    """
    check_tensor(out, "output", dtype="floating")
    check_tensor(y, "y")
    if y.is_floating_point():
        if y.numel() != out.numel() or (y.dim() > 0 and out.dim() > 0 and y.shape[0] != out.shape[0]):
            raise ValueError(f"regression target y must match the output's shape "
                             f"{tuple(out.shape)}, got {tuple(y.shape)}")
        return nn.functional.mse_loss(out, y.reshape(out.shape).to(out.dtype))
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"y must hold class indices (an integer dtype) or float targets, "
                        f"got {y.dtype}")
    if out.dim() != 2 or y.dim() != 1 or y.shape[0] != out.shape[0]:
        raise ValueError(f"class labels y must have shape (N,) for an output of shape (N, C); "
                         f"got output {tuple(out.shape)} and y {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= out.shape[1]):
        raise ValueError(f"class labels y must lie in 0..{out.shape[1] - 1} (the output has "
                         f"{out.shape[1]} classes), got {int(y.min())}..{int(y.max())}")
    return nn.functional.cross_entropy(out, y)
