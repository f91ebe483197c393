"""The TFDS path under tfds' mock data, and a quick clear error when the data is absent."""

from __future__ import annotations

import time

import numpy as np
import pytest

from zoo.data import load_dataset
from zoo.errors import DataError, UnknownNameError

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize("name,shape,classes", [
    ("mnist", (28, 28, 1), 10),
    ("cifar10", (32, 32, 3), 10),
])
def test_tfds_loads_under_mock_data(name, shape, classes):
    with tfds.testing.mock_data(num_examples=30):
        splits = load_dataset(f"tfds:{name}", validation_split=0.1)
    assert splits.name == f"tfds:{name}"
    assert splits.input_shape == shape
    assert splits.num_classes == classes
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int32
    assert len(splits.y_train) > 0 and len(splits.y_val) > 0 and len(splits.y_test) > 0
    assert splits.y_train.max() < classes


def test_tfds_validation_is_stratified_like_the_embedded_sets():
    with tfds.testing.mock_data(num_examples=400):
        splits = load_dataset("tfds:mnist", validation_split=0.2)
    full = np.bincount(np.concatenate([splits.y_train, splits.y_val]), minlength=10)
    val = np.bincount(splits.y_val, minlength=10)
    assert len(splits.y_val) == 80
    # Stratified: every class's validation share is within one example of 20%.
    assert np.all(np.abs(val - 0.2 * full) <= 1), (val, full)


def test_tfds_validation_split_zero_keeps_all_of_train():
    with tfds.testing.mock_data(num_examples=30):
        splits = load_dataset("tfds:mnist", validation_split=0.0)
    assert len(splits.y_train) == 30 and len(splits.y_val) == 0


def test_fashion_mnist_class_names_come_from_tfds():
    with tfds.testing.mock_data(num_examples=10):
        splits = load_dataset("tfds:fashion_mnist", validation_split=0.1)
    assert splits.class_names[0] == "T-shirt/top"


def test_absent_data_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ZOO_TFDS_DOWNLOAD", raising=False)
    started = time.monotonic()
    with pytest.raises(DataError) as caught:
        load_dataset("tfds:mnist", validation_split=0.1)
    assert time.monotonic() - started < 30  # seconds, not a hang on a download
    message = str(caught.value)
    assert "tfds:mnist is not prepared" in message
    assert str(tmp_path) in message
    assert "tfds build mnist" in message and "TFDS_DATA_DIR" in message


def test_unknown_tfds_name():
    with pytest.raises(UnknownNameError, match="tfds:not_a_dataset"):
        load_dataset("tfds:not_a_dataset", validation_split=0.1)
