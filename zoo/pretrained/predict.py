"""`zoo predict NAME FILE`: classes and probabilities of a pretrained model for a file of inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import DataError
from zoo.pretrained.loader import load, manifest_entry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def read_inputs(path: Path, entry: dict[str, Any]) -> np.ndarray:
    """A batch of raw inputs shaped like the model's input, from a `.npy` array or an image.

    A `.npy` file holds one example (the input shape) or a batch (N, *input shape); a missing
    trailing channel axis of 1 is added. An image is converted to grayscale, resized to the
    model's height and width and mapped from [0, 1] onto the training data's raw range (bright
    = high, as the digits are stored).
    """
    path = Path(path)
    shape = tuple(entry["input_shape"])
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)  # never unpickle objects from a user's file
        except ValueError as err:
            raise DataError(f"{path}: not a plain numeric .npy array ({err})") from None
        return _batch(x.astype("float32"), shape, path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if len(shape) != 3:
            raise DataError(f"{path}: {entry['dataset']} models take sequences of shape {shape}, "
                            "not images; give a .npy array")
        return _image(path, shape, entry["input_range"])
    raise DataError(f"{path}: give a .npy array or an image ({', '.join(IMAGE_SUFFIXES)})")


def _batch(x: np.ndarray, shape: tuple[int, ...], path: Path) -> np.ndarray:
    given = x.shape
    if shape[-1] == 1 and (x.shape == shape[:-1] or x.shape[1:] == shape[:-1]):
        x = x[..., None]  # the channel axis of 1 left out
    if x.shape == shape:
        x = x[None]  # one example
    if x.shape[1:] != shape:
        raise DataError(f"{path}: an array of shape {given} fits neither the model's input "
                        f"{shape} nor a batch (N, *{shape})")
    return x


def _image(path: Path, shape: tuple[int, ...], value_range: list[float]) -> np.ndarray:
    import matplotlib.image
    import tensorflow as tf

    try:
        pixels = np.asarray(matplotlib.image.imread(path), dtype="float32")
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: cannot read the image ({err})") from None
    if pixels.max() > 1.0:  # 8-bit formats come back as 0..255
        pixels = pixels / 255.0
    if pixels.ndim == 3:
        pixels = pixels[..., :3].mean(axis=-1)  # grayscale; any alpha channel dropped
    height, width, channels = shape
    # Area averaging: each model pixel is the mean of the image pixels it covers, as when the
    # digits were scanned into 8x8 cells (a bilinear kernel would blur into the neighbours).
    resized = tf.image.resize(pixels[..., None], (height, width), method="area").numpy()
    low, high = value_range
    image = low + resized * (high - low)
    return np.repeat(image, channels, axis=-1)[None].astype("float32")


def predict(name: str, path: Path, top: int = 3) -> list[list[tuple[str, float]]]:
    """For each example in the file, the `top` classes with their probabilities."""
    entry = manifest_entry(name)
    x = read_inputs(path, entry)
    model = load(name)
    probabilities = model.predict(x, verbose=0)
    names = entry["class_names"]
    rows = []
    for p in probabilities:
        order = np.argsort(p)[::-1][:top]
        rows.append([(names[i], float(p[i])) for i in order])
    return rows
