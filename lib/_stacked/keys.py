"""Which models :mod:`lib._stacked` can stack: structure signatures and group keys.

Two models share a group (one stacked tensor per parameter) exactly when their
:func:`group_key` is equal; :func:`_mlp_ok` says whether a group takes the
hand-written stacked forward of :class:`lib.networks.MLP`.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from lib import activations as _acts
from lib import networks as _networks

_RANDOM = (nn.RReLU, nn.Dropout, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Dropout1d)
_ELEMENTWISE = tuple(c for c in _acts.ACTIVATION_MODULES if c not in (nn.PReLU, nn.RReLU))


def _scalars(m: nn.Module) -> tuple[Any, ...]:
    return tuple(sorted((k, v) for k, v in vars(m).items() if not k.startswith("_")
                        and isinstance(v, (bool, int, float, str, tuple))))


def _tensors(model: nn.Module) -> tuple[Any, ...]:
    return tuple((n, tuple(t.shape), t.dtype, t.requires_grad if isinstance(t, nn.Parameter)
                  else None) for n, t in [*model.named_parameters(), *model.named_buffers()])


def signature(model: nn.Module) -> tuple[Any, ...]:
    """What two models must share to be stacked: module types, settings, tensor shapes."""
    mods = tuple((n, type(m), _scalars(m)) for n, m in model.named_modules())
    return mods, _tensors(model)


def _act_key(m: nn.Module) -> tuple[Any, ...]:
    return type(m), _scalars(m)


def group_key(model: nn.Module) -> tuple[Any, ...]:
    """The stacking key: :func:`signature`, except that for the fast path the
    (parameter-free, elementwise) activations may differ between members:
    they are applied to contiguous runs of the stack."""
    if not _mlp_ok(model):
        return ("module",) + signature(model)
    mods = tuple((n, "activation") if isinstance(m, _ELEMENTWISE)
                 else (n, type(m), _scalars(m)) for n, m in model.named_modules())
    return ("mlp",) + (mods, _tensors(model))


def _acts_of(model: nn.Module) -> tuple[Any, ...]:
    return tuple(_act_key(m) for m in model.modules() if isinstance(m, _ELEMENTWISE))


def _mlp_ok(model: nn.Module) -> bool:
    """True if the hand-written stacked forward reproduces ``model`` exactly."""
    if not isinstance(model, _networks.MLP) or not isinstance(getattr(model, "output", None),
                                                              nn.Linear):
        return False
    for _, mod in model.hidden():
        if not isinstance(mod, (_networks.Layer, _networks.ResidualBlock)):
            return False
        if not isinstance(mod.act, _ELEMENTWISE + (nn.PReLU, nn.RReLU)):
            return False
        if isinstance(mod.norm, nn.BatchNorm1d) and mod.norm.momentum is None:
            return False
        if mod.norm is not None and not isinstance(mod.norm, (nn.BatchNorm1d, nn.LayerNorm)):
            return False
    return all(p.requires_grad for p in model.parameters())


