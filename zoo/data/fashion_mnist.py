"""Fashion-MNIST from its four original IDX files, found on this machine; never downloaded.

Where the files are looked for, in order:
1. `$ZOO_FASHION_MNIST_DIR`, when it is set (and then only there);
2. Keras' cache, `$KERAS_HOME/datasets/fashion-mnist/` (default `~/.keras/...`), where
   `keras.datasets.fashion_mnist.load_data()` leaves them on a machine with internet;
3. `/usr/share/datasets/fashion-mnist/`, where Debian's `dataset-fashion-mnist` puts them.

The first folder that holds all four files is used. Their sha256 are checked the first time
those files are seen, then the arrays are kept in the zoo's cache folder (as MNIST-1D's are),
keyed by the files' paths, sizes and modification times; every later load reads that cache.
The official split is kept: 60,000 training and 10,000 test images, (28, 28, 1) float32 values
in 0..255.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from zoo import paths
from zoo.data.cache import read_cached_arrays, write_cached_arrays
from zoo.data.splits import frozen
from zoo.errors import DataError

DIR_ENVIRONMENT = "ZOO_FASHION_MNIST_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# The published files' sha256 (the same bytes in Debian's package and Keras' download).
FILES = {
    "train-images-idx3-ubyte.gz":
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz":
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz":
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz":
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
HOW_TO_GET = ("install Debian's package (`apt-get install dataset-fashion-mnist`, or `make "
              "data`), or run `keras.datasets.fashion_mnist.load_data()` once on a machine with "
              "internet and copy its ~/.keras/datasets/fashion-mnist/ to the same place here")


def candidate_dirs() -> list[Path]:
    """The folders searched, in order: only `$ZOO_FASHION_MNIST_DIR` when it is set."""
    if os.environ.get(DIR_ENVIRONMENT):
        return [Path(os.environ[DIR_ENVIRONMENT]).expanduser()]
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()
    return [keras_home / "datasets" / "fashion-mnist", DEBIAN_DIR]


def find_files() -> Path:
    """The first searched folder that holds all four files.

    Raises:
        DataError: no folder holds them; the message names the folders and both fixes.
    """
    searched = candidate_dirs()
    for folder in searched:
        if all((folder / name).is_file() for name in FILES):
            return folder
    where = ", ".join(str(folder) for folder in searched)
    raise DataError(f"fashion_mnist: the four IDX files ({', '.join(FILES)}) are in none of "
                    f"{where}; {HOW_TO_GET}")


@functools.cache
def fashion_mnist():
    """The training and test arrays and class names, as the embedded sets return them."""
    folder = find_files()
    stamp = [[name, (folder / name).stat().st_size, (folder / name).stat().st_mtime_ns]
             for name in FILES]
    key = hashlib.sha256(json.dumps([str(folder.resolve()), stamp, FILES]).encode())
    path = paths.cache_dir() / f"fashion_mnist-{key.hexdigest()[:16]}.npz"
    arrays = read_cached_arrays(path)
    if arrays is None:
        arrays = read_idx_files(folder)
        write_cached_arrays(path, arrays)  # bytes, as in the files: a quarter of float32's size
    x_train, y_train, x_test, y_test = arrays
    arrays = (x_train.astype(np.float32)[..., None], y_train.astype(np.int32),
              x_test.astype(np.float32)[..., None], y_test.astype(np.int32))
    return tuple(map(frozen, arrays)) + (CLASS_NAMES,)


def read_idx_files(folder: Path) -> tuple[np.ndarray, ...]:
    """Check the four files' sha256, then parse them: (x_train, y_train, x_test, y_test) as
    uint8 arrays, images (N, 28, 28).

    Raises:
        DataError: a file's checksum is wrong; the message names it.
    """
    contents = {}
    for name, expected in FILES.items():
        data = (folder / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != expected:
            raise DataError(f"fashion_mnist: {folder / name} is damaged (its sha256 is not the "
                            f"published one); delete it and {HOW_TO_GET}")
        contents[name] = data
    images = {split: _parse(contents[f"{split}-images-idx3-ubyte.gz"], dims=3)
              for split in ("train", "t10k")}
    labels = {split: _parse(contents[f"{split}-labels-idx1-ubyte.gz"], dims=1)
              for split in ("train", "t10k")}
    return images["train"], labels["train"], images["t10k"], labels["t10k"]


def _parse(gzipped: bytes, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes (its checksum already checked): a magic number, `dims`
    big-endian sizes, the data."""
    raw = gzip.decompress(gzipped)
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=1 + dims)[1:])
    return np.frombuffer(raw, np.uint8, offset=4 * (1 + dims)).reshape(shape)
