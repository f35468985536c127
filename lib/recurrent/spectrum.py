"""The recurrent Jacobian's spectrum and the decay rate it predicts (see :mod:`lib.recurrent`)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from lib import _checks
from lib import networks as _networks
from lib.recurrent.gradients import _check_rnnbase

__all__ = ["GAMMA", "recurrent_matrices", "spectral_radius", "max_singular_value",
           "pascanu_factor", "step_jacobians", "predicted_rate"]

#: The bound :math:`\gamma \ge |f'|` of each activation (Pascanu et al. 2013).
GAMMA = {"tanh": 1.0, "relu": 1.0, "identity": 1.0, "sigmoid": 0.25}


def recurrent_matrices(module: nn.Module) -> list[Tensor]:
    """The recurrent weight :math:`W_{hh}` of every layer, detached.

    ``nn.RNN``/``RNNCell``: ``(H, H)``; ``nn.LSTM``: ``(4H, P)``, gates
    ``i, f, g, o`` stacked (``P`` = ``proj_size`` or ``H``); ``nn.GRU``:
    ``(3H, H)``, gates ``r, z, n``; :class:`lib.networks.VanillaRNN`: ``W``.
    """
    if isinstance(module, nn.RNNBase):
        _check_rnnbase(module)
        return [getattr(module, f"weight_hh_l{k}").detach() for k in range(module.num_layers)]
    if isinstance(module, nn.RNNCellBase):
        return [module.weight_hh.detach()]
    if isinstance(module, _networks.VanillaRNN):
        return [module.W.weight.detach()]
    raise TypeError(f"module must be nn.RNN/LSTM/GRU, a cell or VanillaRNN, got "
                    f"{type(module).__name__}")


def _square(w: Any, name: str) -> Tensor:
    if not isinstance(w, Tensor) or w.dim() != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"{name} must be a square matrix (a 2-d tensor), got "
                         f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}")
    return w.detach().double()


def spectral_radius(w: Tensor) -> float:
    """:math:`\\rho(W) = \\max_i |\\lambda_i(W)|` of a square matrix."""
    return float(torch.linalg.eigvals(_square(w, "w")).abs().max())


def max_singular_value(w: Tensor) -> float:
    """:math:`\\lambda_1 = \\lVert W \\rVert_2`, the largest singular value."""
    return float(torch.linalg.matrix_norm(_square(w, "w"), ord=2))


def pascanu_factor(w: Tensor, activation: str = "tanh") -> float:
    """:math:`\\lambda_1 \\gamma`, the bound on every step's :math:`\\lVert J_t\\rVert`.

    Below 1 the gradient through time *must* vanish (sufficient condition); it
    can explode only if this is above 1 (necessary condition): Pascanu,
    Mikolov & Bengio (2013), with :math:`\\gamma` from :data:`GAMMA`.
    """
    _checks.check_choice(activation, "activation", tuple(GAMMA))
    return max_singular_value(w) * GAMMA[activation]


def _rnn_parts(module: nn.Module) -> tuple[Tensor, Callable[[Tensor], Tensor],
                                           Callable[[Tensor, Tensor], Tensor], bool]:
    """(W_hh, activation, input drive x_t -> W_ih x_t + b, batch_first) of a simple RNN."""
    if isinstance(module, nn.RNN):
        _check_rnnbase(module)
        if module.num_layers != 1:
            raise ValueError("step_jacobians needs a single-layer nn.RNN, got "
                             f"num_layers={module.num_layers}")
        act = torch.tanh if module.mode == "RNN_TANH" else torch.relu
        bias = (module.bias_ih_l0 + module.bias_hh_l0) if module.bias else 0.0

        def drive(x: Tensor, _w: Tensor = module.weight_ih_l0) -> Tensor:
            return x @ _w.T + bias
        return module.weight_hh_l0, act, drive, module.batch_first
    if isinstance(module, nn.RNNCell):
        act = torch.tanh if module.nonlinearity == "tanh" else torch.relu
        bias = (module.bias_ih + module.bias_hh) if module.bias else 0.0
        return module.weight_hh, act, lambda x: x @ module.weight_ih.T + bias, True
    if isinstance(module, _networks.VanillaRNN):
        return module.W.weight, module.act, module.U, True
    raise TypeError("step_jacobians needs a single-layer nn.RNN, nn.RNNCell or VanillaRNN, "
                    f"got {type(module).__name__} (gated cells: use hidden_gradients)")


def step_jacobians(module: nn.Module, x: Tensor, h0: Tensor | None = None) -> Tensor:
    """Every step's Jacobian :math:`J_t = \\partial h_t/\\partial h_{t-1}
    = \\operatorname{diag}(f'(a_t))\\,W_{hh}` of a simple RNN on input ``x``.

    Args:
        module: a single-layer unidirectional ``nn.RNN``, ``nn.RNNCell`` or
            :class:`lib.networks.VanillaRNN`.
        x: ``(batch, T, features)`` (``(T, batch, features)`` for an
            ``nn.RNN`` with ``batch_first=False``).
        h0: initial state ``(batch, H)``, default zeros.

    Shape:
        output: ``(T, batch, H, H)``.
    """
    w, act, drive, batch_first = _rnn_parts(module)
    _checks.check_tensor(x, "x", dtype="floating")
    if x.dim() != 3:
        raise ValueError(f"x must be 3-d (batch, time, features), got shape {tuple(x.shape)}")
    xs = x if batch_first else x.transpose(0, 1)
    with torch.no_grad():
        w = w.detach()
        h = h0 if h0 is not None else xs.new_zeros(xs.shape[0], w.shape[0])
        pre = []
        for t in range(xs.shape[1]):
            a = drive(xs[:, t]) + h @ w.T
            pre.append(a)
            h = act(a)
        a = torch.stack(pre, 0)
    with torch.enable_grad():
        a = a.detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(act(a).sum(), a)  # f'(a), elementwise
    return slope.unsqueeze(-1) * w  # diag(f') W, broadcast over (T, batch)


def predicted_rate(jacobians: Tensor, method: str = "mean") -> float:
    """The per-step decay factor of the gradient through time, from the Jacobians.

    * ``"mean"``: :math:`\\rho(\\bar J)`, the spectral radius of the average
      Jacobian :math:`\\bar J = \\operatorname{diag}(\\overline{f'})\\,W`
      over steps and sequences: exact when every :math:`J_t` is the same
      (e.g. a linear RNN, where it is :math:`\\rho(W)`);
    * ``"norm"``: the geometric mean of :math:`\\lVert J_t\\rVert_2`, an
      upper bound of the true rate.

    Shape:
        jacobians: ``(..., H, H)``, as :func:`step_jacobians` returns.
    """
    _checks.check_choice(method, "method", ("mean", "norm"))
    _checks.check_tensor(jacobians, "jacobians", dtype="floating")
    if jacobians.dim() < 2 or jacobians.shape[-1] != jacobians.shape[-2]:
        raise ValueError("jacobians must end in two equal dimensions (H, H)")
    j = jacobians.detach().double().reshape(-1, *jacobians.shape[-2:])
    if method == "mean":
        return spectral_radius(j.mean(0))
    return float(torch.linalg.matrix_norm(j, ord=2).clamp_min(1e-300).log().mean().exp())
