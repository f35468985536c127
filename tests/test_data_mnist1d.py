"""Tests of lib.data.mnist1d: shapes, classes, the cache, determinism, no network."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lib import data


def test_published_set_shapes_and_classes(no_network):
    d = data.mnist1d()
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.n_classes == 10
    counts = torch.bincount(d.y_train, minlength=10)
    assert int(counts.min()) > 350 and int(counts.max()) < 450
    both = torch.cat([d.x_train, d.x_test])
    assert abs(float(both.mean())) < 0.01 and abs(float(both.std()) - 1) < 0.01


def test_cached_copy_equals_a_regenerated_one(no_network):
    cached = data.mnist1d()  # written by the first call, read afterwards
    fresh = data.mnist1d(cache=False)
    for a, b in [(cached.x_train, fresh.x_train), (cached.y_train, fresh.y_train),
                 (cached.x_test, fresh.x_test), (cached.y_test, fresh.y_test)]:
        assert torch.equal(a, b)


def test_small_set_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("GF_CACHE", str(tmp_path))
    assert data.mnist1d_cache_dir() == tmp_path / "mnist1d"
    a = data.mnist1d(num_samples=100, seed=3)
    files = list((tmp_path / "mnist1d").glob("*.npz"))
    assert len(files) == 1
    b = data.mnist1d(num_samples=100, seed=3)
    assert torch.equal(a.x_train, b.x_train) and a.x_train.shape == (80, 40)
    c = data.mnist1d(num_samples=100, seed=4, cache=False)
    assert not torch.equal(a.x_train, c.x_train)
    assert len(list((tmp_path / "mnist1d").glob("*.npz"))) == 1


def test_damaged_cache_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setenv("GF_CACHE", str(tmp_path))
    good = data.mnist1d(num_samples=40, seed=1)
    (path,) = (tmp_path / "mnist1d").glob("*.npz")
    path.write_bytes(b"not an npz file")
    again = data.mnist1d(num_samples=40, seed=1)
    assert torch.equal(good.x_test, again.x_test)


def test_generation_leaves_global_random_state_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("GF_CACHE", str(tmp_path))
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    data.mnist1d(num_samples=20, seed=0, cache=False)
    assert np.random.rand() == expected


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"num_samples": 15}, ValueError, "num_samples"),
    ({"num_samples": 105}, ValueError, "num_samples"),
    ({"num_samples": 100.0}, ValueError, "num_samples"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": "0"}, ValueError, "seed"),
    ({"cache": 1}, TypeError, "cache"),
    ({"regenerate": None}, TypeError, "regenerate"),
])
def test_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        data.mnist1d(**kwargs)
