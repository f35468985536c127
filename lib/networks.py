"""Network builders with readable layer names.

:func:`mlp` builds the deep multilayer perceptrons every chapter experiments on:
a plain stack ``layer1 ... layerN`` (each ``Linear -> [norm] -> activation``), or,
with ``residual=True``, an input layer followed by residual blocks
``block1 ... blockN`` (each ``x + scale * Linear(act(norm(Linear(x))))``), and a
linear ``output`` layer. :func:`rnn` builds a small vanilla RNN for the
exploding-gradient story.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from lib import activations as _acts
from lib import init as _init
from lib import seeds as _seeds
from lib._checks import check_bool, check_choice, check_int, check_number, check_seed

__all__ = ["mlp", "MLP", "Layer", "ResidualBlock", "rnn", "VanillaRNN", "NORMS"]

#: The normalisations :func:`mlp` can put after each hidden Linear layer.
NORMS = ("none", "batch", "layer")


def _norm(kind: str, width: int) -> nn.Module | None:
    check_choice(kind, "norm", NORMS)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    return None


def _check_act(act: Any) -> nn.Module:
    if not isinstance(act, nn.Module):
        raise TypeError(f"act must be an nn.Module (e.g. lib.activations.get('relu').module()), "
                        f"got {type(act).__name__}")
    return act


class Layer(nn.Module):
    r"""``Linear -> [norm] -> activation``; submodules ``linear``, ``norm``, ``act``.

    .. math:: a = f(\operatorname{norm}(W x + b))

    Args:
        fan_in, fan_out: the Linear layer's sizes (ints >= 1).
        act: the activation module :math:`f`.
        norm: one of :data:`NORMS`.
        bias: give the Linear layer a bias.

    Shape:
        input ``(N, fan_in)``, output ``(N, fan_out)``.
    """

    def __init__(self, fan_in: int, fan_out: int, act: nn.Module, norm: str = "none",
                 bias: bool = True) -> None:
        check_int(fan_in, "fan_in", ge=1)
        check_int(fan_out, "fan_out", ge=1)
        _check_act(act)
        check_choice(norm, "norm", NORMS)
        check_bool(bias, "bias")
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
    r"""A residual block: the skip path carries the gradient past the branch.

    .. math:: y = x + s\, W_2\, f(\operatorname{norm}(W_1 x + b_1)) + s\, b_2

    Args:
        width: the block's width (an int >= 1); input and output have it.
        act: the activation module :math:`f`.
        norm: one of :data:`NORMS`.
        scale: :math:`s`, a finite real number (e.g. ``1/sqrt(depth)``).
        bias: give both Linear layers a bias.

    Shape:
        input and output ``(N, width)``.
    """

    def __init__(self, width: int, act: nn.Module, norm: str = "none", scale: float = 1.0,
                 bias: bool = True) -> None:
        check_int(width, "width", ge=1)
        _check_act(act)
        check_choice(norm, "norm", NORMS)
        scale = check_number(scale, "scale")
        check_bool(bias, "bias")
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
        (``init_params`` set its parameters, e.g. ``{"std": 0.1}`` for ``normal``;
        ``{"nonlinearity": "auto"}`` gives the ``he`` family this network's own
        activation's gain, :func:`lib.init.gain`, instead of ReLU's).
    norm: ``"none"``, ``"batch"`` (BatchNorm1d) or ``"layer"`` (LayerNorm), after each hidden Linear.
    residual: residual blocks instead of plain layers (an input layer ``input`` comes first).
    residual_scale: multiplies each block's branch (e.g. ``1/sqrt(depth)``).
    zero_init_residual: start each block's last Linear at zero, so every block is the identity at init.
    seed: seeds the initialisation, so the same arguments give the same weights.
    bias: give every Linear layer a bias (a bool: ``'no'`` would be truthy).

    Shape:
        input ``(N, in_features)``, output ``(N, out_features)``.
    """
    depth = check_int(depth, "depth", ge=1)
    width = check_int(width, "width", ge=1)
    in_features = check_int(in_features, "in_features", ge=1)
    out_features = check_int(out_features, "out_features", ge=1)
    seed = check_seed(seed)
    check_choice(norm, "norm", NORMS)
    check_bool(residual, "residual")
    check_bool(bias, "bias")
    check_bool(zero_init_residual, "zero_init_residual")
    residual_scale = check_number(residual_scale, "residual_scale")
    act = _acts.get(activation, **(activation_params or {}))
    init_params = dict(init_params or {})
    if init_params.get("nonlinearity") == "auto":
        init_params.pop("nonlinearity")
        init_params["gain"] = _init.gain(act.name, **{k: v for k, v in act.params.items()
                                                      if k != "num_parameters"})
    # Validate the init before building anything, so a bad name fails fast and clearly.
    _init.weight_variance(init, width, width, **init_params)

    # The constructors draw PyTorch's default init from the global generator;
    # init.apply below redraws every weight and bias from a private generator,
    # so those draws are discarded and fork_rng (CPU only, never reseeded)
    # just hands the caller back their random state untouched.
    with torch.random.fork_rng(devices=[]):
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
    r"""A vanilla RNN: one recurrent matrix ``W`` applied at every step.

    .. math:: h_t = f(W h_{t-1} + U x_t), \qquad h_0 = 0

    Args:
        hidden: the state size (an int >= 1).
        in_features: the input size per step (an int >= 1).
        activation: a name from :func:`lib.activations.names`.

    Shape:
        input ``(N, T, in_features)``; returns the last state ``(N, hidden)`` and
        the list of the ``T`` states.
    """

    def __init__(self, hidden: int, in_features: int = 1, activation: str = "tanh") -> None:
        check_int(hidden, "hidden", ge=1)
        check_int(in_features, "in_features", ge=1)
        super().__init__()
        self.W = nn.Linear(hidden, hidden, bias=False)
        self.U = nn.Linear(in_features, hidden, bias=False)
        self.act = _acts.get(activation).module()
        self.hidden_size = hidden

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """``x``: (batch, time, in_features). Returns the last state and every state."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[2] != self.U.in_features:
            raise ValueError(f"x must be a tensor of shape (batch, time, {self.U.in_features}), "
                             f"got {tuple(x.shape)}")
        if x.dtype != self.W.weight.dtype:
            raise TypeError(f"x must have the model's dtype {self.W.weight.dtype}, got {x.dtype}")
        if h0 is not None and (not isinstance(h0, Tensor)
                               or tuple(h0.shape) != (x.shape[0], self.hidden_size)):
            raise ValueError(f"h0 must be a tensor of shape ({x.shape[0]}, {self.hidden_size}), "
                             f"got {getattr(h0, 'shape', type(h0).__name__)}")
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
    check_int(hidden, "hidden", ge=1)
    check_int(in_features, "in_features", ge=1)
    seed = check_seed(seed)
    spectral_radius = check_number(spectral_radius, "spectral_radius", ge=0)
    with torch.random.fork_rng(devices=[]):  # the constructor's draws are discarded
        model = VanillaRNN(hidden, in_features, activation)
    # A private generator, drawn in the order the constructor would draw
    # (W, then U, then W's orthogonal matrix), so that the weights equal those
    # of earlier versions that seeded the global generator instead.
    g = torch.Generator().manual_seed(_seeds.stream(seed, "rnn"))
    with torch.no_grad():
        nn.init.kaiming_uniform_(torch.empty_like(model.W.weight), a=5 ** 0.5, generator=g)
        nn.init.kaiming_uniform_(model.U.weight, a=5 ** 0.5, generator=g)
        nn.init.orthogonal_(model.W.weight, generator=g)
        model.W.weight.mul_(spectral_radius)
    return model
