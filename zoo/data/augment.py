"""Data augmentation: the recipe's `data.augmentation` list turned into seeded tf.data ops.

Ops run on raw training inputs only, in the input pipeline (so saved models stay plain
inference graphs), on whole batches: a few vectorized kernels per batch instead of a graph per
example, which is what made per-example augmentation slow. Every example of a batch still gets
its own random parameters (each draw has shape [B]). Every draw is a stateless op seeded from the
recipe seed and the batch's position in the epoch's stream, so one seed always gives the same
augmented stream, whatever the parallelism. Amplitudes (`noise`, `brightness`) are in units of the
training data's standard deviation; filled pixels or positions take the training mean.
"""

from __future__ import annotations

import math

from zoo.augment_ops import (
    IMAGE_OPS,
    OPS_BY_KIND,
    SEQUENCE_OPS,
    AugmentationOp,
    Brightness,
    Contrast,
    Crop,
    Cutout,
    Flip,
    Mask,
    Noise,
    Rotation,
    Scale,
    Shift,
    Translation,
    Zoom,
    _Op,
    check_ops_fit,
)

# Re-exported: the schema's names are also the runtime's.
__all__ = ["IMAGE_OPS", "OPS_BY_KIND", "SEQUENCE_OPS", "AugmentationOp", "augment_batch",
           "augment_dataset", "augment_tensor", "check_ops_fit", "preview"]


def augment_dataset(ds, ops: list[_Op], seed: int, mean: float, std: float):
    """Apply `ops` to a dataset of (x, y) batches, each example with its own random draws.

    Args:
        ds: batched (x, y) training data, already shuffled: x is (B, H, W, C) for images or
            (B, L, C) for sequences; B may vary (a smaller last batch).
        ops: validated augmentation ops.
        seed: the recipe seed.
        mean: training-data mean, the fill value.
        std: training-data standard deviation, the unit of `noise` and `brightness`.

    Returns:
        The augmented dataset, with the same element spec (static shapes kept).

    Raises:
        ValueError: if x's rank does not fit a batch of the data the ops are for (typically an
            unbatched dataset).
    """
    import tensorflow as tf

    if not ops:
        return ds
    _check_batched(ds.element_spec[0].shape.rank, ops)
    # One int64 per batch, a new stream each epoch, the same streams for the same seed.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    seed_tensor = tf.constant(seed, tf.int64)

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent control flow to convert
    def apply(batch, batch_seed):
        x, y = batch
        return augment_tensor(x, ops, tf.stack([batch_seed, seed_tensor]), mean, std), y

    return tf.data.Dataset.zip(ds, seeds).map(
        apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def augment_batch(x, ops: list[_Op], seed: int, mean: float, std: float):
    """Augment a numpy batch eagerly (previews, tests) with the same ops as training.

    The batch goes through `augment_dataset` as a one-batch dataset, so it gets exactly what the
    first training batch with these inputs and this seed would get.
    """
    import numpy as np
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensors((x, np.zeros(len(x), np.int32)))
    return next(iter(augment_dataset(ds, ops, seed, mean, std)))[0].numpy()


def _check_batched(rank: int | None, ops: list[_Op]) -> None:
    """Refuse inputs whose rank is not a batch of the ops' kind of data (`noise` fits both)."""
    if rank is None:
        return
    for kind, batch_rank in (("image", 4), ("sequence", 3)):
        others = set().union(*(OPS_BY_KIND[k] for k in OPS_BY_KIND if k != kind))
        specific = [op.op for op in ops if op.op in OPS_BY_KIND[kind] and op.op not in others]
        if specific and rank != batch_rank:
            raise ValueError(
                f"augmentation op {specific[0]!r} works on batches of {kind}s of rank "
                f"{batch_rank}, got inputs of rank {rank}; augment_dataset takes a batched "
                "dataset")


def augment_tensor(x, ops: list[_Op], key, mean: float, std: float):
    """Apply `ops` in order to the batch tensor x, all draws derived from `key` (shape [2]).

    The training pipeline (`zoo.data.pipeline.training_dataset`) calls it on a whole epoch at
    once; each example still gets its own draws.
    """
    import tensorflow as tf

    keys = tf.random.experimental.stateless_split(key, num=len(ops))
    for i, op in enumerate(ops):
        x = _APPLY[op.op](x, op, keys[i], mean, std)
    return x


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
    from zoo.data import recipe_splits
    from zoo.errors import RecipeError

    ops = recipe.data.augmentation
    if not ops:
        raise RecipeError(f"{recipe.name}: data.augmentation is empty, nothing to preview; "
                          "add ops in the recipe or override data.augmentation=[{op: ...}]")
    splits = recipe_splits(recipe)
    x = splits.x_train[:samples]
    mean, std = float(splits.x_train.mean()), float(splits.x_train.std())
    augmented = [augment_batch(x, ops, recipe.seed + v, mean, std) for v in range(variants)]
    listed = ", ".join(op.op for op in ops)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return plots.augmentation_grid(x, augmented, splits.kind, path,
                                   f"{recipe.name}: {listed}")


# ---------------------------------------------------------------------------------------------
# The ops. Each takes a batch x (B, H, W, C) or (B, L, C), its op spec, a seed of shape [2], and
# the training mean and std. Random parameters are drawn with shape [B], one per example, and
# broadcast over the example's other axes with `_per_example`.


def _batch_size(x):
    import tensorflow as tf

    return tf.shape(x)[0]


def _uniform(key, low, high, x):
    """One float per example of x, uniform in [low, high)."""
    import tensorflow as tf

    return tf.random.stateless_uniform([_batch_size(x)], seed=key, minval=low, maxval=high)


def _randint(key, low, high, x):
    """One int32 per example of x, uniform in [low, high)."""
    import tensorflow as tf

    return tf.random.stateless_uniform([_batch_size(x)], seed=key, minval=low, maxval=high,
                                       dtype=tf.int32)


def _per_example(values, x):
    """Reshape per-example values [B] to broadcast against x: [B, 1, ...]."""
    import tensorflow as tf

    return tf.reshape(values, [-1] + [1] * (x.shape.rank - 1))


def _split(key, n):
    """n independent seeds from one, as a Python list (graph tensors cannot be iterated)."""
    import tensorflow as tf

    return tf.unstack(tf.random.experimental.stateless_split(key, num=n), num=n)


def _fill(mean, x):
    import tensorflow as tf

    return tf.cast(mean, x.dtype)


def _flip(x, op: Flip, key, mean, std):
    import tensorflow as tf

    # Batch axes: 1 is height (vertical flip), 2 is width (horizontal flip).
    axes = {"horizontal": [2], "vertical": [1], "both": [1, 2]}[op.mode]
    keys = _split(key, len(axes))
    for axis, k in zip(axes, keys, strict=True):
        flip = _per_example(_uniform(k, 0.0, 1.0, x) < 0.5, x)
        x = tf.where(flip, tf.reverse(x, [axis]), x)
    return x


def _affine(x, fill, angle=0.0, zoom=1.0, shift_y=0.0, shift_x=0.0):
    """Rotate (radians) and zoom about the centre, then shift (pixels); bilinear.

    Each parameter is a scalar or one value per example ([B]).
    """
    import tensorflow as tf

    height, width = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    ones = tf.ones([_batch_size(x)])
    angle, zoom, shift_y, shift_x = (ones * v for v in (angle, zoom, shift_y, shift_x))
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # Output pixel (x, y) reads input pixel (a0 x + a1 y + a2, b0 x + b1 y + b2).
    transforms = tf.stack([cos, sin, cx - cos * cx - sin * cy - shift_x,
                           -sin, cos, cy + sin * cx - cos * cy - shift_y,
                           0.0 * ones, 0.0 * ones], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3],
        fill_value=tf.cast(fill, tf.float32), interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.ensure_shape(out, x.shape)


def _rotation(x, op: Rotation, key, mean, std):
    limit = math.radians(op.degrees)
    return _affine(x, mean, angle=_uniform(key, -limit, limit, x))


def _translation(x, op: Translation, key, mean, std):
    ky, kx = _split(key, 2)
    return _affine(x, mean, shift_y=_uniform(ky, -op.fraction, op.fraction, x) * x.shape[1],
                   shift_x=_uniform(kx, -op.fraction, op.fraction, x) * x.shape[2])


def _zoom(x, op: Zoom, key, mean, std):
    return _affine(x, mean, zoom=_uniform(key, 1.0 - op.fraction, 1.0 + op.fraction, x))


def _crop(x, op: Crop, key, mean, std):
    import tensorflow as tf

    # Pad by `padding` with the mean, then take an (H, W) window at a random integer offset in
    # [0, 2 padding] on each axis, per example: gathers with batch_dims=1 pick each one's window.
    p = op.padding
    height, width = x.shape[1], x.shape[2]
    padded = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=_fill(mean, x))
    ky, kx = _split(key, 2)
    rows = _randint(ky, 0, 2 * p + 1, x)[:, None] + tf.range(height)[None, :]
    cols = _randint(kx, 0, 2 * p + 1, x)[:, None] + tf.range(width)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    return tf.ensure_shape(out, x.shape)


def _contrast(x, op: Contrast, key, mean, std):
    import tensorflow as tf

    centre = tf.reduce_mean(x, axis=[1, 2], keepdims=True)  # each example's channel means
    factor = _per_example(_uniform(key, 1.0 - op.factor, 1.0 + op.factor, x), x)
    return (x - centre) * factor + centre


def _brightness(x, op: Brightness, key, mean, std):
    return x + _per_example(_uniform(key, -op.delta, op.delta, x), x) * std


def _noise(x, op: Noise, key, mean, std):
    import tensorflow as tf

    return x + tf.random.stateless_normal(tf.shape(x), seed=key, stddev=op.stddev * std,
                                          dtype=x.dtype)


def _cutout(x, op: Cutout, key, mean, std):
    import tensorflow as tf

    ky, kx = _split(key, 2)
    height, width = x.shape[1], x.shape[2]
    cy = _randint(ky, 0, height, x)[:, None]
    cx = _randint(kx, 0, width, x)[:, None]
    half = (op.size - 1) // 2
    rows = tf.abs(tf.range(height)[None, :] - cy) <= half  # [B, H]
    cols = tf.abs(tf.range(width)[None, :] - cx) <= half  # [B, W]
    inside = tf.logical_and(rows[:, :, None], cols[:, None, :])[..., None]
    return tf.where(inside, _fill(mean, x), x)


def _shift(x, op: Shift, key, mean, std):
    import tensorflow as tf

    length = x.shape[1]
    offset = _randint(key, -op.max_shift, op.max_shift + 1, x)
    source = tf.range(length)[None, :] - offset[:, None]  # [B, L]: where each position reads
    valid = tf.logical_and(source >= 0, source < length)[..., None]
    shifted = tf.gather(x, tf.clip_by_value(source, 0, length - 1), batch_dims=1)
    return tf.where(valid, shifted, _fill(mean, x))


def _scale(x, op: Scale, key, mean, std):
    factor = _per_example(_uniform(key, 1.0 - op.factor, 1.0 + op.factor, x), x)
    return (x - mean) * factor + mean


def _mask(x, op: Mask, key, mean, std):
    import tensorflow as tf

    kl, ks = _split(key, 2)
    length = x.shape[1]
    span = _randint(kl, 1, min(op.max_length, length) + 1, x)
    # Integer draws take scalar bounds only; the start's bound depends on each span, so scale a
    # uniform [0, 1) draw to [0, length - span] instead (the min guards float rounding).
    room = tf.cast(length - span + 1, tf.float32)
    start = tf.minimum(tf.cast(tf.floor(_uniform(ks, 0.0, 1.0, x) * room), tf.int32),
                       length - span)
    position = tf.range(length)[None, :]
    inside = tf.logical_and(position >= start[:, None], position < (start + span)[:, None])
    return tf.where(inside[..., None], _fill(mean, x), x)


_APPLY = {
    "flip": _flip, "rotation": _rotation, "translation": _translation, "zoom": _zoom,
    "crop": _crop, "contrast": _contrast, "brightness": _brightness, "noise": _noise,
    "cutout": _cutout, "shift": _shift, "scale": _scale, "mask": _mask,
}
