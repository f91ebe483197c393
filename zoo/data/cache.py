"""Arrays of a data set kept in the zoo's cache folder (`zoo.paths.cache_dir`), so that the
processes of a grid do not each rebuild or re-read them."""

from __future__ import annotations

import zipfile

import numpy as np

from zoo.files import atomic_path

_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def read_cached_arrays(path) -> tuple[np.ndarray, ...] | None:
    """(x_train, y_train, x_test, y_test) from `path`, or None when it is missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return tuple(stored[name] for name in _ARRAYS)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # missing, half-written by an older version, or damaged: rebuild


def write_cached_arrays(path, arrays: tuple[np.ndarray, ...]) -> None:
    """Write the four arrays to `path` atomically; skipped where the cache cannot be written."""
    try:
        with atomic_path(path, suffix=".tmp.npz") as tmp:
            np.savez(tmp, **dict(zip(_ARRAYS, arrays, strict=True)))
    except OSError:
        pass  # a read-only home: build it again next time
