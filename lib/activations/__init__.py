"""Activation functions with their derivatives written in closed form.

The book teaches the derivatives, so each one is written out here rather than
taken from autograd; the tests check every closed form against autograd.

Public contract::

    >>> from lib import activations
    >>> activations.names()            # every activation the book uses
    >>> act = activations.get("leaky_relu", slope=0.1)
    >>> act.forward(x), act.derivative(x), act.module()

Values at the kinks follow PyTorch: ReLU's derivative at exactly 0 is 0,
Leaky ReLU's (and PReLU's, RReLU's) is the negative slope, ELU's is ``alpha``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from lib.activations import kinds

__all__ = ["Activation", "names", "get", "Swish", "Identity", "SELU_ALPHA", "SELU_SCALE",
           "name_of_module", "ACTIVATION_MODULES", "kinds"]

#: SELU's :math:`\alpha` (Klambauer et al., 2017), the value ``torch.nn.SELU`` uses.
SELU_ALPHA = 1.6732632423543772848170429916717
#: SELU's scale :math:`\lambda` (Klambauer et al., 2017).
SELU_SCALE = 1.0507009873554804934193349852946

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715


def _as_tensor(x: Any, where: str) -> Tensor:
    """Accept a tensor, a number or an array-like; return a floating tensor."""
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        t = torch.tensor(float(x), dtype=torch.get_default_dtype())
    else:
        try:
            t = torch.as_tensor(x)
        except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
            raise TypeError(
                f"{where}: x must be a torch.Tensor, a number or an array-like of numbers, "
                f"got {type(x).__name__}"
            ) from exc
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{where}: x must hold real numbers, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


class Swish(nn.Module):
    r"""Swish :math:`f(x) = x\,\sigma(\beta x)`; with :math:`\beta = 1` it is SiLU.

    Args:
        beta: the gate's slope, a finite number > 0.

    Shape: any; elementwise.
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) \
                or not math.isfinite(beta) or beta <= 0:
            raise ValueError(f"Swish: beta must be a finite number > 0, got {beta!r}")
        self.beta = float(beta)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.beta * x)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class Identity(nn.Module):
    """The identity as an activation module (a linear network), so probes see it."""

    def forward(self, x: Tensor) -> Tensor:
        return x


@dataclass(frozen=True)
class _Spec:
    forward: Callable[..., Tensor]
    derivative: Callable[..., Tensor]
    module: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], None] = lambda p: None
    summary: str = ""


class Activation:
    """One activation with fixed parameters.

    ``forward(x)`` and ``derivative(x)`` work elementwise on tensors (or numbers);
    ``module()`` returns a fresh ``nn.Module`` computing the same forward.
    For ``rrelu``, ``forward(x, training=True)`` draws a random slope per element
    (pass a ``torch.Generator`` for reproducibility); the default is eval mode,
    where the slope is fixed at ``(lower + upper) / 2``.
    """

    def __init__(self, name: str, spec: _Spec, params: dict[str, Any]) -> None:
        self.name = name
        self.params = dict(params)
        self._spec = spec

    def forward(self, x: Any, *, training: bool = False, generator: torch.Generator | None = None) -> Tensor:
        x = _as_tensor(x, f"{self.name}.forward")
        if self.name == "rrelu" and training:
            lo, hi = self.params["lower"], self.params["upper"]
            slope = torch.empty_like(x).uniform_(lo, hi, generator=generator)
            return torch.where(x >= 0, x, slope * x)
        return self._spec.forward(x, **self.params)

    __call__ = forward

    def derivative(self, x: Any) -> Tensor:
        """d forward / dx in closed form (eval mode for ``rrelu``)."""
        x = _as_tensor(x, f"{self.name}.derivative")
        return self._spec.derivative(x, **self.params)

    def module(self) -> nn.Module:
        """A fresh ``nn.Module`` for this activation (learnable for ``prelu``)."""
        return self._spec.module(**self.params)

    @property
    def summary(self) -> str:
        return self._spec.summary

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Activation({self.name!r}{', ' if args else ''}{args})"


# --- closed forms -----------------------------------------------------------

def _sigmoid(x: Tensor) -> Tensor:
    return torch.sigmoid(x)


def _d_sigmoid(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _d_tanh(x: Tensor) -> Tensor:
    t = torch.tanh(x)
    return 1 - t * t


def _relu(x: Tensor) -> Tensor:
    # torch.relu, not clamp(min=0): same values, but autograd of clamp gives slope 1 at
    # exactly 0, and the book (like PyTorch) says ReLU's derivative there is 0.
    return torch.relu(x)


def _d_relu(x: Tensor) -> Tensor:
    return (x > 0).to(x.dtype)


def _leaky(x: Tensor, slope: float) -> Tensor:
    return torch.where(x > 0, x, slope * x)


def _d_leaky(x: Tensor, slope: float) -> Tensor:
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope))


def _elu(x: Tensor, alpha: float) -> Tensor:
    return torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))


def _d_elu(x: Tensor, alpha: float) -> Tensor:
    return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(torch.clamp(x, max=0)))


def _swish(x: Tensor, beta: float) -> Tensor:
    return x * torch.sigmoid(beta * x)


def _d_swish(x: Tensor, beta: float) -> Tensor:
    s = torch.sigmoid(beta * x)
    return s + beta * x * s * (1 - s)


def _phi(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _Phi(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2.0)))


def _gelu(x: Tensor, approximate: str) -> Tensor:
    if approximate == "tanh":
        u = _SQRT_2_OVER_PI * (x + _GELU_TANH_C * x**3)
        return 0.5 * x * (1 + torch.tanh(u))
    return x * _Phi(x)


def _d_gelu(x: Tensor, approximate: str) -> Tensor:
    if approximate == "tanh":
        u = _SQRT_2_OVER_PI * (x + _GELU_TANH_C * x**3)
        t = torch.tanh(u)
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * x * x)
        # x * (1 - t^2) * du is 0 * finite far out; guard the product so it never forms inf * 0.
        tail = torch.where(t.abs() < 1, 0.5 * x * (1 - t * t) * du, torch.zeros_like(x))
        return 0.5 * (1 + t) + tail
    return _Phi(x) + x * _phi(x)


def _softplus(x: Tensor, beta: float, threshold: float) -> Tensor:
    return torch.nn.functional.softplus(x, beta=beta, threshold=threshold)


def _d_softplus(x: Tensor, beta: float, threshold: float) -> Tensor:
    # Above the threshold PyTorch switches to the identity, so its slope is exactly 1 there.
    return torch.where(beta * x > threshold, torch.ones_like(x), torch.sigmoid(beta * x))


# --- parameter checks ---------------------------------------------------------

def _real(p: dict[str, Any], key: str) -> float:
    v = p[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"parameter {key!r} must be a finite real number, got {v!r}")
    return float(v)


def _positive(*keys: str) -> Callable[[dict[str, Any]], None]:
    def check(p: dict[str, Any]) -> None:
        for k in keys:
            if _real(p, k) <= 0:
                raise ValueError(f"parameter {k!r} must be > 0, got {p[k]!r}")
    return check


def _check_slope(p: dict[str, Any]) -> None:
    if _real(p, "slope") < 0:
        raise ValueError(f"parameter 'slope' must be >= 0, got {p['slope']!r}")


def _check_rrelu(p: dict[str, Any]) -> None:
    lo, hi = _real(p, "lower"), _real(p, "upper")
    if not 0 <= lo <= hi:
        raise ValueError(f"rrelu needs 0 <= lower <= upper, got lower={lo!r}, upper={hi!r}")


def _check_gelu(p: dict[str, Any]) -> None:
    if p["approximate"] not in ("none", "tanh"):
        raise ValueError(f"parameter 'approximate' must be 'none' or 'tanh', got {p['approximate']!r}")


def _check_softplus(p: dict[str, Any]) -> None:
    _positive("beta")(p)
    _real(p, "threshold")


def _check_prelu(p: dict[str, Any]) -> None:
    _real(p, "init")
    n = p["num_parameters"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"parameter 'num_parameters' must be an int >= 1, got {n!r}")


_REGISTRY: dict[str, _Spec] = {
    "identity": _Spec(lambda x: x.clone(), lambda x: torch.ones_like(x), Identity,
                      summary="f(x) = x (a linear network)"),
    "sigmoid": _Spec(_sigmoid, _d_sigmoid, nn.Sigmoid, summary="1 / (1 + e^-x)"),
    "tanh": _Spec(torch.tanh, _d_tanh, nn.Tanh, summary="tanh(x) = 2 sigmoid(2x) - 1"),
    "relu": _Spec(_relu, _d_relu, nn.ReLU, summary="max(0, x)"),
    "leaky_relu": _Spec(
        lambda x, slope: _leaky(x, slope), lambda x, slope: _d_leaky(x, slope),
        lambda slope: nn.LeakyReLU(slope), {"slope": 0.01}, _check_slope,
        "x if x > 0 else slope * x"),
    "prelu": _Spec(
        lambda x, init, num_parameters: _leaky(x, init),
        lambda x, init, num_parameters: _d_leaky(x, init),
        lambda init, num_parameters: nn.PReLU(num_parameters, init),
        {"init": 0.25, "num_parameters": 1}, _check_prelu,
        "leaky ReLU whose slope is learned (forward/derivative use the initial slope)"),
    "rrelu": _Spec(
        lambda x, lower, upper: _leaky(x, (lower + upper) / 2),
        lambda x, lower, upper: _d_leaky(x, (lower + upper) / 2),
        lambda lower, upper: nn.RReLU(lower, upper),
        {"lower": 1 / 8, "upper": 1 / 3}, _check_rrelu,
        "random slope U(lower, upper) in training, (lower + upper) / 2 in eval"),
    "elu": _Spec(
        lambda x, alpha: _elu(x, alpha), lambda x, alpha: _d_elu(x, alpha),
        lambda alpha: nn.ELU(alpha), {"alpha": 1.0}, _positive("alpha"),
        "x if x > 0 else alpha * (e^x - 1)"),
    "selu": _Spec(
        lambda x: SELU_SCALE * _elu(x, SELU_ALPHA), lambda x: SELU_SCALE * _d_elu(x, SELU_ALPHA),
        nn.SELU, summary="scale * elu(x, alpha) with the self-normalising constants"),
    "silu": _Spec(lambda x: _swish(x, 1.0), lambda x: _d_swish(x, 1.0), nn.SiLU,
                  summary="x * sigmoid(x)"),
    "swish": _Spec(
        lambda x, beta: _swish(x, beta), lambda x, beta: _d_swish(x, beta),
        lambda beta: Swish(beta), {"beta": 1.0}, _positive("beta"), "x * sigmoid(beta * x)"),
    "gelu": _Spec(
        lambda x, approximate: _gelu(x, approximate),
        lambda x, approximate: _d_gelu(x, approximate),
        lambda approximate: nn.GELU(approximate=approximate),
        {"approximate": "none"}, _check_gelu, "x * Phi(x) (or its tanh approximation)"),
    "softplus": _Spec(
        lambda x, beta, threshold: _softplus(x, beta, threshold),
        lambda x, beta, threshold: _d_softplus(x, beta, threshold),
        lambda beta, threshold: nn.Softplus(beta, threshold),
        {"beta": 1.0, "threshold": 20.0}, _check_softplus, "log(1 + e^(beta x)) / beta"),
}


def names() -> list[str]:
    """Names accepted by :func:`get`, in the order the book introduces them."""
    return list(_REGISTRY)


def get(name: str, **params: Any) -> Activation:
    """The activation called ``name`` with ``params`` overriding its defaults.

    Raises ``TypeError`` if ``name`` is not a string and ``ValueError`` for an
    unknown name, an unknown parameter or a parameter out of range; each message
    lists what is allowed.
    """
    if isinstance(name, Activation):
        if params:
            raise ValueError("pass parameters with a name, not with an Activation object")
        return name
    if not isinstance(name, str):
        raise TypeError(f"activation name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(names())}")
    spec = _REGISTRY[key]
    unknown = set(params) - set(spec.defaults)
    if unknown:
        allowed = ", ".join(spec.defaults) or "none"
        raise ValueError(
            f"activation {key!r} got unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"allowed: {allowed}"
        )
    full = {**spec.defaults, **params}
    spec.check(full)
    return Activation(key, spec, full)


def name_of_module(module: nn.Module) -> str | None:
    """The registry name of an activation module (``nn.ReLU()`` -> ``'relu'``), or None.

    Read from :mod:`lib.activations.kinds`, which also knows other libraries'
    classes (Hugging Face's ``GELUActivation`` -> ``'gelu'``) and takes new ones
    through :func:`lib.activations.kinds.register`.
    """
    kind = kinds.kind_of_module(module)
    return kind.name if kind is not None else None


def _torch_classes() -> tuple[type, ...]:
    return tuple(m for k in kinds.kinds().values() for m in k.modules if isinstance(m, type))


#: Module classes (PyTorch's and this book's) that probes treat as activations; other
#: libraries' classes are matched by name, see :func:`lib.activations.kinds.kind_of_module`.
ACTIVATION_MODULES: tuple[type, ...] = _torch_classes() + (Swish, Identity)
