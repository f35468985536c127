"""The initialiser registry: :class:`Scheme`, :data:`SCHEMES`, :func:`apply`, :func:`lsuv`.

Part of :mod:`lib.init` (see there); import from ``lib.init``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from lib import activations as _acts
from lib import seeds as _seeds
from lib._checks import check_int, check_model_input, check_number, check_seed
from lib.init.moments import gaussian_moments

__all__ = ["Scheme", "SCHEMES", "schemes", "gain", "weight_variance", "apply", "lsuv", "weight_layers"]

Filler = Callable[[Tensor, dict[str, Any], "torch.Generator | None"], None]


@dataclass(frozen=True)
class Scheme:
    r"""One initialisation scheme: its fill, its weight variance, its parameters.

    Attributes:
        name: the name :func:`apply` takes.
        fill: ``fill(weight, params, generator)`` draws the weight in place.
        variance: ``variance(fan_in, fan_out, params)``, :math:`\operatorname{Var}[w]`.
        params: the parameters it accepts, with their defaults.
        formula: the variance as LaTeX, for the docs.
        zero_bias: set biases to zero (all but ``default``, which draws them).
    """

    name: str
    fill: Filler
    variance: Callable[[int, int, dict[str, Any]], float]
    params: dict[str, Any] = field(default_factory=dict)
    formula: str = ""
    zero_bias: bool = True


def _default_fill(w: Tensor, p: dict[str, Any], g: torch.Generator | None) -> None:
    # nn.Linear/ConvNd.reset_parameters: kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(n), 1/sqrt(n)).
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)


def _he_gain(p: dict[str, Any]) -> float:
    return p["gain"] if p.get("gain") is not None else gain(p["nonlinearity"])


def _kaiming(mode: str, uniform: bool) -> Filler:
    def fill(w: Tensor, p: dict[str, Any], g: torch.Generator | None) -> None:
        fan_in, fan_out = _fans(w)
        std = _he_gain(p) / math.sqrt(fan_in if mode == "fan_in" else fan_out)
        if uniform:
            bound = math.sqrt(3.0) * std
            nn.init.uniform_(w, -bound, bound, generator=g)
        else:
            nn.init.normal_(w, 0.0, std, generator=g)
    return fill


_HE_PARAMS = {"nonlinearity": "relu", "gain": None}

#: The registry: every scheme :func:`apply`, :func:`weight_variance` and
#: :func:`predict` accept, in the order :func:`schemes` lists them.
SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("default", _default_fill, lambda fi, fo, p: 1.0 / (3.0 * fi), {},
           r"\frac{1}{3 n_\text{in}}", zero_bias=False),
    Scheme("xavier_uniform", lambda w, p, g: nn.init.xavier_uniform_(w, gain=p["gain"], generator=g),
           lambda fi, fo, p: p["gain"] ** 2 * 2.0 / (fi + fo), {"gain": 1.0},
           r"a^2 \frac{2}{n_\text{in} + n_\text{out}}"),
    Scheme("xavier_normal", lambda w, p, g: nn.init.xavier_normal_(w, gain=p["gain"], generator=g),
           lambda fi, fo, p: p["gain"] ** 2 * 2.0 / (fi + fo), {"gain": 1.0},
           r"a^2 \frac{2}{n_\text{in} + n_\text{out}}"),
    Scheme("he", _kaiming("fan_in", False), lambda fi, fo, p: _he_gain(p) ** 2 / fi,
           dict(_HE_PARAMS), r"\frac{a^2}{n_\text{in}}"),
    Scheme("he_fan_in", _kaiming("fan_in", False), lambda fi, fo, p: _he_gain(p) ** 2 / fi,
           dict(_HE_PARAMS), r"\frac{a^2}{n_\text{in}}"),
    Scheme("he_fan_out", _kaiming("fan_out", False), lambda fi, fo, p: _he_gain(p) ** 2 / fo,
           dict(_HE_PARAMS), r"\frac{a^2}{n_\text{out}}"),
    Scheme("he_uniform", _kaiming("fan_in", True), lambda fi, fo, p: _he_gain(p) ** 2 / fi,
           dict(_HE_PARAMS), r"\frac{a^2}{n_\text{in}}"),
    # Orthonormal rows (or columns): each entry has variance 1/max(fan_in, fan_out).
    Scheme("orthogonal", lambda w, p, g: nn.init.orthogonal_(w, gain=p["gain"], generator=g),
           lambda fi, fo, p: p["gain"] ** 2 / max(fi, fo), {"gain": 1.0},
           r"\frac{a^2}{\max(n_\text{in}, n_\text{out})}"),
    Scheme("normal", lambda w, p, g: nn.init.normal_(w, 0.0, p["std"], generator=g),
           lambda fi, fo, p: float(p["std"]) ** 2, {"std": 0.01}, r"\sigma^2"),
    Scheme("zeros", lambda w, p, g: nn.init.zeros_(w), lambda fi, fo, p: 0.0, {}, "0"),
    Scheme("constant", lambda w, p, g: nn.init.constant_(w, p["value"]), lambda fi, fo, p: 0.0,
           {"value": 0.1}, "0"),
)}


def schemes() -> list[str]:
    """Names accepted by :func:`apply` and :func:`weight_variance`."""
    return list(SCHEMES)


def gain(nonlinearity: str, **activation_params: Any) -> float:
    r"""The gain :math:`a` with :math:`\operatorname{Var}[w] = a^2 / n` that suits an activation.

    Where :func:`torch.nn.init.calculate_gain` knows the activation, its value:
    ``linear``/``identity`` 1, ``sigmoid`` 1, ``tanh`` 5/3, ``relu`` :math:`\sqrt 2`,
    ``leaky_relu`` (slope :math:`\alpha`) :math:`\sqrt{2 / (1 + \alpha^2)}` (and ``prelu``/``rrelu`` at their
    initial/mean slope), ``selu`` 3/4. For the others (ELU, GELU, SiLU/Swish,
    softplus) the gain that keeps a unit Gaussian's second moment,

    .. math:: a = 1 / \sqrt{\mathbb{E}[f(z)^2]}, \qquad z \sim N(0, 1),

    which is exactly :math:`\sqrt 2` for ReLU.

    Args:
        nonlinearity: ``"linear"`` or a name from :func:`lib.activations.names`.
        activation_params: the activation's parameters (e.g. ``slope=0.1``).

    Examples:
        >>> gain("relu") == math.sqrt(2)
        True
    """
    if not isinstance(nonlinearity, str):
        raise TypeError(f"nonlinearity must be an activation name (str), got "
                        f"{type(nonlinearity).__name__}")
    if nonlinearity in ("linear", "identity") and not activation_params:
        return 1.0
    act = _acts.get(nonlinearity, **activation_params)
    p = act.params
    if act.name in ("sigmoid", "tanh", "relu", "selu"):
        return float(nn.init.calculate_gain(act.name))
    slope = p.get("slope", p.get("negative_slope"))
    if act.name == "leaky_relu" and slope is not None:
        return float(nn.init.calculate_gain("leaky_relu", slope))
    if act.name == "prelu" and "init" in p:
        return float(nn.init.calculate_gain("leaky_relu", p["init"]))
    if act.name == "rrelu" and "lower" in p and "upper" in p:
        return float(nn.init.calculate_gain("leaky_relu", (p["lower"] + p["upper"]) / 2))
    _, m2, _ = gaussian_moments(act, 1.0)
    return 1.0 / math.sqrt(m2)


def _check_scheme(scheme: Any, params: dict[str, Any]) -> tuple[Scheme, dict[str, Any]]:
    if not isinstance(scheme, str):
        raise TypeError(f"init scheme must be a str, got {type(scheme).__name__}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
    s = SCHEMES[scheme]
    unknown = set(params) - set(s.params)
    if unknown:
        raise ValueError(
            f"init scheme {scheme!r} got unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(s.params) or 'none'}")
    full = {**s.params, **params}
    for k, v in full.items():
        if k == "nonlinearity":
            if not isinstance(v, str):
                raise TypeError(f"init parameter 'nonlinearity' must be an activation name, "
                                f"got {type(v).__name__}")
            if v != "linear":
                _acts.get(v)  # an unknown name fails here, with the valid names
        elif k == "gain" and v is None and "nonlinearity" in full:
            continue  # He: the gain comes from the nonlinearity
        else:
            full[k] = check_number(v, f"init parameter {k!r}",
                                   ge=0 if k in ("std", "gain") else None)
    return s, full


def weight_variance(scheme: str, fan_in: int, fan_out: int, **params: Any) -> float:
    r"""Var[w] of one weight under ``scheme`` for a layer with the given fans.

    PyTorch's default ``nn.Linear`` init is ``kaiming_uniform_(a=sqrt(5))``: a
    uniform on :math:`[-1/\sqrt{n_\text{in}}, 1/\sqrt{n_\text{in}}]`, whose variance
    is :math:`1 / (3 n_\text{in})`, a third of LeCun's :math:`1 / n_\text{in}`.
    Each scheme's formula is :attr:`Scheme.formula` in :data:`SCHEMES`.
    """
    s, p = _check_scheme(scheme, params)
    check_int(fan_in, "fan_in", ge=1)
    check_int(fan_out, "fan_out", ge=1)
    return float(s.variance(int(fan_in), int(fan_out), p))


_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Bilinear)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear/Conv layer, in registration order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHT_LAYERS)]


def _fans(w: Tensor) -> tuple[int, int]:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
    return int(fan_in), int(fan_out)


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def apply(model: nn.Module, scheme: str, *, seed: int | None = None, **params: Any) -> nn.Module:
    r"""Re-initialise every Linear/Conv weight of ``model`` in place and return it.

    Biases are set to zero, except for ``default``, which redraws PyTorch's own
    ``reset_parameters`` init (weights and biases uniform on
    :math:`\pm 1/\sqrt{n_\text{in}}`). With a ``seed`` the draws come from a
    private :class:`torch.Generator`, so the result is repeatable and the
    caller's random state (CPU and CUDA) is untouched; without one they come
    from torch's global generator, like ``nn.init``. Half-precision weights
    are drawn in float32 and rounded (torch's QR, used by ``orthogonal``, has
    no half-precision kernel).

    Args:
        model: any module with Linear/Conv layers.
        scheme: a name from :func:`schemes`.
        seed: an int >= 0, or None for the global generator.
        params: the scheme's parameters (see :data:`SCHEMES`), e.g. ``std=0.1``
            for ``normal``, ``nonlinearity="tanh"`` for the ``he`` family.
    """
    s, p = _check_scheme(scheme, params)
    seed = check_seed(seed, optional=True)
    layers = weight_layers(model)
    if not layers:
        raise ValueError("model has no Linear or Conv layer to initialise")
    g = None if seed is None else torch.Generator().manual_seed(_seeds.stream(seed, "init"))
    with torch.no_grad():
        for _, m in layers:
            w = m.weight
            if isinstance(m, nn.Bilinear) and s.name == "default":
                bound = 1 / math.sqrt(w.size(1))
                _fill_in_float32(w, lambda t: nn.init.uniform_(t, -bound, bound, generator=g))
                if m.bias is not None:
                    _fill_in_float32(m.bias, lambda t: nn.init.uniform_(t, -bound, bound, generator=g))
                continue
            _fill_in_float32(w, lambda t: s.fill(t, p, g))
            bias = getattr(m, "bias", None)
            if bias is None:
                continue
            if s.zero_bias:
                nn.init.zeros_(bias)
            else:  # reset_parameters' bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                fan_in, _ = _fans(w)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                _fill_in_float32(bias, lambda t: nn.init.uniform_(t, -bound, bound, generator=g))
    return model


def _fill_in_float32(t: Tensor, fill: Callable[[Tensor], Any]) -> None:
    if t.dtype in _LOW_PRECISION:
        tmp = torch.empty(t.shape, dtype=torch.float32)
        fill(tmp)
        t.copy_(tmp)
    else:
        fill(t)


def lsuv(model: nn.Module, x: Tensor, *, tol: float = 0.05, max_iter: int = 10,
         seed: int | None = None) -> nn.Module:
    r"""Layer-sequential unit-variance init (Mishkin & Matas, 2016).

    Orthogonal init first; then, layer by layer in forward order, rescale the
    weights :math:`W \leftarrow W / \sqrt{\operatorname{Var}[Wx]}` until that layer's
    output variance on the batch ``x`` is 1 within ``tol``.

    Warns (:class:`RuntimeWarning`, naming the layers) when a layer is still
    outside the tolerance after ``max_iter`` rescalings, rather than returning as
    if it had converged.

    Raises:
        TypeError: ``x`` not a tensor of the model's floating dtype.
        ValueError: ``x`` with the wrong feature count, ``tol``/``max_iter`` out of
            range, or a layer whose output variance is 0 or not finite (no
            rescaling can give it unit variance).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"lsuv: x must be a floating-point torch.Tensor batch, got "
                        f"{type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"lsuv: x must be a floating-point torch.Tensor batch, got {x.dtype}")
    check_model_input(model, x)
    tol = check_number(tol, "tol", gt=0, lt=1)
    max_iter = check_int(max_iter, "max_iter", ge=1)
    apply(model, "orthogonal", seed=seed)
    unconverged = []
    for name, m in weight_layers(model):
        seen: dict[str, Tensor] = {}
        handle = m.register_forward_hook(lambda mod, inp, out: seen.__setitem__("out", out.detach()))
        try:
            for _ in range(max_iter + 1):
                with torch.no_grad():
                    model(x)
                var = float(seen["out"].double().var())
                if not math.isfinite(var) or var == 0:
                    raise ValueError(f"lsuv: layer {name!r} has output variance {var} on x; "
                                     f"no rescaling gives it unit variance")
                if abs(var - 1.0) < tol:
                    break
                if _ == max_iter:
                    unconverged.append(f"{name} (variance {var:.4g})")
                    break
                with torch.no_grad():
                    m.weight.div_(math.sqrt(var))
        finally:
            handle.remove()
    if unconverged:
        warnings.warn(f"lsuv: {len(unconverged)} layer(s) not within tol={tol:g} of unit "
                      f"variance after max_iter={max_iter}: {', '.join(unconverged)}",
                      RuntimeWarning, stacklevel=2)
    return model


#: The fewest midpoint cells :func:`gaussian_moments` accepts (error ~1e-3 there).

def _scheme_table() -> str:
    rows = [f"* ``{s.name}``: :math:`\\operatorname{{Var}}[w] = {s.formula}`"
            + (f" (parameters: {', '.join(f'``{k}={v!r}``' for k, v in s.params.items())})"
               if s.params else "") for s in SCHEMES.values()]
    return "\n".join(rows)


apply.__doc__ = (apply.__doc__ or "") + "\n    Schemes:\n\n" + "\n".join(
    "    " + r for r in _scheme_table().splitlines()) + "\n"
