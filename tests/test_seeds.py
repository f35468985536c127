"""Tests of lib.seeds: streams are reproducible, distinct, and unlike the raw seed."""
from __future__ import annotations

import pytest
import torch

from lib import networks, seeds


def test_stream_is_reproducible_and_depends_on_both_inputs():
    assert seeds.stream(0, "mlp") == seeds.stream(0, "mlp")
    assert len({seeds.stream(s, p) for s in range(50) for p in ("mlp", "init", "split")}) == 150
    assert all(0 <= seeds.stream(s, "mlp") < 2**63 for s in range(50))


def test_model_weights_are_not_the_readers_inputs():
    """The trap this module exists for: inputs drawn after manual_seed(0) vs a model seeded 0."""
    torch.manual_seed(0)
    x = torch.randn(64, 64)
    model = networks.mlp(2, 64, "relu", init="normal", init_params={"std": 1.0}, in_features=64, seed=0)
    w = model.layer1.linear.weight.detach()
    corr = torch.corrcoef(torch.stack([w.reshape(-1), x.reshape(-1)]))[0, 1]
    assert abs(float(corr)) < 0.05


@pytest.mark.parametrize("seed,purpose,exc", [(1.5, "mlp", TypeError), (True, "mlp", TypeError),
                                              (0, "", ValueError), (0, None, ValueError)])
def test_bad_arguments(seed, purpose, exc):
    with pytest.raises(exc, match="seed|purpose"):
        seeds.stream(seed, purpose)


def test_torch_seeded_draws_as_manual_seed_and_restores_the_callers_state():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeds.torch_seeded(7):
        inside = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    assert torch.equal(inside, torch.rand(3))
    with pytest.raises(TypeError, match="seed"):
        with seeds.torch_seeded(1.5):
            pass
