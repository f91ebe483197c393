"""Fashion-MNIST from its IDX files: where they are found, the checksums, the cache, the split,
the subset, and a clear quick error when they are nowhere. Uses the real files (Debian's
`dataset-fashion-mnist`, which `make data` and `.ci/run` install)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import requires_fashion_mnist
from zoo.data import fashion_mnist as source
from zoo.data import load_dataset
from zoo.errors import DataError

pytestmark = requires_fashion_mnist


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty zoo cache and Keras home, so the files are searched and read anew."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv(source.DIR_ENVIRONMENT, raising=False)
    source.fashion_mnist.cache_clear()
    yield tmp_path
    source.fashion_mnist.cache_clear()


def copy_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in source.FILES:
        shutil.copy(source.DEBIAN_DIR / name, folder / name)
    return folder


def test_the_official_split_with_a_stratified_validation_split(fresh):
    splits = load_dataset("fashion_mnist", validation_split=0.1)
    assert splits.input_shape == (28, 28, 1) and splits.kind == "image"
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (54_000, 6_000, 10_000)
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int32
    assert splits.x_train.min() == 0 and splits.x_train.max() == 255
    assert splits.class_names[0] == "T-shirt/top" and splits.class_names[9] == "Ankle boot"
    # The published split has 6,000 training and 1,000 test images of each class.
    assert np.all(np.bincount(splits.y_val, minlength=10) == 600)
    assert np.all(np.bincount(splits.y_test, minlength=10) == 1000)


def test_the_arrays_are_read_once_then_come_from_the_cache(fresh, monkeypatch):
    first = source.fashion_mnist()
    assert len(list((fresh / "cache").glob("fashion_mnist-*.npz"))) == 1
    source.fashion_mnist.cache_clear()

    def no_reading(folder):
        raise AssertionError("the IDX files were read again")

    monkeypatch.setattr(source, "read_idx_files", no_reading)
    second = source.fashion_mnist()
    for a, b in zip(first[:4], second[:4], strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_the_zoo_folder_wins_when_set_and_is_the_only_place_searched(fresh, monkeypatch):
    mine = copy_files(fresh / "mine")
    monkeypatch.setenv(source.DIR_ENVIRONMENT, str(mine))
    assert source.find_files() == mine
    monkeypatch.setenv(source.DIR_ENVIRONMENT, str(fresh / "empty"))
    with pytest.raises(DataError, match="empty"):  # not the Debian folder, which has them
        source.find_files()


def test_the_keras_cache_comes_before_the_debian_folder(fresh):
    assert source.find_files() == source.DEBIAN_DIR
    keras_copy = copy_files(fresh / "keras" / "datasets" / "fashion-mnist")
    assert source.find_files() == keras_copy


def test_a_damaged_file_is_named_with_the_fixes(fresh, monkeypatch):
    mine = copy_files(fresh / "mine")
    damaged = mine / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setenv(source.DIR_ENVIRONMENT, str(mine))
    with pytest.raises(DataError) as caught:
        load_dataset("fashion_mnist", validation_split=0.1)
    message = str(caught.value)
    assert str(damaged) in message and "damaged" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "keras.datasets.fashion_mnist.load_data()" in message
    assert not list((fresh / "cache").glob("*.npz"))  # nothing cached from a bad file


def test_a_subset_is_fixed_stratified_and_leaves_the_test_split_whole(fresh):
    one = load_dataset("fashion_mnist", validation_split=0.1, subset=2000)
    two = load_dataset("fashion_mnist", validation_split=0.1, subset=2000)
    assert len(one.y_train) + len(one.y_val) == 2000 and len(one.y_test) == 10_000
    assert np.array_equal(one.x_train, two.x_train)
    assert np.all(np.bincount(np.concatenate([one.y_train, one.y_val]), minlength=10) == 200)
    with pytest.raises(DataError, match="60000 training examples"):
        load_dataset("fashion_mnist", validation_split=0.1, subset=60_000)


def test_without_the_files_the_recipe_fails_in_seconds_on_one_line_before_any_run(tmp_path):
    env = {**os.environ, source.DIR_ENVIRONMENT: "/nonexistent", "KERAS_HOME": str(tmp_path),
           "ZOO_HOME": str(tmp_path), "ZOO_CACHE": str(tmp_path / "cache"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    recipe = Path(__file__).parents[2] / "recipes" / "fashion_mnist" / "cnn_small.yaml"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "zoo.cli", "train", str(recipe)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("zoo: error")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "/nonexistent" in lines[0] and "apt-get install dataset-fashion-mnist" in lines[0]
    assert "keras.datasets.fashion_mnist.load_data()" in lines[0]
    assert not (tmp_path / "mlflow.db").exists()  # no store created, so no run in it


def test_zoo_data_says_where_the_files_are_and_refuses_an_empty_folder(fresh, capsys,
                                                                        monkeypatch):
    from zoo import cli

    assert cli.main(["data"]) == 0
    out = capsys.readouterr().out
    assert "60,000 training and 10,000 test images" in out and str(source.DEBIAN_DIR) in out
    monkeypatch.setenv(source.DIR_ENVIRONMENT, str(fresh / "empty"))
    assert cli.main(["data"]) == 2  # the folder asked for is empty: nothing is installed
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(fresh / "empty") in err[0]
