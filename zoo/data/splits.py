"""The in-memory form of a data set and the fixed way validation is carved from train."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

# Fixed forever, independent of any recipe seed: every recipe sees the same validation examples,
# so runs differ only in what they configure.
SPLIT_SEED = 20_240_101


@dataclass(frozen=True)
class Splits:
    """Train, validation and test arrays of one data set (raw, unstandardized inputs)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example: (length, channels) or (height, width, channels)."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """The number of classes, one per class name."""
        return len(self.class_names)

    @property
    def has_validation(self) -> bool:
        """Whether any examples were held out for validation (a split of 0 holds out none)."""
        return len(self.y_val) > 0

    @property
    def kind(self) -> str:
        """`sequence` for (length, channels) inputs, `image` for (height, width, channels)."""
        return "sequence" if len(self.input_shape) == 2 else "image"

    def standardization(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and variance of the training split only."""
        axes = tuple(range(self.x_train.ndim - 1))
        mean = self.x_train.mean(axis=axes, dtype=np.float64)
        variance = self.x_train.var(axis=axes, dtype=np.float64)
        return mean.astype(np.float32), np.maximum(variance, 1e-12).astype(np.float32)


def carve_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int = SPLIT_SEED):
    """Split train into (train, validation), stratified by class, with a fixed seed.

    A fraction of 0 holds nothing out: the validation arrays are empty. Stratifying needs two
    examples of every class and room for each class on both sides; tiny sets that lack it
    (mock data in tests) get a plain seeded split.
    """
    if fraction == 0:
        return x, y, x[:0], y[:0]
    index = np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    n_val = math.ceil(fraction * len(y))
    stratifiable = counts.min() >= 2 and min(n_val, len(y) - n_val) >= len(classes)
    train_idx, val_idx = train_test_split(
        index, test_size=fraction, stratify=y if stratifiable else None, random_state=seed
    )
    train_idx.sort()
    val_idx.sort()
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def take_subset(x: np.ndarray, y: np.ndarray, size: int | None, dataset: str):
    """`size` examples of (x, y), stratified by class, with the fixed split seed, in their
    original order; all of them when `size` is None.

    Raises:
        DataError: `size` is not below the number of examples.
    """
    from zoo.errors import DataError

    if size is None:
        return x, y
    if size >= len(y):
        raise DataError(f"data.subset: {dataset} has {len(y)} training examples, so a subset "
                        f"must be smaller (received {size}); remove the key to use them all")
    classes = np.unique(y)
    stratify = y if min(size, len(y) - size) >= len(classes) else None
    index, _ = train_test_split(np.arange(len(y)), train_size=size, stratify=stratify,
                                random_state=SPLIT_SEED)
    index.sort()
    return x[index], y[index]


def frozen(array: np.ndarray) -> np.ndarray:
    """Read-only, so a cached data set cannot be changed by one run and seen by the next."""
    array.flags.writeable = False
    return array
