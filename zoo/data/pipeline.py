"""tf.data pipelines over in-memory splits: cache, seeded shuffle, batch, augment, prefetch."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def make_dataset(x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int,
                 *, shuffle_seed: int | None = None, augment: Callable | None = None):
    """A batched tf.data.Dataset of (inputs, one-hot labels).

    One-hot labels let every loss (label-smoothed crossentropy, mse) take the same targets.

    Args:
        shuffle_seed: shuffle with this seed, reshuffling each epoch; None keeps the order
            (validation and test).
        augment: a function from the batched dataset of (inputs, one-hot labels) to an
            augmented one (training only), e.g. `zoo.augment.augment_dataset`. It gets batches
            (B, ...) with B = batch_size except perhaps a smaller last one, after the cache so
            each epoch draws new augmentations, and after batching so ops run vectorized over
            the batch; its result is prefetched.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.map(lambda xi, yi: (xi, tf.one_hot(yi, num_classes)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    # No drop_remainder: every example is seen each epoch (the ops read B from each batch).
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = augment(ds)
    return ds.prefetch(tf.data.AUTOTUNE)
