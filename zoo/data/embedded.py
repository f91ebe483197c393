"""Data sets loaded from this machine: built by installed packages (digits, mnist1d) or read
from files a system package installs (fashion_mnist); nothing is downloaded."""

from __future__ import annotations

import functools

import numpy as np
from sklearn.model_selection import train_test_split

from zoo import paths
from zoo.data.cache import read_cached_arrays, write_cached_arrays
from zoo.data.fashion_mnist import fashion_mnist
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
    Building it takes about a second, which every worker process of a grid would pay: the arrays
    are kept in the zoo's cache folder (`zoo.paths.cache_dir`), keyed by the package's version
    and arguments, and rebuilt when the file is missing or unreadable.
    """
    import hashlib
    import json
    from importlib.metadata import version

    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    key = hashlib.sha256(json.dumps([version("mnist1d"), vars(args)], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    path = paths.cache_dir() / f"mnist1d-{key}.npz"
    arrays = read_cached_arrays(path)
    if arrays is None:
        arrays = _build_mnist1d(args)
        write_cached_arrays(path, arrays)
    names = tuple(str(c) for c in range(10))
    return tuple(map(frozen, arrays)) + (names,)


def _build_mnist1d(args) -> tuple[np.ndarray, ...]:
    from mnist1d.data import make_dataset

    data = make_dataset(args)
    return (data["x"].astype(np.float32)[..., None], data["y"].astype(np.int32),
            data["x_test"].astype(np.float32)[..., None], data["y_test"].astype(np.int32))


EMBEDDED = {"digits": digits, "fashion_mnist": fashion_mnist, "mnist1d": mnist1d}
