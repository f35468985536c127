"""Shared set-up for the lib unit tests.

* matplotlib draws off-screen (Agg), before anything imports pyplot;
* one torch thread per worker: the tests use small tensors, and ``pytest -n 2``
  already runs two workers on two cores;
* no progress bars;
* a hypothesis profile with few examples and no deadline, derandomised so a
  failure reproduces on every run and every machine.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg", force=True)

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from lib import data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)

settings.register_profile(
    "lib", max_examples=25, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "lib"))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection fail loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# Small data sets that the training and population tests share.
@pytest.fixture(scope="module")
def spirals() -> data.Dataset:
    return data.spirals(150, seed=0)


@pytest.fixture(scope="module")
def teacher() -> data.Dataset:
    return data.teacher(120, in_features=4, depth=2, width=8, seed=0)
