"""Transformers around PyTorch's ``nn.TransformerEncoderLayer``, many seeds at once."""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from lib import seeds as _seeds
from lib.architectures._common import _int, _seed_list

__all__ = ["transformer", "TokenTransformer", "TransformerPopulation"]


class TokenTransformer(nn.Module):
    """Token embedding + learned positions, ``nn.TransformerEncoder`` of
    PyTorch's ``nn.TransformerEncoderLayer``, a linear read-out per position.

    ``norm_first=False`` is the original post-LN transformer
    (:math:`x \\leftarrow \\mathrm{LN}(x + F(x))`), ``True`` pre-LN
    (:math:`x \\leftarrow x + F(\\mathrm{LN}(x))`, plus a final LayerNorm).
    Dropout is 0, so training mode is deterministic.

    Shape: input ``(B, S)`` int64 tokens; output ``(B, S, vocab)``.
    """

    def __init__(self, vocab: int, length: int, d_model: int, nhead: int,
                 layers: int, norm_first: bool, dim_feedforward: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(length, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True,
            norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(d_model) if norm_first else None,
            enable_nested_tensor=False)
        self.readout = nn.Linear(d_model, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.readout(self.encoder(self.embed(tokens) + self.pos))

    def layer_grad_norms(self) -> Tensor:
        """Gradient norm of each encoder layer's parameters, input to output."""
        out = []
        for layer in self.encoder.layers:
            sq = sum(float(p.grad.pow(2).sum()) for p in layer.parameters()
                     if p.grad is not None)
            out.append(math.sqrt(sq))
        return torch.tensor(out)


def transformer(*, vocab: int = 10, length: int = 8, d_model: int = 16,
                nhead: int = 2, layers: int = 4, norm_first: bool = False,
                dim_feedforward: int | None = None, seed: int = 0
                ) -> TokenTransformer:
    """A seeded :class:`TokenTransformer` (PyTorch's default initialisation,
    drawn from ``seed``'s own stream).

    Examples:
        >>> net = transformer(layers=2, norm_first=True, seed=0)
        >>> net(torch.zeros(3, 8, dtype=torch.long)).shape
        torch.Size([3, 8, 10])
    """
    for name, v, lo in (("vocab", vocab, 2), ("length", length, 1),
                        ("d_model", d_model, 1), ("nhead", nhead, 1),
                        ("layers", layers, 1)):
        _int(name, v, lo)
    if d_model % nhead:
        raise ValueError(f"d_model ({d_model}) must be divisible by nhead "
                         f"({nhead})")
    if not isinstance(norm_first, bool):
        raise TypeError(f"norm_first must be a bool, got "
                        f"{type(norm_first).__name__}")
    ff = 2 * d_model if dim_feedforward is None else \
        _int("dim_feedforward", dim_feedforward, 1)
    _seed_list([seed], 1)
    with _seeds.torch_seeded(_seeds.stream(seed, "transformer")):
        net = TokenTransformer(vocab, length, d_model, nhead, layers,
                               norm_first, ff)
        nn.init.normal_(net.pos, std=0.02)
    return net


class TransformerPopulation:
    """Several :class:`TokenTransformer` s of one shape as one vmapped model.

    ``params`` holds every parameter stacked along a new first axis (one entry
    per member, leaf tensors ready for ``torch.optim``); :meth:`__call__` runs
    all members on the same batch. Adam is elementwise, so one
    ``torch.optim.Adam`` over the stacked tensors trains each member exactly as
    its own optimiser would.

    Shape: input ``(B, S)``; output ``(members, B, S, vocab)``.
    """

    def __init__(self, models: list[TokenTransformer]) -> None:
        if not models or not all(isinstance(m, TokenTransformer)
                                 for m in models):
            raise TypeError("models must be a non-empty list of "
                            "TokenTransformer")
        from torch.func import stack_module_state

        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().clone().requires_grad_()
                       for k, v in params.items()}
        self.buffers = buffers
        self.members = len(models)
        self._base = copy.deepcopy(models[0]).to("meta")
        self.layers = len(models[0].encoder.layers)

    def __call__(self, tokens: Tensor) -> Tensor:
        from torch.func import functional_call, vmap
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def one(p: dict, b: dict, x: Tensor) -> Tensor:
            return functional_call(self._base, (p, b), (x,))

        with sdpa_kernel(SDPBackend.MATH):
            return vmap(one, in_dims=(0, 0, None))(self.params, self.buffers,
                                                   tokens)

    def layer_grad_norms(self) -> Tensor:
        """Per-member gradient norm of each encoder layer, ``(members, L)``."""
        out = torch.zeros(self.members, self.layers)
        for k, p in self.params.items():
            if k.startswith("encoder.layers.") and p.grad is not None:
                l = int(k.split(".")[2])
                out[:, l] += p.grad.view(self.members, -1).pow(2).sum(1)
        return out.sqrt()


