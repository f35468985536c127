"""Argument checks shared by the architecture builders (private)."""
from __future__ import annotations

from typing import Any


def _int(name: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return v


def _seed_list(seeds: Any, members: int) -> list[int]:
    if not isinstance(seeds, (list, tuple)) or len(seeds) != members:
        raise ValueError(f"seeds must be a list of {members} ints (one per "
                         f"member), got {seeds!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seeds must hold ints >= 0, got {s!r}")
    return list(seeds)

