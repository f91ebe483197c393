"""Data augmentation: the recipe's `data.augmentation` list turned into seeded tf.data ops.

Ops run on raw training inputs only, in the input pipeline (so saved models stay plain
inference graphs). Every random draw is a stateless op seeded from the recipe seed and the
example's position in the epoch's stream, so one seed always gives the same augmented stream,
whatever the parallelism. Amplitudes (`noise`, `brightness`) are in units of the training data's
standard deviation; filled pixels or positions take the training mean.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Flip(_Op):
    op: Literal["flip"]
    mode: Literal["horizontal", "vertical", "both"] = "horizontal"


class Rotation(_Op):
    op: Literal["rotation"]
    degrees: Annotated[float, Field(gt=0.0, le=180.0)] = 10.0


class Translation(_Op):
    op: Literal["translation"]
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1


class Zoom(_Op):
    op: Literal["zoom"]
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1


class Crop(_Op):
    op: Literal["crop"]
    padding: PositiveInt = 2


class Contrast(_Op):
    op: Literal["contrast"]
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2


class Brightness(_Op):
    op: Literal["brightness"]
    delta: Annotated[float, Field(gt=0.0)] = 0.2


class Noise(_Op):
    op: Literal["noise"]
    stddev: Annotated[float, Field(gt=0.0)] = 0.1


class Cutout(_Op):
    op: Literal["cutout"]
    size: PositiveInt = 2


class Shift(_Op):
    op: Literal["shift"]
    max_shift: PositiveInt = 4


class Scale(_Op):
    op: Literal["scale"]
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2


class Mask(_Op):
    op: Literal["mask"]
    max_length: PositiveInt = 4


AugmentationOp = Annotated[
    Flip | Rotation | Translation | Zoom | Crop | Contrast | Brightness | Noise | Cutout | Shift
    | Scale | Mask,
    Field(discriminator="op"),
]

IMAGE_OPS = ("flip", "rotation", "translation", "zoom", "crop", "contrast", "brightness",
             "noise", "cutout")
SEQUENCE_OPS = ("shift", "noise", "scale", "mask")
OPS_BY_KIND = {"image": IMAGE_OPS, "sequence": SEQUENCE_OPS}


def check_ops_fit(ops: list[_Op], kind: str, dataset: str) -> None:
    """Raise ValueError naming the first op that does not apply to this kind of data."""
    allowed = OPS_BY_KIND[kind]
    for i, op in enumerate(ops):
        if op.op not in allowed:
            raise ValueError(
                f"augmentation[{i}]: op {op.op!r} does not apply to {kind}s ({dataset}); "
                f"allowed for {kind}s: {', '.join(allowed)}")


def augment_dataset(ds, ops: list[_Op], seed: int, mean: float, std: float):
    """Apply `ops` to a dataset of (x, y) examples (before batching), seeded per example.

    Args:
        ds: unbatched (x, y) training examples, already shuffled.
        ops: validated augmentation ops.
        seed: the recipe seed.
        mean, std: training-data statistics (fill value and amplitude unit).
    """
    import tensorflow as tf

    if not ops:
        return ds
    # One int64 per example, a new stream each epoch, the same streams for the same seed.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def apply(example, example_seed):
        x, y = example
        keys = tf.random.experimental.stateless_split(
            tf.stack([example_seed, tf.constant(seed, tf.int64)]), num=len(ops))
        for i, op in enumerate(ops):
            x = _APPLY[op.op](x, op, keys[i], mean, std)
        return x, y

    return tf.data.Dataset.zip(ds, seeds).map(
        apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def augment_batch(x, ops: list[_Op], seed: int, mean: float, std: float):
    """Augment a numpy batch eagerly (previews, tests) with the same ops as training."""
    import numpy as np
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x), np.int32)))
    out = augment_dataset(ds, ops, seed, mean, std).batch(len(x))
    return next(iter(out))[0].numpy()


def preview(recipe, path, samples: int = 6, variants: int = 4):
    """Write a PNG grid of training examples and augmented versions of them.

    Args:
        recipe: a recipe whose `data.augmentation` is not empty.
        path: the PNG to write.
        samples: examples (rows).
        variants: augmented versions of each (columns after the original).

    Returns:
        The path written.
    """
    from pathlib import Path

    from zoo import plots
    from zoo.data import load_dataset
    from zoo.errors import RecipeError

    ops = recipe.data.augmentation
    if not ops:
        raise RecipeError(f"{recipe.name}: data.augmentation is empty, nothing to preview; "
                          "add ops in the recipe or override data.augmentation=[{op: ...}]")
    splits = load_dataset(recipe.data.dataset, recipe.data.validation_split)
    x = splits.x_train[:samples]
    mean, std = float(splits.x_train.mean()), float(splits.x_train.std())
    augmented = [augment_batch(x, ops, recipe.seed + v, mean, std) for v in range(variants)]
    listed = ", ".join(op.op for op in ops)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return plots.augmentation_grid(x, augmented, splits.kind, path,
                                   f"{recipe.name}: {listed}")


# ---------------------------------------------------------------------------------------------
# The ops. Each takes one example x (H, W, C) or (L, C), its op spec, a seed of shape [2],
# and the training mean and std.


def _uniform(key, low, high, shape=()):
    import tensorflow as tf

    return tf.random.stateless_uniform(shape, seed=key, minval=low, maxval=high)


def _split(key, n):
    """n independent seeds from one, as a Python list (graph tensors cannot be iterated)."""
    import tensorflow as tf

    return tf.unstack(tf.random.experimental.stateless_split(key, num=n), num=n)


def _flip(x, op: Flip, key, mean, std):
    import tensorflow as tf

    axes = {"horizontal": [1], "vertical": [0], "both": [0, 1]}[op.mode]
    keys = _split(key, len(axes))
    for axis, k in zip(axes, keys, strict=True):
        x = tf.cond(_uniform(k, 0.0, 1.0) < 0.5, lambda x=x, a=axis: tf.reverse(x, [a]),
                    lambda x=x: x)
    return x


def _affine(x, fill, angle=0.0, zoom=1.0, shift_y=0.0, shift_x=0.0):
    """Rotate (radians) and zoom about the centre, then shift (pixels); bilinear."""
    import tensorflow as tf

    height, width = tf.cast(tf.shape(x)[0], tf.float32), tf.cast(tf.shape(x)[1], tf.float32)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # Output pixel (x, y) reads input pixel (a0 x + a1 y + a2, b0 x + b1 y + b2).
    transform = tf.stack([cos, sin, cx - cos * cx - sin * cy - shift_x,
                          -sin, cos, cy + sin * cx - cos * cy - shift_y, 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x[None], transforms=transform[None], output_shape=tf.shape(x)[:2],
        fill_value=fill, interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.ensure_shape(out[0], x.shape)


def _rotation(x, op: Rotation, key, mean, std):
    limit = math.radians(op.degrees)
    return _affine(x, mean, angle=_uniform(key, -limit, limit))


def _translation(x, op: Translation, key, mean, std):
    ky, kx = _split(key, 2)
    return _affine(x, mean, shift_y=_uniform(ky, -op.fraction, op.fraction) * x.shape[0],
                   shift_x=_uniform(kx, -op.fraction, op.fraction) * x.shape[1])


def _zoom(x, op: Zoom, key, mean, std):
    return _affine(x, mean, zoom=_uniform(key, 1.0 - op.fraction, 1.0 + op.fraction))


def _crop(x, op: Crop, key, mean, std):
    import tensorflow as tf

    p = op.padding
    padded = tf.pad(x, [[p, p], [p, p], [0, 0]], constant_values=mean)
    return tf.image.stateless_random_crop(padded, size=tf.shape(x), seed=key)


def _contrast(x, op: Contrast, key, mean, std):
    import tensorflow as tf

    centre = tf.reduce_mean(x, axis=[0, 1], keepdims=True)
    return (x - centre) * _uniform(key, 1.0 - op.factor, 1.0 + op.factor) + centre


def _brightness(x, op: Brightness, key, mean, std):
    return x + _uniform(key, -op.delta, op.delta) * std


def _noise(x, op: Noise, key, mean, std):
    import tensorflow as tf

    return x + tf.random.stateless_normal(tf.shape(x), seed=key, stddev=op.stddev * std)


def _cutout(x, op: Cutout, key, mean, std):
    import tensorflow as tf

    ky, kx = _split(key, 2)
    height, width = x.shape[0], x.shape[1]
    cy = tf.random.stateless_uniform((), seed=ky, maxval=height, dtype=tf.int32)
    cx = tf.random.stateless_uniform((), seed=kx, maxval=width, dtype=tf.int32)
    rows = tf.abs(tf.range(height)[:, None] - cy) <= (op.size - 1) // 2
    cols = tf.abs(tf.range(width)[None, :] - cx) <= (op.size - 1) // 2
    inside = tf.logical_and(rows, cols)[..., None]
    return tf.where(inside, tf.cast(mean, x.dtype), x)


def _shift(x, op: Shift, key, mean, std):
    import tensorflow as tf

    length = x.shape[0]
    offset = tf.random.stateless_uniform((), seed=key, minval=-op.max_shift,
                                         maxval=op.max_shift + 1, dtype=tf.int32)
    source = tf.range(length) - offset
    valid = tf.logical_and(source >= 0, source < length)[:, None]
    shifted = tf.gather(x, tf.clip_by_value(source, 0, length - 1))
    return tf.where(valid, shifted, tf.cast(mean, x.dtype))


def _scale(x, op: Scale, key, mean, std):
    return (x - mean) * _uniform(key, 1.0 - op.factor, 1.0 + op.factor) + mean


def _mask(x, op: Mask, key, mean, std):
    import tensorflow as tf

    kl, ks = _split(key, 2)
    length = x.shape[0]
    span = tf.random.stateless_uniform((), seed=kl, minval=1,
                                       maxval=min(op.max_length, length) + 1, dtype=tf.int32)
    start = tf.random.stateless_uniform((), seed=ks, maxval=length - span + 1, dtype=tf.int32)
    position = tf.range(length)
    inside = tf.logical_and(position >= start, position < start + span)[:, None]
    return tf.where(inside, tf.cast(mean, x.dtype), x)


_APPLY = {
    "flip": _flip, "rotation": _rotation, "translation": _translation, "zoom": _zoom,
    "crop": _crop, "contrast": _contrast, "brightness": _brightness, "noise": _noise,
    "cutout": _cutout, "shift": _shift, "scale": _scale, "mask": _mask,
}
