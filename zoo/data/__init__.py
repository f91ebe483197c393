"""Data sets: the ones found on this machine (`digits`, `mnist1d`, `fashion_mnist`) and
`tfds:<name>`, loaded and split; their input pipelines and augmentation. Which names a recipe
may use is `zoo.registry.datasets`."""

from __future__ import annotations

from zoo.data import tfds_source
from zoo.data.embedded import EMBEDDED
from zoo.data.pipeline import make_dataset
from zoo.data.splits import SPLIT_SEED, Splits, carve_validation, take_subset
from zoo.registry.datasets import (
    TFDS_PREFIX,
    check_dataset_name,
    dataset_kind,
    dataset_names,
)

__all__ = ["SPLIT_SEED", "Splits", "check_dataset_name", "dataset_kind", "dataset_names",
           "load_dataset", "make_dataset", "recipe_splits"]


def load_dataset(name: str, validation_split: float, subset: int | None = None) -> Splits:
    """Load a data set and carve validation from its training split.

    Args:
        name: `digits`, `mnist1d`, `fashion_mnist` or `tfds:<name>`.
        validation_split: fraction of the training split held out for validation.
        subset: keep this many training examples (a fixed stratified choice) before validation
            is carved; None keeps them all.

    Returns:
        `Splits` with raw (unstandardized) inputs; the same for every seed and every run.
    """
    check_dataset_name(name)
    if name.startswith(TFDS_PREFIX):
        return tfds_source.load(name[len(TFDS_PREFIX):], validation_split, subset)
    x_full, y_full, x_test, y_test, class_names = EMBEDDED[name]()
    x_full, y_full = take_subset(x_full, y_full, subset, name)
    x_train, y_train, x_val, y_val = carve_validation(x_full, y_full, validation_split)
    return Splits(name, x_train, y_train, x_val, y_val, x_test, y_test, class_names)


def recipe_splits(recipe) -> Splits:
    """The splits a recipe (`zoo.recipe.Recipe`) trains on: its `data` section's data set,
    validation split and subset."""
    data = recipe.data
    return load_dataset(data.dataset, data.validation_split, data.subset)
