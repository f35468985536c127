r"""The one registry of activation *modules*: which classes are activations, and their properties.

Every fact that probes and diagnosis need about an activation module lives in
one :class:`Kind` entry: the module classes (PyTorch's, this book's, and other
libraries' given by dotted name, so that ``transformers`` need not be
imported), the functional forms (``torch.relu``, ``F.gelu``, ...), whether the
function is bounded or never negative, and its elementwise forward. The
*saturation threshold* of a bounded activation is computed from that forward,
not typed in: it is the smallest :math:`x_s > 0` with

.. math::

    |f'(\pm x)| < 0.05 \, \max_t |f'(t)| \quad \text{for all } |x| > x_s,

found by bisection on the autograd derivative in float64 (sigmoid: 4.357,
tanh: 2.178, hardtanh: 1, softsign: :math:`\sqrt{20} - 1`).

Register another activation (say a library's own class) with::

    >>> from lib.activations import kinds
    >>> kinds.register("my_gelu", ["mylib.layers.MyGELU"], forward=torch.nn.functional.gelu)

after which :func:`name_of_module` names it and :mod:`lib.probes` pairs it
with the layer before it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Kind", "register", "kind_of_module", "kind_of_function", "kinds", "saturation"]

#: The fraction of its peak below which a bounded activation's derivative counts as flat.
FLAT_FRACTION = 0.05


@dataclass(frozen=True)
class Kind:
    """One activation: its name, module classes, functional forms and properties.

    Args:
        name: the registry name (``"relu"``).
        modules: classes, or dotted class names (``"transformers.activations.GELUActivation"``).
        forward: the elementwise function, used to compute the saturation threshold.
        bounded: the output lies in a bounded interval (sigmoid, tanh, ...).
        nonnegative: the output is never negative (ReLU, sigmoid, ...).
        functions: functional forms recognised when a model calls them directly.
    """

    name: str
    modules: tuple[type | str, ...]
    forward: Callable[[Tensor], Tensor] | None = None
    bounded: bool = False
    nonnegative: bool = False
    functions: tuple[Callable[..., Tensor], ...] = field(default=())

    @property
    def saturation(self) -> float | None:
        """``|pre-activation|`` beyond which the derivative is below 5 % of its peak (bounded only)."""
        return saturation(self.name) if self.bounded else None


_KINDS: dict[str, Kind] = {}
_BY_CLASS: dict[str, str] = {}  # "module.QualName" -> kind name
_BY_FUNCTION: dict[int, str] = {}  # id(function) -> kind name


def _dotted(cls: type | str) -> str:
    return cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"


def register(name: str, modules: Iterable[type | str], *, forward: Callable[[Tensor], Tensor]
             | None = None, bounded: bool = False, nonnegative: bool = False,
             functions: Iterable[Callable[..., Tensor]] = ()) -> Kind:
    """Add (or replace) an activation kind; returns it. See :class:`Kind` for the arguments."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    mods = tuple(modules)
    if not mods or not all(isinstance(m, (type, str)) for m in mods):
        raise TypeError("modules must be a non-empty list of classes or dotted class names")
    if forward is not None and not callable(forward):
        raise TypeError(f"forward must be callable or None, got {type(forward).__name__}")
    if bounded and forward is None:
        raise ValueError(f"a bounded activation ({name!r}) needs its forward to find its "
                         "saturation threshold")
    funcs = tuple(functions)
    if not all(callable(f) for f in funcs):
        raise TypeError("functions must be callables")
    kind = Kind(name, mods, forward, bool(bounded), bool(nonnegative), funcs)
    _KINDS[name] = kind
    for m in mods:
        _BY_CLASS[_dotted(m)] = name
    for f in funcs:
        _BY_FUNCTION[id(f)] = name
    saturation.cache_clear()
    return kind


def kinds() -> dict[str, Kind]:
    """Every registered kind, by name."""
    return dict(_KINDS)


def kind_of_module(module: nn.Module) -> Kind | None:
    """The kind of an activation module (its class or a base class registered), or None."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    for cls in type(module).__mro__:
        name = _BY_CLASS.get(_dotted(cls))
        if name is not None:
            return _KINDS[name]
        if cls is nn.Module:
            break
    return None


def kind_of_function(func: Callable[..., Tensor]) -> Kind | None:
    """The kind of a functional activation (``torch.relu``, ``F.gelu``, ...), or None."""
    name = _BY_FUNCTION.get(id(func))
    return _KINDS[name] if name is not None else None


@functools.lru_cache(maxsize=None)
def saturation(name: str) -> float:
    """The saturation threshold of the bounded kind ``name`` (see the module docstring)."""
    kind = _KINDS.get(name)
    if kind is None or not kind.bounded or kind.forward is None:
        raise ValueError(f"no bounded activation {name!r}; bounded: "
                         f"{', '.join(k for k, v in _KINDS.items() if v.bounded)}")
    f = kind.forward
    grid = torch.linspace(-30, 30, 6001, dtype=torch.float64, requires_grad=True)
    (slopes,) = torch.autograd.grad(f(grid).sum(), grid)
    slopes = slopes.abs()
    limit = FLAT_FRACTION * float(slopes.max())
    steep = grid.detach()[slopes >= limit]
    # The outermost steep grid point, then bisect between it and the next grid point.
    side = 1.0 if float(steep[-1]) >= -float(steep[0]) else -1.0
    lo = float(steep[-1]) if side > 0 else -float(steep[0])
    hi = lo + 0.01

    def slope(x: float) -> float:
        t = torch.tensor([side * x], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(f(t).sum(), t)
        return abs(float(g))

    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) >= limit else (lo, mid)
    return hi


_HF = "transformers.activations."

register("identity", ["lib.activations.Identity"], forward=lambda x: x)  # not nn.Identity: a placeholder
register("sigmoid", [nn.Sigmoid], forward=torch.sigmoid, bounded=True, nonnegative=True,
         functions=[torch.sigmoid, F.sigmoid, Tensor.sigmoid])
register("tanh", [nn.Tanh], forward=torch.tanh, bounded=True,
         functions=[torch.tanh, F.tanh, Tensor.tanh])
register("relu", [nn.ReLU], forward=torch.relu, nonnegative=True,
         functions=[torch.relu, F.relu, Tensor.relu])
register("relu6", [nn.ReLU6], forward=F.relu6, nonnegative=True, functions=[F.relu6])
register("leaky_relu", [nn.LeakyReLU], forward=F.leaky_relu, functions=[F.leaky_relu])
register("prelu", [nn.PReLU])
register("rrelu", [nn.RReLU])
register("elu", [nn.ELU], forward=F.elu, functions=[F.elu])
register("celu", [nn.CELU], forward=F.celu, functions=[F.celu])
register("selu", [nn.SELU], forward=F.selu, functions=[F.selu, torch.selu])
register("silu", [nn.SiLU, _HF + "SiLUActivation"], forward=F.silu, functions=[F.silu])
register("swish", ["lib.activations.Swish"])
register("gelu", [nn.GELU, _HF + "GELUActivation", _HF + "GELUTanh", _HF + "PytorchGELUTanh",
                  _HF + "NewGELUActivation", _HF + "FastGELUActivation",
                  _HF + "AccurateGELUActivation", _HF + "QuickGELUActivation",
                  _HF + "ClippedGELUActivation"], forward=F.gelu, functions=[F.gelu])
register("softplus", [nn.Softplus], forward=F.softplus, nonnegative=True, functions=[F.softplus])
register("mish", [nn.Mish, _HF + "MishActivation"], forward=F.mish, functions=[F.mish])
register("hardtanh", [nn.Hardtanh], forward=F.hardtanh, bounded=True, functions=[F.hardtanh])
register("hardswish", [nn.Hardswish], forward=F.hardswish, functions=[F.hardswish])
register("hardsigmoid", [nn.Hardsigmoid], forward=F.hardsigmoid, bounded=True,
         nonnegative=True, functions=[F.hardsigmoid])
register("softsign", [nn.Softsign], forward=F.softsign, bounded=True, functions=[F.softsign])
register("tanhshrink", [nn.Tanhshrink], forward=F.tanhshrink, functions=[F.tanhshrink])
register("relu_squared", [_HF + "ReLUSquaredActivation"], nonnegative=True)
register("laplace", [_HF + "LaplaceActivation"], bounded=True, nonnegative=True,
         forward=lambda x: 0.5 * (1.0 + torch.erf((x - 0.707107) / (0.282095 * math.sqrt(2.0)))))
register("linear", [_HF + "LinearActivation"], forward=lambda x: x)
