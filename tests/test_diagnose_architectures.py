"""lib.diagnose on third-party architectures: healthy at their default init, the
deliberately broken versions flagged, and the suggested fix improving the measurement.
Models from tests/test_probes_architectures.py."""
from __future__ import annotations

import math

import pytest
import torch
from test_probes_architectures import ZOO, ResNet, SeqModel, ViT, batch, build, seq_loss
from torch import nn

from lib import diagnose, seeds

SEEDS = seeds.member_seeds(2, "diagnose architectures")


@pytest.mark.parametrize("name", list(ZOO))
def test_standard_architectures_are_healthy_at_default_init(name):
    for seed in SEEDS:
        x, y = batch(ZOO[name][1], seed)
        d = diagnose.diagnose_model(build(name, seed), x, y, ZOO[name][2])
        assert d.healthy, (name, seed, d.summary())
        assert d.coverage == 1.0


def _vit_normal(seed: int) -> nn.Module:
    model = ViT()
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, 0, 1)
        if isinstance(m, nn.MultiheadAttention):
            nn.init.normal_(m.in_proj_weight, 0, 1)
    return model


def test_batchnorm_weights_of_1e_3_vanish_and_resetting_them_fixes_it():
    for seed in SEEDS:
        x, y = batch("image", seed)
        model = build("resnet", seed)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1e-3)
        d = diagnose.diagnose_model(model, x, y)
        assert "vanishing" in d.labels, d.summary()
        assert "reset them to 1" in d.issue("vanishing").fix
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
        after = diagnose.diagnose_model(model, x, y)
        assert after.healthy and after.signal_ratio > 10 * d.signal_ratio


def test_a_vit_with_normal_weights_is_flagged_and_small_init_fixes_it():
    x, y = batch("image")
    d = diagnose.diagnose_model(_vit_normal(0), x, y)
    assert "large-weights" in d.labels and "0.02" in d.issue("large-weights").fix
    model = _vit_normal(0)
    for m in model.modules():  # the fix: N(0, 0.02^2)
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, 0, 0.02)
        if isinstance(m, nn.MultiheadAttention):
            nn.init.normal_(m.in_proj_weight, 0, 0.02)
    after = diagnose.diagnose_model(model, x, y)
    assert after.healthy
    assert max(v.gain for v in after.layers if math.isfinite(v.gain)) < 1


def test_a_30_layer_sigmoid_mlp_vanishes():
    torch.manual_seed(0)
    layers = [m for _ in range(30) for m in (nn.Linear(32, 32), nn.Sigmoid())]
    model = nn.Sequential(*layers, nn.Linear(32, 10))
    d = diagnose.diagnose_model(model, torch.randn(64, 32), torch.randint(0, 10, (64,)))
    assert d.labels == ["vanishing"] and d.signal_ratio < 1e-10
    assert "ReLU" in d.issue("vanishing").fix


def test_an_lstm_on_200_steps_vanishes_through_time_and_the_fixes_help():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 20, (8, 200), generator=g)
    labels = torch.randint(0, 20, (8,), generator=g)
    torch.manual_seed(0)
    model = SeqModel("lstm", vocab=20, last_only=True)
    d = diagnose.diagnose_model(model, tokens, labels)
    assert d.labels == ["vanishing"] and "through time" in d.issue("vanishing").evidence
    ratio = d.layers[1].time_grad_ratio
    # Fix 1: forget-gate bias 1 (PyTorch orders the gates i, f, g, o): more memory.
    with torch.no_grad():
        h = model.rnn.hidden_size
        model.rnn.bias_ih_l0[h:2 * h] = 1.0
        model.rnn.bias_hh_l0[h:2 * h] = 0.0
    assert diagnose.diagnose_model(model, tokens, labels).layers[1].time_grad_ratio > 1e6 * ratio
    # Fix 2: the loss on every step: the earliest steps get their own gradient.
    torch.manual_seed(0)
    every = SeqModel("lstm", vocab=20)
    assert diagnose.diagnose_model(every, tokens, tokens, seq_loss).healthy


def test_one_nan_weight_is_traced_to_its_layer():
    x, y = batch("image")
    model = build("resnet")
    with torch.no_grad():
        model.layer2[0].conv1.weight[0, 0, 0, 0] = math.nan
    d = diagnose.diagnose_model(model, x, y)
    assert d.labels == ["non-finite"]
    assert d.issue("non-finite").layers == ("layer2.0.conv1",)
    assert "forward pass" in d.issue("non-finite").evidence


def test_a_conv_feeding_batchnorm_is_never_told_to_shrink():
    # Tiny and huge conv weights before BatchNorm: scale-invariant, so no weight verdict.
    x, y = batch("image")
    for scale in (1e-2, 1e2):
        model = ResNet()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.mul_(scale)
        d = diagnose.diagnose_model(model, x, y)
        assert d.healthy, (scale, d.summary())
