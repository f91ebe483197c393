"""Model files and what identifies their weights: written atomically, hashed by value."""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np

from zoo.files import atomic_path


def save_model_atomically(model, path: Path) -> None:
    """Never a half-written model: Keras writes a temporary file that is then renamed."""
    with atomic_path(path, suffix=".tmp.keras") as tmp:
        model.save(tmp)


def weights_sha256(model) -> str:
    """sha256 over every weight's path, shape and values: equal iff the trained weights are."""
    digest = hashlib.sha256()
    for weight in model.weights:
        values = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{weight.path}:{values.dtype}:{values.shape};".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()
