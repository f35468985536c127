"""Which modules a probe reports on, and how their parameters group into rows."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from lib.activations import kinds as _kinds
from lib.probes._names import is_norm

__all__ = ["layer_modules", "weight_groups", "fan_in", "first_tensor", "unit_dim",
           "own_parameters", "check_acyclic", "plain_weight", "fits", "tensor_version",
           "normalises"]


def own_parameters(module: nn.Module) -> dict[str, Tensor]:
    """A layer's parameters by name: its own, and for a tensor it computes through
    ``torch.nn.utils.parametrize`` (``weight_norm``, ``spectral_norm``,
    ``orthogonal``) the originals the optimiser updates, named
    ``parametrizations.weight.original0`` and so on."""
    own = dict(module.named_parameters(recurse=False))
    if parametrize.is_parametrized(module):
        for name, plist in module.parametrizations.items():
            for pn, p in plist.named_parameters(recurse=False):
                own[f"parametrizations.{name}.{pn}"] = p
    return own


def _is_layer(module: nn.Module) -> bool:
    if isinstance(module, parametrize.ParametrizationList):
        return False
    if not own_parameters(module) or is_norm(module) \
            or _kinds.kind_of_module(module) is not None:
        return False
    if isinstance(module, (nn.RNNBase, nn.MultiheadAttention)):
        return True
    if parametrize.is_parametrized(module):
        return all(n == "parametrizations" for n, _ in module.named_children())
    return not any(True for _ in module.children())


def layer_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs a probe reports on, in registration order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if _is_layer(m)]


def unit_dim(layer: nn.Module | None, t: Tensor) -> int:
    """The dimension of ``t`` (a layer's output, or the activation of it) that indexes units.

    A convolution's units are its channels, before the spatial dimensions:
    dimension 1 of ``(N, C, *spatial)``, 0 of an unbatched ``(C, *spatial)``.
    Every other layer's (Linear, Hugging Face's Conv1D, an embedding, an RNN,
    attention) are its output features, the last dimension, whatever comes
    before it: ``(N, features)``, a transformer's ``(N, sequence, features)``
    or an unbatched ``(features,)``. A convolution's output that reaches the
    activation in another layout (permuted channels-last) is read along its
    last dimension, unless dimension 1 happens to have ``out_channels``
    entries too.
    """
    if isinstance(layer, nn.modules.conv._ConvNd):
        d = t.dim() - 1 - len(layer.kernel_size)
        if d >= 0 and t.shape[d] == layer.out_channels:
            return d
    return max(t.dim() - 1, 0)


def plain_weight(module: nn.Module) -> Tensor | None:
    """``module.weight`` if it is a stored tensor; None if there is none or a
    parametrisation computes it (reading it would compute it again, and run
    ``spectral_norm``'s power iteration, changing the model)."""
    if parametrize.is_parametrized(module, "weight"):
        return None
    w = getattr(module, "weight", None)
    return w if isinstance(w, Tensor) else None


def fan_in(module: nn.Module, weight: Tensor | None = None) -> int:
    """The layer's fan-in, from ``weight`` (default: its stored weight)."""
    if isinstance(module, nn.MultiheadAttention):
        return int(module.embed_dim)
    w = weight if weight is not None else plain_weight(module)
    if isinstance(w, Tensor) and w.dim() >= 2:
        if type(module).__name__ == "Conv1D":  # Hugging Face's transposed Linear
            return int(w.shape[0])
        return int(w[0].numel())
    return 0


def first_tensor(x: Any) -> Tensor | None:
    """A module's output tensor: itself, a tuple's first element (``nn.LSTM``'s
    ``(output, state)``), a ``PackedSequence``'s data, or ``last_hidden_state``."""
    if isinstance(x, (tuple, list)) and x and not isinstance(x, PackedSequence):
        x = x[0]
    if isinstance(x, PackedSequence):
        return x.data
    if isinstance(x, Tensor):
        return x
    return getattr(x, "last_hidden_state", None) if hasattr(x, "last_hidden_state") else None


def weight_groups(module: nn.Module, own: dict[str, Tensor]) -> list[tuple[str, list[str]]]:
    """Rows of one layer: ('', [its weight]) or, for an RNN, one per layer and direction."""
    if isinstance(module, nn.RNNBase):
        groups = []
        for layer in range(module.num_layers):
            for sfx in ([""] + (["_reverse"] if module.bidirectional else [])):
                tag = f"l{layer}{sfx}"
                names = [n for n in own if n.endswith(tag) and n.startswith("weight")]
                groups.append((f"[{tag}]", names))
        return groups
    if "weight" in own:
        return [("", ["weight"])]
    if any(n.startswith("parametrizations.weight.") for n in own):  # a parametrised weight
        return [("", [n for n in own if n.startswith("parametrizations.weight.")])]
    weights = [n for n in own if "weight" in n] or list(own)
    return [("", weights)]


def check_acyclic(model: nn.Module) -> None:
    """Refuse a module that contains itself (``m.add_module('me', m)``): every walk
    over its submodules with repeats, as the aliases of tied weights need, would recurse."""
    path: set[int] = set()

    def walk(m: nn.Module, name: str) -> None:
        path.add(id(m))
        for child_name, child in m.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if id(child) in path:
                raise ValueError(f"model contains itself: its submodule {full!r} is one of "
                                 f"its own ancestors")
            walk(child, full)
        path.discard(id(m))

    walk(model, "")


def fits(layer: nn.Module, z: Tensor) -> bool:
    """Whether ``z`` can be the activation of ``layer``'s units: as many channels (a
    conv) or features as it has. ``relu(cat([a(x), b(x)]))`` is neither a's nor b's."""
    units = getattr(layer, "out_channels", None) if isinstance(
        layer, nn.modules.conv._ConvNd) else getattr(layer, "out_features", None)
    if not isinstance(units, int) or z.dim() == 0:
        return True
    return z.shape[unit_dim(layer, z)] == units


def tensor_version(t: Tensor) -> int | None:
    """``t``'s in-place version counter (None for an inference tensor, which has none)."""
    try:
        return t._version
    except RuntimeError:
        return None


def normalises(norm: nn.Module) -> bool:
    """Whether ``norm`` divides by the statistics of its input (so the layer before it is
    scale-invariant): not a BatchNorm/InstanceNorm in eval mode using running statistics,
    which is a fixed affine map."""
    running = isinstance(norm, (nn.modules.batchnorm._BatchNorm,
                                nn.modules.instancenorm._InstanceNorm))
    return not (running and not norm.training and norm.track_running_stats
                and getattr(norm, "running_var", None) is not None)
