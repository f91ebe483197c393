"""Data sets that ship inside installed packages: nothing is downloaded."""

from __future__ import annotations

import functools

import numpy as np
from sklearn.model_selection import train_test_split

from zoo.data.splits import SPLIT_SEED, frozen

# digits has no official test split; this one is fixed forever (stratified, 20%).
DIGITS_TEST_FRACTION = 0.2


@functools.cache
def digits():
    """scikit-learn's 8x8 handwritten digits (1,797 images, values 0..16) as (8, 8, 1) images."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[..., None]
    y = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    names = tuple(str(c) for c in range(10))
    return tuple(map(frozen, (x_train, y_train, x_test, y_test))) + (names,)


@functools.cache
def mnist1d():
    """MNIST-1D built locally by the `mnist1d` package with its default arguments.

    4,000 train and 1,000 test sequences of length 40, as (40, 1) arrays; the package's own split.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    x_train = data["x"].astype(np.float32)[..., None]
    x_test = data["x_test"].astype(np.float32)[..., None]
    y_train = data["y"].astype(np.int32)
    y_test = data["y_test"].astype(np.int32)
    names = tuple(str(c) for c in range(10))
    return tuple(map(frozen, (x_train, y_train, x_test, y_test))) + (names,)


EMBEDDED = {"digits": digits, "mnist1d": mnist1d}
EMBEDDED_KINDS = {"digits": "image", "mnist1d": "sequence"}
