"""Independent random streams from one user-facing seed.

Every lib function that draws random numbers takes a ``seed``. Seeding torch's
generator with that number directly would make different draws coincide:
``torch.manual_seed(0); x = torch.randn(64, 64)`` followed by
``networks.mlp(..., init="normal", seed=0)`` would give a first layer whose
weights *are* the inputs, scaled. :func:`stream` maps (seed, purpose) to a
64-bit seed by hashing, so the weights of a model, the split of a data set and
the batches of a training run are unrelated to each other and to anything the
reader draws with the same small integer, yet every one of them is reproducible.
"""
from __future__ import annotations

import hashlib

__all__ = ["stream"]


def stream(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` (e.g. ``"mlp"``), derived from the user's ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"purpose must be a non-empty str, got {purpose!r}")
    digest = hashlib.blake2b(f"gradient-flow:{purpose}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
