"""Weight initialisers and the variance theory that predicts what they do.

Two halves:

* :func:`apply` re-initialises every weight layer of a model with a named scheme
  (``default``, ``xavier_uniform``, ``xavier_normal``, ``he``/``he_fan_in``,
  ``he_fan_out``, ``he_uniform``, ``orthogonal``, ``normal``, ``zeros``, ``constant``), and
  :func:`lsuv` does the data-dependent LSUV initialisation.
* :func:`predict` propagates variances through a deep stack with the mean-field
  recursions of Glorot & Bengio (2010) and He et al. (2015)::

      q_l   = n * Var[w] * E[f(z)^2],    z ~ N(0, q_{l-1})   (forward)
      g_l   = n * Var[w] * E[f'(z)^2] * g_{l+1}               (backward)

  with the expectations computed by Gauss-Hermite quadrature from the closed
  forms in :mod:`lib.activations`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lib import activations as _acts
from lib import seeds as _seeds

__all__ = ["schemes", "weight_variance", "apply", "lsuv", "weight_layers", "gaussian_moments",
           "predict", "Prediction"]

_SCHEMES = ("default", "xavier_uniform", "xavier_normal", "he", "he_fan_in", "he_fan_out",
            "he_uniform", "orthogonal", "normal", "zeros", "constant")
_PARAMS = {"orthogonal": {"gain": 1.0}, "normal": {"std": 0.01}, "constant": {"value": 0.1},
           "xavier_uniform": {"gain": 1.0}, "xavier_normal": {"gain": 1.0}}


def schemes() -> list[str]:
    """Names accepted by :func:`apply` and :func:`weight_variance`."""
    return list(_SCHEMES)


def _check_scheme(scheme: str, params: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(scheme, str):
        raise TypeError(f"init scheme must be a str, got {type(scheme).__name__}")
    if scheme not in _SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; valid schemes: {', '.join(_SCHEMES)}")
    allowed = _PARAMS.get(scheme, {})
    unknown = set(params) - set(allowed)
    if unknown:
        raise ValueError(
            f"init scheme {scheme!r} got unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    full = {**allowed, **params}
    for k, v in full.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"init parameter {k!r} must be a finite number, got {v!r}")
        if k in ("std", "gain") and v < 0:
            raise ValueError(f"init parameter {k!r} must be >= 0, got {v!r}")
    return full


def _check_fans(fan_in: int, fan_out: int) -> None:
    for name, v in (("fan_in", fan_in), ("fan_out", fan_out)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def weight_variance(scheme: str, fan_in: int, fan_out: int, **params: Any) -> float:
    """Var[w] of one weight under ``scheme`` for a layer with the given fans.

    PyTorch's default ``nn.Linear`` init is ``kaiming_uniform_(a=sqrt(5))``: a
    uniform on ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``, whose variance is
    ``1 / (3 fan_in)``, a third of LeCun's ``1 / fan_in``.
    """
    p = _check_scheme(scheme, params)
    _check_fans(fan_in, fan_out)
    if scheme == "default":
        return 1.0 / (3.0 * fan_in)
    if scheme in ("xavier_uniform", "xavier_normal"):
        return p["gain"] ** 2 * 2.0 / (fan_in + fan_out)
    if scheme in ("he", "he_fan_in", "he_uniform"):
        return 2.0 / fan_in
    if scheme == "he_fan_out":
        return 2.0 / fan_out
    if scheme == "orthogonal":
        # Rows (or columns) of unit norm: each entry has variance 1/max(fan_in, fan_out).
        return p["gain"] ** 2 / max(fan_in, fan_out)
    if scheme == "normal":
        return float(p["std"]) ** 2
    return 0.0  # zeros and constant have no spread


_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Bilinear)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear/Conv layer, in registration order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHT_LAYERS)]


def _fans(w: Tensor) -> tuple[int, int]:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
    return int(fan_in), int(fan_out)


def apply(model: nn.Module, scheme: str, *, seed: int | None = None, **params: Any) -> nn.Module:
    """Re-initialise every Linear/Conv weight of ``model`` in place and return it.

    Biases are set to zero, except for ``default``, which restores PyTorch's own
    ``reset_parameters`` (uniform weights and biases). ``seed`` makes it repeatable.
    """
    p = _check_scheme(scheme, params)
    # torch.manual_seed would quietly take "3" or 2.5; a seed that is not an int is a mistake.
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    layers = weight_layers(model)
    if not layers:
        raise ValueError("model has no Linear or Conv layer to initialise")
    # A private RNG stream when seeded: initialising never disturbs the caller's random state.
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(_seeds.stream(seed, "init"))
        with torch.no_grad():
            for _, m in layers:
                w = m.weight
                if scheme == "default":
                    m.reset_parameters()
                    continue
                if scheme == "xavier_uniform":
                    nn.init.xavier_uniform_(w, gain=p["gain"])
                elif scheme == "xavier_normal":
                    nn.init.xavier_normal_(w, gain=p["gain"])
                elif scheme in ("he", "he_fan_in"):
                    nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
                elif scheme == "he_fan_out":
                    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
                elif scheme == "he_uniform":
                    nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu")
                elif scheme == "orthogonal":
                    nn.init.orthogonal_(w, gain=p["gain"])
                elif scheme == "normal":
                    nn.init.normal_(w, 0.0, p["std"])
                elif scheme == "zeros":
                    nn.init.zeros_(w)
                elif scheme == "constant":
                    nn.init.constant_(w, p["value"])
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
    return model


def lsuv(model: nn.Module, x: Tensor, *, tol: float = 0.05, max_iter: int = 10,
         seed: int | None = None) -> nn.Module:
    """Layer-sequential unit-variance init (Mishkin & Matas, 2016).

    Orthogonal init first; then, layer by layer in forward order, rescale the
    weights until that layer's output variance on the batch ``x`` is 1 within ``tol``.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("lsuv: x must be a floating-point torch.Tensor batch")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"lsuv: tol must be > 0, got {tol!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"lsuv: max_iter must be an int >= 1, got {max_iter!r}")
    apply(model, "orthogonal", seed=seed)
    layers = weight_layers(model)
    for _, m in layers:
        seen: dict[str, Tensor] = {}
        handle = m.register_forward_hook(lambda mod, inp, out: seen.__setitem__("out", out.detach()))
        try:
            for _ in range(max_iter):
                with torch.no_grad():
                    model(x)
                var = float(seen["out"].var())
                if not math.isfinite(var) or var == 0:
                    break
                if abs(var - 1.0) < tol:
                    break
                with torch.no_grad():
                    m.weight.div_(math.sqrt(var))
        finally:
            handle.remove()
    return model


def gaussian_moments(activation: str | _acts.Activation, q: float, *, cells: int = 24000,
                     **activation_params: Any) -> tuple[float, float, float]:
    """(E[f(z)], E[f(z)^2], E[f'(z)^2]) for z ~ N(0, q).

    Midpoint rule over +-12 standard deviations with 0 on a cell boundary, so the
    kink of ReLU-like functions and the jump of their derivative at 0 cost no accuracy.
    """
    act = _acts.get(activation, **activation_params)
    if not (isinstance(q, (int, float)) and q >= 0 and math.isfinite(q)):
        raise ValueError(f"variance q must be a finite number >= 0, got {q!r}")
    if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
        raise ValueError(f"cells must be an int >= 1, got {cells!r}")
    if q == 0:
        z0 = torch.zeros(1, dtype=torch.float64)
        return (float(act.forward(z0)), float(act.forward(z0) ** 2), float(act.derivative(z0) ** 2))
    h = 24.0 / cells
    u = torch.arange(cells, dtype=torch.float64) * h - 12.0 + h / 2  # standard-normal midpoints
    w = torch.exp(-0.5 * u * u) * h / math.sqrt(2 * math.pi)
    w = w / w.sum()
    z = u * math.sqrt(q)
    f = act.forward(z)
    d = act.derivative(z)
    return float(w @ f), float(w @ f**2), float(w @ d**2)


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
    """Forward and backward variance, layer by layer, for square layers of ``width``.

    The input to layer 1 has per-coordinate second moment ``input_var``; biases
    are zero. The recursion ignores finite-width fluctuations, which grow with
    depth / width, so compare it with measurements on wide layers. It does not
    describe PyTorch's default ``nn.Linear`` init as a whole: its nonzero biases
    (variance ``1/(3 fan_in)``) put a floor under the forward variance once the
    weights have shrunk it, which this zero-bias recursion leaves out.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    if not (isinstance(input_var, (int, float)) and input_var > 0):
        raise ValueError(f"input_var must be > 0, got {input_var!r}")
    ap = activation_params or {}
    _acts.get(activation, **ap)  # validate early
    vw = weight_variance(scheme, width, width, **(scheme_params or {}))
    pre, m2, d2 = np.empty(depth), np.empty(depth), np.empty(depth)
    prev_m2 = float(input_var)
    for l in range(depth):
        pre[l] = width * vw * prev_m2
        _, m2[l], d2[l] = gaussian_moments(activation, float(pre[l]), **ap)
        prev_m2 = m2[l]
    grad = np.empty(depth)
    grad[-1] = 1.0
    for l in range(depth - 2, -1, -1):
        grad[l] = grad[l + 1] * width * vw * d2[l]
    inputs_m2 = np.concatenate([[input_var], m2[:-1]])
    wgrad = grad * inputs_m2
    return Prediction(pre, m2, grad, wgrad / wgrad[-1])
