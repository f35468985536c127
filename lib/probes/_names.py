"""Module paths for tables, and what a parameter is for (attention role, norm, embedding).

:func:`abbreviate` shortens dotted paths from the left, keeping each one
distinct from every other; :func:`role` classifies a parameter by its owner,
so that the diagnosis can treat attention's query/key projections, norm
layers' affine weights and embeddings by their own rules.
"""
from __future__ import annotations

import re
from typing import Sequence

from torch import nn

__all__ = ["abbreviate", "role", "is_norm", "NORM_TYPES", "QUERY_NAMES", "KEY_NAMES"]

NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                                nn.LocalResponseNorm, nn.RMSNorm)
#: Class names of other libraries' normalisation layers: Hugging Face's
#: ``LlamaRMSNorm``, ``T5LayerNorm``, ``MistralRMSNorm``..., apex's
#: ``FusedLayerNorm``, Keras-style ``LayerNormalization``.
_NORM_NAME = re.compile(r"(Norm|Normalization)(\d[dD])?$")


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer: one of :data:`NORM_TYPES`, or a
    leaf module whose class name ends in ``Norm`` (``LlamaRMSNorm``, ``T5LayerNorm``,
    ``FusedLayerNorm``...), as other libraries name theirs."""
    if isinstance(module, NORM_TYPES):
        return True
    return bool(_NORM_NAME.search(type(module).__name__)) and not any(
        True for _ in module.children())


#: Last path segments of the modules that compute attention queries and keys.
QUERY_NAMES = frozenset({"query", "q_proj", "q", "to_q", "wq", "q_lin", "query_proj"})
KEY_NAMES = frozenset({"key", "k_proj", "k", "to_k", "wk", "k_lin", "key_proj"})
#: Fused query/key/value projections: (last segment, number of chunks along the output).
FUSED_QKV = frozenset({"c_attn", "qkv", "in_proj", "Wqkv", "query_key_value"})


def abbreviate(names: Sequence[str], width: int) -> list[str]:
    """Each name shortened to at most ``width`` characters from the left, never ambiguously.

    A name that fits is kept. A longer one becomes ``'…'`` and its shortest
    trailing dotted path that no other name ends with, if that fits; else it
    is kept whole (an overlong cell beats an ambiguous one).
    """
    out = []
    for name in names:
        if len(name) <= width:
            out.append(name)
            continue
        parts = name.split(".")
        chosen = name
        for k in range(1, len(parts)):
            tail = ".".join(parts[-k:])
            clash = any(o != name and (o == tail or o.endswith("." + tail)) for o in names)
            if not clash and len(tail) + 1 <= width:
                # the longest unique tail that still fits reads best
                while k + 1 < len(parts) and len(".".join(parts[-k - 1:])) + 1 <= width:
                    k += 1
                chosen = "…" + ".".join(parts[-k:])
                break
        out.append(chosen)
    return out


def role(module_name: str, module: nn.Module, param_name: str) -> str:
    """What a parameter is: 'norm', 'embedding', 'query', 'key', 'qkv', 'recurrent',
    'bias', 'weight' or 'bare' (a parameter of a module that also has children,
    like a ViT's ``cls_token``)."""
    last = module_name.rsplit(".", 1)[-1]
    if is_norm(module):
        return "norm"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, nn.RNNBase):
        return "recurrent"
    if isinstance(module, nn.MultiheadAttention) and param_name.startswith("in_proj"):
        return "qkv" if param_name.endswith("weight") else "bias"
    if isinstance(module, nn.MultiheadAttention) and param_name in ("q_proj_weight",
                                                                     "k_proj_weight"):
        return "query" if param_name[0] == "q" else "key"
    if param_name.startswith("bias"):
        return "bias"
    if last in QUERY_NAMES:
        return "query"
    if last in KEY_NAMES:
        return "key"
    if last in FUSED_QKV:
        return "qkv"
    if any(True for _ in module.children()):
        return "bare"
    return "weight"
