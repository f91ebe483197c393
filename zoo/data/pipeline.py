"""tf.data pipelines over in-memory splits.

Training data (`training_dataset`) stay resident as tensors and are prepared a whole epoch at a
time: one seeded permutation, one gather, one vectorized augmentation of every example, then
batches sliced from that. A per-example shuffle buffer and a per-batch augmentation map cost a
millisecond or more per batch, as much as a small model's training step; per epoch they cost
about one. `make_dataset` is the plain batched pipeline (previews, tests, a bare `fit`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def training_dataset(x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int, *,
                     seed: int, augment: Callable | None = None, start_epoch: int = 0,
                     shuffle: bool = True):
    """Endless shuffled (and augmented) training batches of (inputs, one-hot labels).

    Read it `ceil(len(x) / batch_size)` batches an epoch (Keras' `steps_per_epoch`): every
    example once per epoch, in a new order each epoch, the last batch smaller when the batch
    size does not divide the split. One iterator serves the whole run, so the prefetch prepares
    the next epoch on another core while this one trains.

    Args:
        seed: the recipe seed: the same seed gives the same order and augmentations.
        augment: `augment(x, key)`, a function of a whole epoch's inputs (N, ...) and a
            stateless seed of shape [2], returning augmented inputs of the same shape (e.g.
            `zoo.data.augment.augment_tensor`); None for no augmentation.
        start_epoch: epochs already trained (a resumed run): the stream starts where an
            uninterrupted run would be after that many epochs.
        shuffle: False keeps the examples in their order every epoch (augmentation still
            draws anew each epoch).
    """
    import tensorflow as tf

    n = len(x)
    steps = -(-n // batch_size)
    inputs = tf.constant(x)
    targets = tf.one_hot(tf.constant(y), num_classes)
    seed_tensor = tf.constant(seed, tf.int64)

    # Plain Python over tensors, no tensor-dependent control flow: without autograph's source
    # conversion, tracing the augmented epoch takes 0.3 s less (mnist1d/cnn_paper).
    @tf.autograph.experimental.do_not_convert
    def epoch(epoch_seed):
        """A whole epoch's inputs and targets: shuffled, then augmented."""
        order_key, augment_key = tf.unstack(tf.random.experimental.stateless_split(
            tf.stack([epoch_seed, seed_tensor]), num=2))
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=order_key)
            xs, ys = tf.gather(inputs, order), tf.gather(targets, order)
        else:
            xs, ys = inputs, targets
        if augment is not None:
            xs = augment(xs, augment_key)
        return xs, ys

    @tf.autograph.experimental.do_not_convert
    def batches(xs, ys):
        return tf.data.Dataset.range(steps).map(
            lambda i: (xs[i * batch_size:(i + 1) * batch_size],
                       ys[i * batch_size:(i + 1) * batch_size]))

    # One int64 per epoch from an endless stream: the same stream for the same seed. Each epoch
    # is prepared whole one epoch ahead (the first prefetch), on the pipeline's own thread while
    # the model trains on the one before; then its batches are sliced off (the second). With
    # the epoch prepared only when its first batch is due, a few batches ahead, the preparation
    # (2.5 ms for mnist1d/cnn_paper's augmentation) held up every epoch by as much.
    options = tf.data.Options()
    # One thread of its own: the pipeline's work is a few ms an epoch, and more threads only
    # contend with the training thread for the cores.
    options.threading.private_threadpool_size = 1
    # Fixed buffers, not AUTOTUNE: with tf.data's autotuning thread running, deleting the
    # iterator at the end of `fit` took up to 1.5 s when another process trained beside this one.
    options.autotune.enabled = False
    return (tf.data.Dataset.random(seed=seed).skip(start_epoch).map(epoch).prefetch(1)
            .flat_map(batches).prefetch(4).with_options(options))


def make_dataset(x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int,
                 *, shuffle_seed: int | None = None, augment: Callable | None = None):
    """A batched tf.data.Dataset of (inputs, one-hot labels).

    One-hot labels let every loss (label-smoothed crossentropy, mse) take the same targets.

    Args:
        shuffle_seed: shuffle with this seed, reshuffling each epoch; None keeps the order
            (validation and test).
        augment: a function from the batched dataset of (inputs, one-hot labels) to an
            augmented one (training only), e.g. `zoo.data.augment.augment_dataset`. It gets batches
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
