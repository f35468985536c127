"""The variance theory of :mod:`lib.init`: :func:`predict`, :func:`steps_to_loss`.

Part of :mod:`lib.init` (see there); import from ``lib.init``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lib import activations as _acts
from lib._checks import check_int, check_number
from lib.init.moments import gaussian_moments
from lib.init.schemes import weight_variance

__all__ = ["predict", "Prediction", "steps_to_loss"]

@dataclass(frozen=True)
class Prediction:
    """Mean-field prediction for a stack of ``depth`` equal-width layers.

    ``pre_var[l]``: Var of the pre-activation of hidden layer l+1 (forward).
    ``act_second_moment[l]``: E[f(z)^2] of that layer's activations.
    ``grad_var[l]``: Var of dL/d(pre-activation) of layer l+1, relative to the last layer.
    ``weight_grad_sq[l]``: ||dL/dW||^2 of layer l+1, relative to the last layer, *for one
    example* (the outer product of that example's backward signal and input). A batch's
    weight gradient sums these with signs that partly cancel, unevenly across layers, so
    batch weight-gradient norms need not follow it; batch norms of dL/d(output), i.e.
    ``grad_var``, do.
    """

    pre_var: np.ndarray
    act_second_moment: np.ndarray
    grad_var: np.ndarray
    weight_grad_sq: np.ndarray


def predict(activation: str, scheme: str, width: int, depth: int, *, input_var: float = 1.0,
            activation_params: dict[str, Any] | None = None,
            scheme_params: dict[str, Any] | None = None) -> Prediction:
    r"""Forward and backward variance, layer by layer, for square layers of ``width``.

    .. math::

        q_1 = n \sigma_w^2 q_0, \qquad
        q_{l+1} = n \sigma_w^2\, \mathbb{E}[f(z_l)^2], \qquad
        g_l = g_{l+1}\, n \sigma_w^2\, \mathbb{E}[f'(z_l)^2], \quad g_L = 1,

    with :math:`\sigma_w^2` = :func:`weight_variance` and :math:`q_0` = ``input_var``.

    The input to layer 1 has per-coordinate second moment ``input_var``; biases
    are zero. The recursion ignores finite-width fluctuations, which grow with
    depth / width, so compare it with measurements on wide layers. It does not
    describe PyTorch's default ``nn.Linear`` init as a whole: its nonzero biases
    (variance ``1/(3 fan_in)``) put a floor under the forward variance once the
    weights have shrunk it, which this zero-bias recursion leaves out.
    """
    width = check_int(width, "width", ge=1)
    depth = check_int(depth, "depth", ge=1)
    input_var = check_number(input_var, "input_var", gt=0, float32=False)
    ap = activation_params or {}
    _acts.get(activation, **ap)  # validate early
    vw = weight_variance(scheme, width, width, **(scheme_params or {}))
    pre, m2, d2 = np.empty(depth), np.empty(depth), np.empty(depth)
    prev_m2 = float(input_var)
    for layer in range(depth):
        # Python floats: an overflow is inf (checked next), not a numpy warning
        pre[layer] = width * float(vw) * float(prev_m2)
        if not math.isfinite(pre[layer]):
            raise ValueError(f"predict: the forward variance overflows float64 at layer "
                             f"{layer + 1}; use fewer layers or a smaller weight variance")
        _, m2[layer], d2[layer] = gaussian_moments(activation, float(pre[layer]), **ap)
        prev_m2 = m2[layer]
    grad = np.empty(depth)
    grad[-1] = 1.0
    for layer in range(depth - 2, -1, -1):
        grad[layer] = grad[layer + 1] * width * vw * d2[layer]
    inputs_m2 = np.concatenate([[input_var], m2[:-1]])
    wgrad = grad * inputs_m2
    return Prediction(pre, m2, grad, wgrad / wgrad[-1])


def steps_to_loss(loss: Any, threshold: float, *, window: int = 5) -> np.ndarray:
    """Training time: per run, the first step at which the mean loss of the last
    ``window`` steps is at most ``threshold`` (steps count from 1), ``inf`` if
    never. ``loss`` is (runs, steps), e.g. a stacked run's minibatch losses; a
    NaN (diverged) step counts as never below.
    """
    arr = np.asarray(loss, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"loss must be 2-D (runs, steps), got shape {arr.shape}")
    threshold = check_number(threshold, "threshold")
    window = check_int(window, "window", ge=1, le=max(arr.shape[1], 1))
    windows = np.lib.stride_tricks.sliding_window_view(arr, window, axis=1)
    hit = np.nan_to_num(windows.mean(-1), nan=np.inf) <= threshold
    return np.where(hit.any(1), hit.argmax(1) + window, np.inf).astype(np.float64)


