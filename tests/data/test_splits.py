"""Embedded data sets: sizes, fixed and disjoint splits, stratification, train-only statistics."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data import load_dataset
from zoo.data.embedded import EMBEDDED
from zoo.data.splits import carve_validation


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1)}


@pytest.mark.parametrize("name,sizes,shape", [
    ("mnist1d", (3600, 400, 1000), (40, 1)),
    ("digits", (1293, 144, 360), (8, 8, 1)),
])
def test_sizes_and_shapes(name, sizes, shape):
    splits = load_dataset(name, validation_split=0.1)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == sizes
    assert splits.input_shape == shape
    assert splits.num_classes == 10
    assert splits.x_train.dtype == np.float32


@pytest.mark.parametrize("name", ["mnist1d", "digits"])
def test_splits_are_disjoint(name):
    splits = load_dataset(name, validation_split=0.1)
    train, val, test = _rows(splits.x_train), _rows(splits.x_val), _rows(splits.x_test)
    assert not train & val
    assert not train & test
    assert not val & test


@pytest.mark.parametrize("name", ["mnist1d", "digits"])
def test_splits_are_stratified(name):
    splits = load_dataset(name, validation_split=0.2)
    full = np.bincount(np.concatenate([splits.y_train, splits.y_val]), minlength=10)
    val = np.bincount(splits.y_val, minlength=10)
    # Stratified: every class's validation share is within one example of 20%.
    assert np.all(np.abs(val - 0.2 * full) <= 1)
    if name == "digits":  # our own test split is stratified too
        test = np.bincount(splits.y_test, minlength=10)
        everything = full + test
        assert np.all(np.abs(test - 0.2 * everything) <= 1)


def test_splits_are_the_same_every_time_whatever_the_seed():
    import keras

    first = load_dataset("mnist1d", 0.1)
    keras.utils.set_random_seed(123)  # a recipe seed must not move the split
    EMBEDDED["mnist1d"].cache_clear()  # rebuild the data set from scratch too
    second = load_dataset("mnist1d", 0.1)
    for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, part), getattr(second, part))


def test_validation_is_carved_from_train_only():
    splits = load_dataset("digits", 0.1)
    x_full, y_full, x_test, _, _ = EMBEDDED["digits"]()
    assert _rows(splits.x_train) | _rows(splits.x_val) == _rows(x_full)
    assert _rows(splits.x_test) == _rows(x_test)


def test_carve_validation_sizes():
    x = np.arange(100, dtype=np.float32)[:, None]
    y = np.repeat(np.arange(4), 25)
    x_train, y_train, x_val, y_val = carve_validation(x, y, 0.2)
    assert len(y_val) == 20 and len(y_train) == 80
    assert np.all(np.bincount(y_val) == 5)


def test_standardization_uses_train_statistics_only():
    splits = load_dataset("digits", 0.1)
    mean, variance = splits.standardization()
    assert mean.shape == (1,) and variance.shape == (1,)
    train = splits.x_train.astype(np.float64)
    np.testing.assert_allclose(mean, train.mean(), rtol=1e-6)
    np.testing.assert_allclose(variance, train.var(), rtol=1e-6)
    others = np.concatenate([splits.x_val, splits.x_test]).astype(np.float64)
    assert abs(others.mean() - train.mean()) > 1e-3  # so the check above could tell them apart


def test_cached_arrays_are_read_only():
    splits = load_dataset("digits", 0.1)
    with pytest.raises(ValueError):
        splits.x_test[0, 0, 0, 0] = 1.0


def test_validation_split_zero_trains_on_every_example():
    held_out = load_dataset("mnist1d", validation_split=0.1)
    splits = load_dataset("mnist1d", validation_split=0.0)
    assert len(splits.y_train) == len(held_out.y_train) + len(held_out.y_val) == 4000
    assert len(splits.y_val) == 0 and not splits.has_validation
    assert held_out.has_validation


def test_tiny_sets_that_cannot_be_stratified_still_split():
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1])  # class 1 has a single example
    x = np.arange(len(y), dtype=np.float32)[:, None]
    x_train, y_train, x_val, y_val = carve_validation(x, y, 0.25)
    assert len(y_val) == 2 and len(y_train) == 6
    assert not set(x_train[:, 0]) & set(x_val[:, 0])


def test_mnist1d_cache_gives_what_the_package_builds_and_survives_damage(tmp_path, monkeypatch):
    from mnist1d.data import get_dataset_args

    from zoo.data import cache, embedded

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    built = embedded._build_mnist1d(get_dataset_args())
    embedded.mnist1d.cache_clear()
    first = embedded.mnist1d()  # builds and writes the cache file
    (cached,) = tmp_path.glob("mnist1d-*.npz")
    embedded.mnist1d.cache_clear()
    second = embedded.mnist1d()  # reads it
    cached.write_bytes(cached.read_bytes()[:1000])  # a damaged file is rebuilt, not trusted
    embedded.mnist1d.cache_clear()
    third = embedded.mnist1d()
    embedded.mnist1d.cache_clear()
    for arrays in (first, second, third):
        for got, want in zip(arrays[:4], built, strict=True):
            assert got.dtype == want.dtype and np.array_equal(got, want)
    assert cache.read_cached_arrays(cached) is not None  # rewritten whole
