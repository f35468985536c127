"""Network builders with readable layer names.

:func:`mlp` builds the deep multilayer perceptrons every chapter experiments on:
a plain stack ``layer1 ... layerN`` (each ``Linear -> [norm] -> activation``), or,
with ``residual=True``, an input layer followed by residual blocks
``block1 ... blockN`` (each ``x + scale * Linear(act(norm(Linear(x))))``), and a
linear ``output`` layer. :func:`rnn` builds a small vanilla RNN for the
exploding-gradient story.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from lib import activations as _acts
from lib import init as _init
from lib import seeds as _seeds

__all__ = ["mlp", "MLP", "Layer", "ResidualBlock", "rnn", "VanillaRNN", "NORMS"]

NORMS = ("none", "batch", "layer")


def _norm(kind: str, width: int) -> nn.Module | None:
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    return None


class Layer(nn.Module):
    """``Linear -> [norm] -> activation``; submodules ``linear``, ``norm``, ``act``."""

    def __init__(self, fan_in: int, fan_out: int, act: nn.Module, norm: str = "none",
                 bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out, bias=bias)
        self.norm = _norm(norm, fan_out)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        z = self.linear(x)
        if self.norm is not None:
            z = self.norm(z)
        return self.act(z)


class ResidualBlock(nn.Module):
    """``x + scale * fc2(act(norm(fc1(x))))``: the skip path carries the gradient past the block."""

    def __init__(self, width: int, act: nn.Module, norm: str = "none", scale: float = 1.0,
                 bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width, bias=bias)
        self.norm = _norm(norm, width)
        self.act = act
        self.fc2 = nn.Linear(width, width, bias=bias)
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        if self.norm is not None:
            h = self.norm(h)
        return x + self.scale * self.fc2(self.act(h))


class MLP(nn.Sequential):
    """A sequential MLP whose hidden layers are named ``layer1..`` or ``block1..``."""

    def hidden(self) -> list[tuple[str, nn.Module]]:
        """The hidden layers/blocks, in order (not the output layer)."""
        return [(n, m) for n, m in self.named_children() if n != "output"]


def _check_int(name: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def mlp(depth: int, width: int, activation: str = "relu", *, init: str = "default",
        norm: str = "none", residual: bool = False, in_features: int = 64, out_features: int = 10,
        seed: int = 0, bias: bool = True, residual_scale: float = 1.0,
        zero_init_residual: bool = False, activation_params: dict[str, Any] | None = None,
        init_params: dict[str, Any] | None = None) -> MLP:
    """Build a deep MLP.

    Parameters
    ----------
    depth: number of hidden layers (plain) or residual blocks (``residual=True``).
    width: units per hidden layer.
    activation: a name from :func:`lib.activations.names`; ``activation_params`` set its parameters.
    init: a scheme from :func:`lib.init.schemes`, applied to every Linear layer
        (``init_params`` set its parameters, e.g. ``{"std": 0.1}`` for ``normal``).
    norm: ``"none"``, ``"batch"`` (BatchNorm1d) or ``"layer"`` (LayerNorm), after each hidden Linear.
    residual: residual blocks instead of plain layers (an input layer ``input`` comes first).
    residual_scale: multiplies each block's branch (e.g. ``1/sqrt(depth)``).
    zero_init_residual: start each block's last Linear at zero, so every block is the identity at init.
    seed: seeds the initialisation, so the same arguments give the same weights.
    """
    _check_int("depth", depth, 1)
    _check_int("width", width, 1)
    _check_int("in_features", in_features, 1)
    _check_int("out_features", out_features, 1)
    _check_int("seed", seed, 0)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
    if isinstance(residual_scale, bool) or not isinstance(residual_scale, (int, float)):
        raise TypeError(f"residual_scale must be a number, got {type(residual_scale).__name__}")
    act = _acts.get(activation, **(activation_params or {}))
    init_params = init_params or {}
    # Validate the init before building anything, so a bad name fails fast and clearly.
    _init.weight_variance(init, width, width, **init_params)

    # A private RNG stream: building a model never disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seeds.stream(seed, "mlp"))
        mods: "OrderedDict[str, nn.Module]" = OrderedDict()
        if residual:
            mods["input"] = Layer(in_features, width, act.module(), norm, bias)
            for i in range(1, depth + 1):
                mods[f"block{i}"] = ResidualBlock(width, act.module(), norm, residual_scale, bias)
        else:
            for i in range(1, depth + 1):
                mods[f"layer{i}"] = Layer(in_features if i == 1 else width, width, act.module(),
                                          norm, bias)
        mods["output"] = nn.Linear(width, out_features, bias=bias)
        model = MLP(mods)
    _init.apply(model, init, seed=seed, **init_params)
    if residual and zero_init_residual:
        with torch.no_grad():
            for _, m in model.hidden():
                if isinstance(m, ResidualBlock):
                    m.fc2.weight.zero_()
                    if m.fc2.bias is not None:
                        m.fc2.bias.zero_()
    return model


class VanillaRNN(nn.Module):
    """h_t = act(W h_{t-1} + U x_t): one recurrent matrix ``W`` applied at every step."""

    def __init__(self, hidden: int, in_features: int = 1, activation: str = "tanh") -> None:
        super().__init__()
        self.W = nn.Linear(hidden, hidden, bias=False)
        self.U = nn.Linear(in_features, hidden, bias=False)
        self.act = _acts.get(activation).module()
        self.hidden_size = hidden

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """``x``: (batch, time, in_features). Returns the last state and every state."""
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise ValueError("x must be a tensor of shape (batch, time, in_features)")
        h = h0 if h0 is not None else x.new_zeros(x.shape[0], self.hidden_size)
        states = []
        for t in range(x.shape[1]):
            h = self.act(self.W(h) + self.U(x[:, t]))
            states.append(h)
        return h, states


def rnn(hidden: int, *, spectral_radius: float = 1.0, in_features: int = 1,
        activation: str = "tanh", seed: int = 0) -> VanillaRNN:
    """A vanilla RNN whose recurrent matrix is a scaled random orthogonal matrix.

    Every eigenvalue of an orthogonal matrix has modulus 1, so after scaling the
    spectral radius is exactly ``spectral_radius``.
    """
    _check_int("hidden", hidden, 1)
    _check_int("in_features", in_features, 1)
    _check_int("seed", seed, 0)
    if not (isinstance(spectral_radius, (int, float)) and math.isfinite(spectral_radius)
            and spectral_radius >= 0):
        raise ValueError(f"spectral_radius must be a finite number >= 0, got {spectral_radius!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seeds.stream(seed, "rnn"))
        model = VanillaRNN(hidden, in_features, activation)
        with torch.no_grad():
            nn.init.orthogonal_(model.W.weight)
            model.W.weight.mul_(spectral_radius)
    return model
