"""TensorFlow Datasets (`tfds:<name>`): loaded from a prepared data dir, never downloaded here.

The data dir is tfds' own: TFDS_DATA_DIR, else ~/tensorflow_datasets. Set ZOO_TFDS_DOWNLOAD=1 to
let tfds download and prepare a data set on a machine with network access.
"""

from __future__ import annotations

import os

import numpy as np

from zoo.data.splits import Splits, carve_validation, take_subset
from zoo.errors import DataError
from zoo.registry.datasets import TFDS_PREFIX


def load(name: str, validation_split: float, subset: int | None = None) -> Splits:
    """tfds' train split, with validation carved from it stratified by class as for the
    embedded sets (same fixed split seed); tfds' test split as test."""
    import tensorflow_datasets as tfds

    data_dir = os.environ.get("TFDS_DATA_DIR") or None
    download = os.environ.get("ZOO_TFDS_DOWNLOAD") == "1"
    splits = ["train", "test"]
    try:
        datasets, info = tfds.load(
            name, split=splits, as_supervised=True, with_info=True,
            data_dir=data_dir, download=download,
        )
    except AssertionError as err:  # tfds' way of saying the data is not prepared
        where = data_dir or "~/tensorflow_datasets (TFDS_DATA_DIR is not set)"
        raise DataError(
            f"{TFDS_PREFIX}{name} is not prepared in {where}. No network here, so the zoo never "
            f"downloads: on a machine with network run `tfds build {name} --data_dir DIR`, copy "
            f"DIR here and set TFDS_DATA_DIR=DIR (or set ZOO_TFDS_DOWNLOAD=1 where downloading "
            f"works). tfds said: {str(err).splitlines()[0]}"
        ) from None
    (x_full, y_full), (x_test, y_test) = [_to_numpy(ds) for ds in datasets]
    x_full, y_full = take_subset(x_full, y_full, subset, f"{TFDS_PREFIX}{name}")
    x_train, y_train, x_val, y_val = carve_validation(x_full, y_full, validation_split)
    label = info.features["label"]
    class_names = tuple(label.names) if getattr(label, "names", None) else tuple(
        str(c) for c in range(label.num_classes)
    )
    return Splits(f"{TFDS_PREFIX}{name}", x_train, y_train, x_val, y_val, x_test, y_test,
                  class_names)


def _to_numpy(dataset) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    xs, ys = [], []
    for x, y in tfds.as_numpy(dataset.batch(4096)):
        xs.append(x)
        ys.append(y)
    return (np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int32))
