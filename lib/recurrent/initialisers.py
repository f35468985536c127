"""Initialisers of recurrent nets: IRNN, orthogonal, forget-gate bias (see :mod:`lib.recurrent`)."""
from __future__ import annotations

import torch
from torch import nn

from lib import _checks
from lib import seeds as _seeds

__all__ = ["irnn_", "orthogonal_", "set_forget_bias_"]


def _seeded(seed: int, purpose: str) -> torch.Generator:
    return torch.Generator().manual_seed(_seeds.stream(_checks.check_seed(seed), purpose))


def irnn_(module: nn.Module, *, scale: float = 1.0, input_std: float = 1e-3,
          seed: int = 0) -> nn.Module:
    """The IRNN of Le, Jaitly & Hinton (2015): a ReLU RNN started at the identity.

    .. math::

        W_{hh} = s I, \\quad b = 0, \\quad (W_{ih})_{ij} \\sim \\mathcal N(0, \\sigma^2),

    so at initialisation every step copies the state and adds the input:
    :math:`J_t = \\operatorname{diag}(\\mathbb 1[a_t > 0])\\, s I` and the
    gradient through time neither shrinks nor grows while units are active.

    Args:
        module: ``nn.RNN(nonlinearity="relu")`` (every layer) or a ReLU ``nn.RNNCell``.
        scale: :math:`s`. input_std: :math:`\\sigma`. seed: for :math:`W_{ih}`.
    """
    relu = (isinstance(module, nn.RNN) and module.mode == "RNN_RELU") or (
        isinstance(module, nn.RNNCell) and module.nonlinearity == "relu")
    if not relu:
        raise TypeError("irnn_ needs a ReLU nn.RNN or nn.RNNCell (nonlinearity='relu'), got "
                        f"{type(module).__name__}; for tanh use orthogonal_")
    s = _checks.check_number(scale, "scale", ge=0.0)
    std = _checks.check_number(input_std, "input_std", ge=0.0)
    g = _seeded(seed, "irnn")
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "weight_hh" in name:
                p.copy_(s * torch.eye(p.shape[0]))
            elif "weight_ih" in name:
                p.copy_(std * torch.randn(p.shape, generator=g))
            else:
                p.zero_()
    return module


def orthogonal_(module: nn.Module, *, gain: float = 1.0, seed: int = 0) -> nn.Module:
    """Random orthogonal recurrent matrices (Saxe et al. 2014; Henaff et al. 2016).

    Every layer's :math:`W_{hh}` (each gate's ``(H, H)`` block, for LSTM and
    GRU) becomes ``gain`` times a Haar-random orthogonal matrix, so every
    singular value, and the spectral radius, equals ``gain``. Other weights
    keep PyTorch's initialisation.
    """
    if not isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        raise TypeError(f"module must be nn.RNN/LSTM/GRU or a cell, got "
                        f"{type(module).__name__}")
    gain = _checks.check_number(gain, "gain", ge=0.0)
    g = _seeded(seed, "orthogonal")
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "weight_hh" not in name:
                continue
            cols = p.shape[1]
            for block in p.split(cols, 0) if p.shape[0] % cols == 0 else [p]:
                q, r = torch.linalg.qr(torch.randn(block.shape[0], cols, generator=g))
                block.copy_(gain * q * torch.sign(torch.diagonal(r)))  # Haar measure
    return module


def set_forget_bias_(module: nn.Module, value: float) -> nn.Module:
    """Set an LSTM's forget-gate bias, :math:`b_f = b_{ih,f} + b_{hh,f} =` ``value``.

    PyTorch draws both halves from :math:`U(-1/\\sqrt H, 1/\\sqrt H)`, so
    :math:`b_f \\approx 0` and the cell keeps :math:`\\sigma(0) = 1/2` of itself
    per step; Gers et al. (2000) and Jozefowicz et al. (2015) recommend
    :math:`b_f = 1` (:math:`\\sigma(1) \\approx 0.73`); larger values keep more.
    Sets ``bias_ih``'s forget slice to ``value`` and ``bias_hh``'s to 0, in every layer.
    """
    if not isinstance(module, (nn.LSTM, nn.LSTMCell)):
        raise TypeError(f"set_forget_bias_ needs nn.LSTM or nn.LSTMCell, got "
                        f"{type(module).__name__} (a GRU has no forget gate)")
    if not module.bias:
        raise ValueError("the LSTM was built with bias=False: there is no forget bias to set")
    v = _checks.check_number(value, "value")
    h = module.hidden_size
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("bias_ih"):
                p[h:2 * h] = v
            elif name.startswith("bias_hh"):
                p[h:2 * h] = 0.0
    return module
