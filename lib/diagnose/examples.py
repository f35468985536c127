"""Built-in example models, one per verdict plus two healthy ones (the only part of
:mod:`lib.diagnose` that imports :mod:`lib.training`: ``dead_relu`` trains).

Each factory takes ``seed`` (default: the book's base seed) and returns a
model and a batch of 256 digits, ``(model, x, y)``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from torch import Tensor, nn

from lib import data as _data
from lib import networks as _networks
from lib import seeds as _seeds
from lib import training as _training
from lib._checks import check_int, check_seed

__all__ = ["SmallCNN", "examples", "sigmoid_stack", "exploding_init", "dead_relu",
           "saturated_tanh", "small_cnn", "healthy_mlp"]



class SmallCNN(nn.Module):
    """Two 3x3 convolutions with ReLU, max-pooling and a linear read-out, for 8x8 digits.

    Accepts images of shape (batch, 1, 8, 8) or flat rows of 64 pixels.
    """

    def __init__(self, channels: int = 8, classes: int = 10) -> None:
        channels = check_int(channels, "channels", ge=1)
        classes = check_int(classes, "classes", ge=2)
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * channels * 16, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(-1, 1, 8, 8)
        x = self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.fc(x.flatten(1))


@functools.lru_cache(maxsize=4)
def _digits(seed: int) -> _data.Dataset:
    return _data.digits(seed=seed)


def _batch(seed: int, n: int = 256) -> tuple[Tensor, Tensor]:
    d = _digits(seed)
    return d.x_train[:n].clone(), d.y_train[:n].clone()


def _seed(seed: Any) -> int:
    return _seeds.base_seed() if seed is None else check_seed(seed)


def sigmoid_stack(seed: int | None = None) -> tuple[nn.Module, Tensor, Tensor]:
    """A 10-layer sigmoid MLP with PyTorch's default init: the gradient vanishes."""
    seed = _seed(seed)
    return (_networks.mlp(10, 64, "sigmoid", seed=seed), *_batch(seed))


def exploding_init(seed: int | None = None) -> tuple[nn.Module, Tensor, Tensor]:
    """A 10-layer ReLU MLP with weights N(0, 0.5^2), about 3x He's std: the gradient explodes."""
    seed = _seed(seed)
    model = _networks.mlp(10, 64, "relu", init="normal", init_params={"std": 0.5}, seed=seed)
    return (model, *_batch(seed))


def dead_relu(seed: int | None = None) -> tuple[nn.Module, Tensor, Tensor]:
    """A 6-layer He-init ReLU MLP after 20 Adam steps at lr 0.3: most of its units are dead."""
    seed = _seed(seed)
    model = _networks.mlp(6, 64, "relu", init="he", seed=seed)
    _training.train(model, _digits(seed), steps=20, lr=0.3, optimizer="adam", batch_size=64,
                    seed=seed, eval_every=20, progress=False)
    return (model, *_batch(seed))


def saturated_tanh(seed: int | None = None) -> tuple[nn.Module, Tensor, Tensor]:
    """A 6-layer tanh MLP with weights N(0, 1): most pre-activations sit on the flat tails."""
    seed = _seed(seed)
    model = _networks.mlp(6, 64, "tanh", init="normal", init_params={"std": 1.0}, seed=seed)
    return (model, *_batch(seed))


def small_cnn(seed: int | None = None) -> tuple[nn.Module, Tensor, Tensor]:
    """A small CNN in plain PyTorch (SmallCNN, default init) on 8x8 digits: healthy."""
    seed = _seed(seed)
    with _seeds.torch_seeded(_seeds.stream(seed, "small_cnn")):
        model = SmallCNN()
    x, y = _batch(seed)
    return model, x.reshape(-1, 1, 8, 8), y


def healthy_mlp(seed: int | None = None) -> tuple[nn.Module, Tensor, Tensor]:
    """An 8-layer ReLU MLP with He init: healthy."""
    seed = _seed(seed)
    return (_networks.mlp(8, 64, "relu", init="he", seed=seed), *_batch(seed))


_EXAMPLES: dict[str, Callable[..., tuple[nn.Module, Tensor, Tensor]]] = {
    "sigmoid_stack": sigmoid_stack,
    "exploding_init": exploding_init,
    "dead_relu": dead_relu,
    "saturated_tanh": saturated_tanh,
    "small_cnn": small_cnn,
    "healthy_mlp": healthy_mlp,
}


def examples() -> dict[str, Callable[..., tuple[nn.Module, Tensor, Tensor]]]:
    """Built-in example models: name -> factory ``f(seed=0) -> (model, x, y)``.

    Each returns a model and a batch of 256 digits: ``sigmoid_stack`` (vanishing),
    ``exploding_init`` (exploding), ``dead_relu`` (dead, killed by 20 Adam steps at
    lr 0.3), ``saturated_tanh`` (saturated), ``small_cnn`` (a plain-PyTorch CNN,
    healthy) and ``healthy_mlp`` (healthy).
    """
    return dict(_EXAMPLES)

