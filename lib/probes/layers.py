"""Which modules a probe reports on, and how their parameters group into rows."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lib.activations import kinds as _kinds
from lib.probes._names import is_norm

__all__ = ["layer_modules", "weight_groups", "fan_in", "first_tensor", "unit_dim"]


def _is_layer(module: nn.Module) -> bool:
    own = [n for n, _ in module.named_parameters(recurse=False)]
    if not own or is_norm(module) or _kinds.kind_of_module(module) is not None:
        return False
    if isinstance(module, (nn.RNNBase, nn.MultiheadAttention)):
        return True
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


def fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.MultiheadAttention):
        return int(module.embed_dim)
    w = getattr(module, "weight", None)
    if isinstance(w, Tensor) and w.dim() >= 2:
        if type(module).__name__ == "Conv1D":  # Hugging Face's transposed Linear
            return int(w.shape[0])
        return int(w[0].numel())
    return 0


def first_tensor(x: Any) -> Tensor | None:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], Tensor):
        return x[0]
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
    weights = [n for n in own if "weight" in n] or list(own)
    return [("", weights)]
