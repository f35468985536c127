"""The book's base seed, and independent random streams derived from it.

One number seeds the whole book: :func:`base_seed` returns it (default
:data:`DEFAULT_BASE_SEED`; the environment variable ``GF_SEED`` overrides it
for every chapter at once). Chapters never type a seed: they ask for
``seeds.base_seed()`` or for a population of member seeds with
:func:`member_seeds`, so that ``GF_SEED=7 make book`` reruns every experiment
on fresh draws and every assert must still hold.

Every lib function that draws random numbers takes a ``seed``. Seeding torch's
generator with that number directly would make different draws coincide:
``torch.manual_seed(0); x = torch.randn(64, 64)`` followed by
``networks.mlp(..., init="normal", seed=0)`` would give a first layer whose
weights *are* the inputs, scaled. :func:`stream` maps (seed, purpose) to a
63-bit seed by hashing, so the weights of a model, the split of a data set and
the batches of a training run are unrelated to each other and to anything the
reader draws with the same small integer, yet every one of them is
reproducible.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Iterator

from lib._checks import SEED_MAX

__all__ = ["DEFAULT_BASE_SEED", "ENV_VAR", "base_seed", "member_seeds", "stream",
           "torch_seeded"]

#: The base seed of the default build (the one whose figures are published).
DEFAULT_BASE_SEED = 0
#: The environment variable that overrides the base seed for every chapter.
ENV_VAR = "GF_SEED"


def _check_seed(seed: object, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        # numpy integers are accepted: they are exact integers.
        try:
            import numpy as np
            if isinstance(seed, np.integer):
                return int(seed)
        except ImportError:  # pragma: no cover - numpy is a dependency
            pass
        raise TypeError(f"{name} must be an int, got {type(seed).__name__}")
    return seed


def base_seed() -> int:
    """The book's base seed: ``GF_SEED`` if set, else :data:`DEFAULT_BASE_SEED`.

    Raises:
        ValueError: if ``GF_SEED`` is set but is not a non-negative integer.
    """
    raw = os.environ.get(ENV_VAR)
    if raw is None or raw.strip() == "":
        return DEFAULT_BASE_SEED
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(
            f"{ENV_VAR} must be a non-negative integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{ENV_VAR} must be a non-negative integer, got {raw!r}")
    return value


def member_seeds(n: int, purpose: str, base: int | None = None) -> list[int]:
    """``n`` independent seeds for the members of a seed population.

    Members are numbered ``0 .. n-1`` and member ``i``'s seed depends only on
    ``(base, purpose, i)``, so adding members never changes the first ones.

    Args:
        n: how many seeds (at least 1).
        purpose: what the population is for, e.g. ``"ch3-activations"``; two
            experiments with different purposes get unrelated seeds.
        base: the base seed; default :func:`base_seed`.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    base = base_seed() if base is None else _check_seed(base, "base")
    return [stream(base, f"{purpose}#{i}") % (2**31) for i in range(n)]


def stream(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` (e.g. ``"mlp"``), derived from ``seed``."""
    seed = _check_seed(seed)
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"purpose must be a non-empty str, got {purpose!r}")
    digest = hashlib.blake2b(f"gradient-flow:{purpose}:{seed}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def torch_seeded(seed: int) -> Iterator[None]:
    """Run a block on torch's global CPU generator seeded with ``seed``, then restore it.

    For code that can only draw from the global generator (a module's own
    constructor, dropout noise): the caller's random state comes back
    unchanged afterwards, and only the CPU generator is touched -- unlike
    ``torch.manual_seed``, which would also reseed every CUDA device.
    """
    import torch

    seed = _check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed % (SEED_MAX + 1))  # torch takes 64 bits
        yield
