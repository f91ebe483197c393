"""Data sets: the embedded ones (`digits`, `mnist1d`) and `tfds:<name>`, loaded and split; their
input pipelines and augmentation. Which names a recipe may use is `zoo.registry.datasets`."""

from __future__ import annotations

from zoo.data import tfds_source
from zoo.data.embedded import EMBEDDED
from zoo.data.pipeline import make_dataset
from zoo.data.splits import SPLIT_SEED, Splits, carve_validation
from zoo.registry.datasets import (
    TFDS_PREFIX,
    check_dataset_name,
    dataset_kind,
    dataset_names,
)

__all__ = ["SPLIT_SEED", "Splits", "check_dataset_name", "dataset_kind", "dataset_names",
           "load_dataset", "make_dataset"]


def load_dataset(name: str, validation_split: float) -> Splits:
    """Load a data set and carve validation from its training split.

    Args:
        name: `digits`, `mnist1d` or `tfds:<name>`.
        validation_split: fraction of the training split held out for validation.

    Returns:
        `Splits` with raw (unstandardized) inputs; the same for every seed and every run.
    """
    check_dataset_name(name)
    if name.startswith(TFDS_PREFIX):
        return tfds_source.load(name[len(TFDS_PREFIX):], validation_split)
    x_full, y_full, x_test, y_test, class_names = EMBEDDED[name]()
    x_train, y_train, x_val, y_val = carve_validation(x_full, y_full, validation_split)
    return Splits(name, x_train, y_train, x_val, y_val, x_test, y_test, class_names)
