"""Small data sets that need no download: real digits and synthetic problems.

* :func:`digits` - scikit-learn's bundled 8x8 handwritten digits (1,797 images,
  64 features, 10 classes); the file ships inside scikit-learn, so nothing is
  fetched at run time.
* :func:`spirals` - interleaved 2-D spirals, a classic hard-for-depth toy.
* :func:`teacher` - regression targets produced by a random "teacher" MLP.
* :func:`mnist1d` - MNIST-1D (Greydanus 2020): 10 classes of length-40
  sequences, generated offline by the ``mnist1d`` package and cached.
* :func:`adding_problem` - the adding problem (Hochreiter & Schmidhuber 1997;
  Le, Jaitly & Hinton 2015): sum the two marked numbers of a long sequence.
* :func:`copy_task` - the copy (memory) task: repeat a few symbols after a
  long blank delay (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

Every function is seeded and returns a :class:`Dataset` of float32 tensors.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lib import seeds as _seeds
from lib._checks import check_bool, check_int, check_number, check_seed

__all__ = ["Dataset", "digits", "spirals", "teacher", "mnist1d", "mnist1d_cache_dir",
           "adding_problem", "ADDING_BASELINE_MSE", "copy_task", "copy_baseline"]


@dataclass(frozen=True)
class Dataset:
    """Train/test tensors. ``y`` holds class indices (int64) or regression targets (float32)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    name: str = ""

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for a regression set)."""
        if self.y_train.is_floating_point():
            return 0
        return int(torch.cat([self.y_train, self.y_test]).max()) + 1

    @property
    def out_features(self) -> int:
        """Output size a model needs: classes, or the target dimension."""
        if self.n_classes:
            return self.n_classes
        return 1 if self.y_train.dim() == 1 else int(self.y_train.shape[1])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: train {tuple(self.x_train.shape)}, "
                f"test {tuple(self.x_test.shape)}, classes={self.n_classes})")


def _check(test_fraction: float, seed: int) -> float:
    test_fraction = check_number(test_fraction, "test_fraction", gt=0, lt=1)
    check_seed(seed)
    return test_fraction


#: The fewest training examples a split leaves (standardising needs a spread).
MIN_TRAIN = 2


def _n_test(n: int, test_fraction: float) -> int:
    """Test-split size for ``n`` examples; ValueError if either split would be too small."""
    n_test = max(1, int(round(test_fraction * n)))
    if n - n_test < MIN_TRAIN:
        raise ValueError(
            f"test_fraction={test_fraction:g} of {n} examples leaves {n - n_test} for training; "
            f"at least {MIN_TRAIN} are needed (use a smaller test_fraction or more examples)")
    return n_test


def _split(x: Tensor, y: Tensor, test_fraction: float, seed: int, standardize: bool,
           name: str) -> Dataset:
    g = torch.Generator().manual_seed(_seeds.stream(seed, "split"))
    perm = torch.randperm(x.shape[0], generator=g)
    n_test = _n_test(x.shape[0], test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    x_tr, x_te = x[tr], x[te]
    if standardize:
        # Statistics from the training split only, so the test set stays unseen.
        mu, sd = x_tr.mean(0), x_tr.std(0)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    return Dataset(x_tr.contiguous(), y[tr].contiguous(), x_te.contiguous(), y[te].contiguous(), name)


def digits(*, test_fraction: float = 0.25, seed: int = 0, standardize: bool = True) -> Dataset:
    """The 8x8 digits bundled with scikit-learn, split and (by default) standardised.

    Args:
        test_fraction: the share of the 1,797 images held out, in (0, 1); both
            splits must keep examples (at most 1,795 test images).
        seed: an int >= 0; it seeds the split.
        standardize: scale each pixel to mean 0, std 1 with training statistics.
    """
    test_fraction = _check(test_fraction, seed)
    check_bool(standardize, "standardize")
    table = _digits_table()
    x = torch.tensor(table[:, :-1], dtype=torch.float32)
    y = torch.tensor(table[:, -1], dtype=torch.int64)
    return _split(x, y, test_fraction, seed, standardize, "digits")


def _digits_table() -> np.ndarray:
    """The digits as a (1797, 65) array: 64 pixel values, then the label.

    Read straight from the CSV file scikit-learn ships: ``import sklearn`` costs
    about a second, paid by every chapter that uses the digits, while the file
    reads in milliseconds. Falls back to ``load_digits`` if the file has moved.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return np.loadtxt(path, delimiter=",", dtype=np.float64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.column_stack([bunch.data, bunch.target])


def spirals(n: int = 1000, *, classes: int = 3, noise: float = 0.2, turns: float = 1.5,
            test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    r"""``classes`` interleaved spiral arms in 2-D, ``n`` points in total.

    Point :math:`i` of class :math:`c` has radius :math:`r \sim U(0, 1)` and angle
    :math:`\theta = 2\pi (t r + c / C)` (:math:`t` = ``turns``, :math:`C` = ``classes``),
    plus Gaussian noise of standard deviation ``noise * r / 2`` per coordinate.

    Args:
        n: points in total, an int >= 2 * classes.
        classes: an int >= 2.
        noise: a finite number >= 0.
        turns: a finite number.
        test_fraction: the held-out share, in (0, 1).
        seed: an int >= 0.
    """
    test_fraction = _check(test_fraction, seed)
    # classes first: the check of n uses it.
    classes = check_int(classes, "classes", ge=2)
    n = check_int(n, "n", ge=2 * classes)
    noise = check_number(noise, "noise", ge=0)
    turns = check_number(turns, "turns")
    _n_test(n, test_fraction)
    g = torch.Generator().manual_seed(_seeds.stream(seed, "spirals"))
    y = torch.arange(n) % classes
    r = torch.rand(n, generator=g)
    theta = 2 * math.pi * (turns * r + y.float() / classes)
    pts = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)
    pts = pts + noise * r.unsqueeze(1) * torch.randn(n, 2, generator=g) * 0.5
    return _split(pts.float(), y, test_fraction, seed, True, "spirals")


def teacher(n: int = 2000, *, in_features: int = 16, depth: int = 3, width: int = 64,
            test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    r"""Regression on the outputs of a random tanh "teacher" network (targets of shape (n, 1)).

    .. math:: y = \operatorname{standardise}\big(v^\top \tanh(W_L \cdots \tanh(W_1 x))\big),
        \qquad x \sim N(0, I),\ W_l \sim N(0, 1/n_{l-1})

    Args:
        n: examples, an int >= 3 (two to train on, one to test, and a spread to
            standardise the targets by).
        in_features, depth, width: ints >= 1.
        test_fraction: the held-out share, in (0, 1).
        seed: an int >= 0.
    """
    test_fraction = _check(test_fraction, seed)
    n = check_int(n, "n", ge=MIN_TRAIN + 1)
    for name, v in (("in_features", in_features), ("depth", depth), ("width", width)):
        check_int(v, name, ge=1)
    _n_test(n, test_fraction)
    g = torch.Generator().manual_seed(_seeds.stream(seed, "teacher"))
    x = torch.randn(n, in_features, generator=g)
    h = x
    fan_in = in_features
    for _ in range(depth):
        w = torch.randn(fan_in, width, generator=g) / math.sqrt(fan_in)
        h = torch.tanh(h @ w)
        fan_in = width
    y = h @ (torch.randn(fan_in, 1, generator=g) / math.sqrt(fan_in))
    y = (y - y.mean()) / y.std()
    return _split(x, y, test_fraction, seed, False, "teacher")


#: MNIST-1D's published generator settings: 5,000 sequences, seed 42.
MNIST1D_SAMPLES, MNIST1D_SEED = 5000, 42


def mnist1d_cache_dir() -> Path:
    """Where :func:`mnist1d` caches its arrays: ``$GF_CACHE/mnist1d`` if the
    environment variable ``GF_CACHE`` is set, else ``.cache/mnist1d`` at the
    repository root (git-ignored, removed by ``make clean``)."""
    import os

    root = os.environ.get("GF_CACHE")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / ".cache"
    return base / "mnist1d"


def _mnist1d_generate(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    """Run the ``mnist1d`` package's own offline generator (never its download).

    The generator seeds numpy's *global* random state; we save and restore it,
    so generating the data set changes no other random stream.
    """
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int64),
            "x_test": d["x_test"].astype(np.float32),
            "y_test": d["y_test"].astype(np.int64)}


def mnist1d(*, num_samples: int = MNIST1D_SAMPLES, seed: int = MNIST1D_SEED,
            cache: bool = True, regenerate: bool = False) -> Dataset:
    """MNIST-1D (Greydanus 2020): the ten digit templates as 1-D signals,
    padded, scaled, translated, sheared and noised into length-40 sequences.

    MLPs reach about 70 % test accuracy on it and CNNs about 95 %, so
    architecture differences show on a CPU in seconds. The defaults are the
    published settings (5,000 sequences, seed 42: 4,000 train, 1,000 test,
    about 400 of each class in the training split).

    Generation (3-7 s of CPU, by the ``mnist1d`` package's ``make_dataset``)
    is paid once: the arrays are cached as ``.npz`` under
    :func:`mnist1d_cache_dir`, keyed by ``(num_samples, seed)``, written
    atomically so parallel builds cannot read half a file.

    Args:
        num_samples: sequences in total (a multiple of 10, at least 20); 80 %
            go to the training split, as in the package.
        seed: the generator's seed.
        cache: read and write the cache (``False``: generate in memory).
        regenerate: ignore an existing cache file and overwrite it.

    Shape:
        ``x_train``: ``(0.8 num_samples, 40)`` float32 (standardised over the
        whole set by the generator); ``y_train``: int64 classes 0-9.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) \
            or num_samples < 20 or num_samples % 10:
        raise ValueError("num_samples must be an int >= 20 and a multiple of 10, "
                         f"got {num_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    for name, v in (("cache", cache), ("regenerate", regenerate)):
        if not isinstance(v, bool):
            raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    path = mnist1d_cache_dir() / f"mnist1d_n{num_samples}_seed{seed}.npz"
    arrays = None
    if cache and not regenerate and path.is_file():
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            arrays = None  # a damaged cache file: generate again
    if arrays is None:
        arrays = _mnist1d_generate(num_samples, seed)
        if cache:
            import os
            import tempfile

            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
    n_train = int(num_samples * 0.8)
    x, y, xt, yt = arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"]
    if (x.shape != (n_train, 40) or xt.shape != (num_samples - n_train, 40)
            or y.shape != (n_train,) or yt.shape != (num_samples - n_train,)
            or not set(np.unique(y)) <= set(range(10))
            or not np.isfinite(x).all()):
        raise ValueError(f"MNIST-1D arrays have unexpected shapes or classes "
                         f"(x {x.shape}, x_test {xt.shape}); delete {path} "
                         "and run again")
    return Dataset(torch.from_numpy(x), torch.from_numpy(y),
                   torch.from_numpy(xt), torch.from_numpy(yt), "mnist1d")


#: Test MSE of always predicting 1, the mean target of :func:`adding_problem`:
#: the variance of the sum of two independent U(0, 1) numbers, 2/12.
ADDING_BASELINE_MSE = 1.0 / 6.0


def adding_problem(n: int = 2000, length: int = 50, *, test_fraction: float = 0.25,
                   seed: int = 0) -> Dataset:
    r"""The adding problem in the form of Le, Jaitly & Hinton (2015).

    Each example is a sequence of ``length`` steps with two channels: a
    number :math:`u_t \sim U(0, 1)` and a marker :math:`m_t \in \{0, 1\}`
    that is 1 at exactly two steps, one drawn uniformly from the first half
    and one from the second. The target is

    .. math::

        y = \sum_t m_t u_t ,

    so the first marked number must be carried for at least ``length / 2``
    steps. Always predicting the mean, 1, scores :data:`ADDING_BASELINE_MSE`
    (1/6); a model that beats that has learnt to read the markers.

    Shape:
        x: ``(n, length, 2)`` float32 (number, marker); y: ``(n,)`` float32.
    """
    test_fraction = _check(test_fraction, seed)
    n = check_int(n, "n", ge=2)
    length = check_int(length, "length", ge=2)
    g = torch.Generator().manual_seed(_seeds.stream(seed, f"adding-{length}"))
    u = torch.rand(n, length, generator=g)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=g)
    second = torch.randint(half, length, (n,), generator=g)
    m = torch.zeros(n, length)
    rows = torch.arange(n)
    m[rows, first] = 1.0
    m[rows, second] = 1.0
    x = torch.stack([u, m], dim=2)
    y = (u * m).sum(1)
    n_test = _n_test(n, test_fraction)
    return Dataset(x[n_test:].contiguous(), y[n_test:].contiguous(), x[:n_test].contiguous(),
                   y[:n_test].contiguous(), f"adding-{length}")


def copy_task(n: int = 2000, delay: int = 50, *, n_symbols: int = 8, copy_length: int = 5,
              test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """The copy (memory) task: read ``copy_length`` symbols, wait, then repeat them.

    An input sequence of ``T = delay + 2 * copy_length`` steps, one-hot over
    ``n_symbols + 2`` channels (the symbols ``0..n_symbols-1``, a blank
    ``n_symbols`` and a cue ``n_symbols + 1``): the symbols, then blanks, with
    the cue at the step just before the copy is due; the target is the blank
    at every step except the last ``copy_length``, which hold the symbols
    (the form of Arjovsky, Shah & Bengio 2016, after Hochreiter & Schmidhuber
    1997). :func:`copy_baseline` is the loss of knowing everything except the
    symbols.

    Shape:
        x: ``(n, T, n_symbols + 2)`` float32; y: ``(n, T)`` int64 class labels.
    """
    test_fraction = _check(test_fraction, seed)
    n = check_int(n, "n", ge=2)
    delay = check_int(delay, "delay", ge=1)
    n_symbols = check_int(n_symbols, "n_symbols", ge=2)
    copy_length = check_int(copy_length, "copy_length", ge=1)
    steps = delay + 2 * copy_length
    g = torch.Generator().manual_seed(
        _seeds.stream(seed, f"copy-{delay}-{n_symbols}-{copy_length}"))
    symbols = torch.randint(0, n_symbols, (n, copy_length), generator=g)
    blank, cue = n_symbols, n_symbols + 1
    tokens = torch.full((n, steps), blank, dtype=torch.int64)
    tokens[:, :copy_length] = symbols
    tokens[:, steps - copy_length - 1] = cue
    y = torch.full((n, steps), blank, dtype=torch.int64)
    y[:, steps - copy_length:] = symbols
    x = torch.nn.functional.one_hot(tokens, n_symbols + 2).float()
    n_test = _n_test(n, test_fraction)
    return Dataset(x[n_test:].contiguous(), y[n_test:].contiguous(), x[:n_test].contiguous(),
                   y[:n_test].contiguous(), f"copy-{delay}")


def copy_baseline(delay: int, *, n_symbols: int = 8, copy_length: int = 5) -> float:
    r"""Mean cross-entropy per step of predicting the blanks exactly and guessing the symbols.

    .. math::

        \frac{L \log K}{D + 2L}, \qquad L = \text{copy length},\; K = \text{symbols},\; D = \text{delay}.
    """
    delay = check_int(delay, "delay", ge=1)
    n_symbols = check_int(n_symbols, "n_symbols", ge=2)
    copy_length = check_int(copy_length, "copy_length", ge=1)
    return copy_length * math.log(n_symbols) / (delay + 2 * copy_length)
