"""Verdicts a review found wrong on models that train (or fixes that do not help).

Each model here was trained for ground truth in the review (100-300 Adam
steps): a ResNet with zero_init_residual, a padded-batch LSTM, He-init ReLU
nets probed on two examples and a BatchNorm CNN in eval mode all train, and
were called vanishing or dead; a CNN whose BatchNorm scales are zero is dead,
and Leaky ReLU or a lower learning rate (the old advice) do not revive it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lib import diagnose as dg
from lib import networks, probes


class _Block(nn.Module):
    def __init__(self, c: int, zero: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        if zero:
            nn.init.zeros_(self.bn2.weight)  # torchvision's zero_init_residual

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += x
        return self.relu(out)


def _resnet(zero: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU(inplace=True), *[_Block(8, zero) for _ in range(3)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_zero_init_residual_is_not_vanishing():
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    d = dg.diagnose_model(_resnet(True), x, y)
    assert d.healthy, d.summary()
    notes = [v.note for v in d.layers if "zero-initialised" in v.note]
    assert len(notes) == 6 and "bn2.weight" in notes[0]
    assert dg.diagnose_model(_resnet(False), x, y).healthy


class _PaddedLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.out = nn.LSTM(3, 16, batch_first=True), nn.Linear(16, 2)

    def forward(self, x):
        h, _ = self.lstm(x[:, :, :3])
        last = x[:, :, 3].sum(1).long() - 1  # the real length is in channel 3
        return self.out(h[torch.arange(len(x)), last])


def test_padding_steps_without_gradient_are_not_vanishing_through_time():
    torch.manual_seed(0)
    lengths = torch.randint(3, 9, (32,))
    x = torch.zeros(32, 12, 4)
    for i, n in enumerate(lengths):
        x[i, :n, :3] = torch.randn(n, 3)
        x[i, :n, 3] = 1.0
    d = dg.diagnose_model(_PaddedLSTM(), x, torch.randint(0, 2, (32,)))
    assert "vanishing" not in d.labels, d.summary()
    row = [v for v in d.layers if v.kind == "LSTM"][0]
    assert 1e-3 < row.time_grad_ratio < 1


def test_dead_units_need_enough_examples_to_be_judged():
    net = networks.mlp(4, 64, "relu", init="he", in_features=8, out_features=3, seed=0)
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    tiny = dg.diagnose_model(net, x[:2], y[:2])
    assert "dead" not in tiny.labels
    assert any("dead units not judged: 2 value(s) per unit" in v.note for v in tiny.layers)
    assert dg.diagnose_model(net, x, y).healthy
    # a layer that is really dead is still found on a batch of 8
    with torch.no_grad():
        net.layer2.linear.bias.fill_(-100.0)
    assert "dead" in dg.diagnose_model(net, x[:8], y[:8]).labels


def _bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c = 3
    for width in (16, 16, 32, 32, 64, 64, 64, 64):
        layers += [nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU6(inplace=True)]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 4))


def test_batchnorm_in_eval_mode_is_an_affine_map_not_a_normalisation():
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    for mode in (True, False):
        m = _bn_cnn().train(mode)
        with probes.watch(m) as rec:
            F.cross_entropy(m(x), y).backward()
        assert all(r.feeds_norm == mode for r in rec.report()[:-1])
        assert "vanishing" not in dg.diagnose_model(m, x, y).labels


def test_dead_behind_zero_norm_scales_says_to_reset_the_scales():
    m = _bn_cnn()
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            nn.init.zeros_(bn.weight)
            nn.init.constant_(bn.bias, -0.1)
    d = dg.diagnose_model(m, torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,)))
    dead = d.issue("dead")
    assert dead is not None and "reset the scales to 1" in dead.fix
