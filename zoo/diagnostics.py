"""Checks from the classic training playbook: gradient check and sanity checks.

`gradcheck` compares GradientTape gradients with centered differences in float64; `sanity`
checks the initial loss, that L2 raises it, and that the model can overfit a tiny subset.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np

from zoo.data import load_dataset
from zoo.models import build_model
from zoo.recipe import Recipe

# Relative-error bands of the classic playbook.
WRONG, SUSPECT, KINKS_OK = 1e-2, 1e-4, 1e-7


@dataclass
class TensorCheck:
    name: str
    max_relative_error: float
    samples: int
    kinks: int  # samples whose one-sided differences disagree: a ReLU/max-pool kink was crossed

    @property
    def verdict(self) -> str:
        error = self.max_relative_error
        if error > WRONG:
            return "wrong"
        if error > SUSPECT:
            return "suspect"
        if error > KINKS_OK:
            return "acceptable with kinks"
        return "good"


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """Build and compute in float64. Both the float type and the global dtype policy are set:
    once any layer has been built, Keras keeps a float32 policy that floatx alone won't change."""
    previous_floatx, previous_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(previous_floatx)
        keras.config.set_dtype_policy(previous_policy)


def check_model(recipe: Recipe):
    """The recipe's model for checking: float64, no dropout (deterministic forward passes)."""
    splits = load_dataset(recipe.data.dataset, recipe.data.validation_split)
    args = {k: (0.0 if k in ("dropout", "spatial_dropout") else v)
            for k, v in recipe.model.args.items()}
    standardize = splits.standardization() if recipe.data.standardize else None
    return splits, lambda l1, l2: build_model(
        recipe.model.name, args, input_shape=splits.input_shape,
        num_classes=splits.num_classes, standardize=standardize, l1=l1, l2=l2)


def relative_error(a: float, n: float) -> float:
    """|a - n| / max(|a|, |n|); both zero counts as agreement."""
    scale = max(abs(a), abs(n))
    return 0.0 if scale == 0 else abs(a - n) / scale


def gradcheck(recipe: Recipe, *, regularized: bool, batch: int = 8, samples: int = 6,
              step: float = 1e-5, seed: int = 0, model=None) -> list[TensorCheck]:
    """Analytic against numeric gradients on sampled entries of every weight tensor.

    Args:
        recipe: whose model, data and regularization to check.
        regularized: include the recipe's L1/L2 penalties in the loss.
        batch: examples in the batch the loss is computed on.
        samples: entries sampled per tensor (all of them for smaller tensors).
        step: h of the centered difference (f(w+h) - f(w-h)) / 2h; 1e-5 balances float64
            round-off (which grows as h shrinks) against truncation (which grows with h).
        model: check this float64 model instead of the recipe's (tests).

    Returns:
        One `TensorCheck` per trainable tensor, kernels and biases both.
    """
    import tensorflow as tf

    from zoo.train import seed_everything

    seed_everything(recipe.seed)
    with float64():
        splits, make = check_model(recipe)
        reg = recipe.regularization
        if model is None:
            model = make(reg.l1 if regularized else 0.0, reg.l2 if regularized else 0.0)
        x = tf.constant(splits.x_train[:batch], tf.float64)
        y = tf.one_hot(splits.y_train[:batch], splits.num_classes, dtype=tf.float64)
        loss_fn = keras.losses.CategoricalCrossentropy()

        def loss() -> tf.Tensor:
            value = loss_fn(y, model(x, training=False))
            return value + tf.add_n(model.losses) if (regularized and model.losses) else value

        with tf.GradientTape() as tape:
            value = loss()
        grads = tape.gradient(value, model.trainable_weights)
        rng = np.random.default_rng(seed)
        checks = []
        for weight, grad in zip(model.trainable_weights, grads, strict=True):
            values = keras.ops.convert_to_numpy(weight).copy()
            analytic = np.zeros_like(values) if grad is None else grad.numpy()
            flat = values.reshape(-1)
            picks = rng.choice(flat.size, size=min(samples, flat.size), replace=False)
            worst, kinks = 0.0, 0
            base = float(value)
            for index in picks:
                original = flat[index]
                flat[index] = original + step
                weight.assign(values)
                plus = float(loss())
                flat[index] = original - step
                weight.assign(values)
                minus = float(loss())
                flat[index] = original
                weight.assign(values)
                numeric = (plus - minus) / (2 * step)
                # One-sided slopes that disagree far beyond curvature mean a kink in between.
                forward, backward = (plus - base) / step, (base - minus) / step
                if relative_error(forward, backward) > 1e-2 and abs(forward - backward) > 1e-6:
                    kinks += 1
                a = float(analytic.reshape(-1)[index])
                worst = max(worst, relative_error(a, numeric))
            checks.append(TensorCheck(weight.path, worst, len(picks), kinks))
        return checks


@dataclass
class SanityCheck:
    name: str
    passed: bool
    detail: str


def sanity(recipe: Recipe, *, subset: int = 20, max_steps: int = 300) -> list[SanityCheck]:
    """The playbook's three checks, each with the numbers behind its verdict."""
    import tensorflow as tf

    from zoo.train import seed_everything

    seed_everything(recipe.seed)
    splits, make = check_model(recipe)
    x = tf.constant(splits.x_train[:64])
    y = tf.one_hot(splits.y_train[:64], splits.num_classes)
    # The recipe's loss, without label smoothing (a regularizer).
    loss_fn = (keras.losses.MeanSquaredError() if recipe.training.loss == "mse"
               else keras.losses.CategoricalCrossentropy())
    checks = []

    # 1. With regularization off, a fresh softmax classifier should be near-uniform. He-style
    # initializations give logits of unit scale, which lifts the loss to about 1.2-1.4 ln(C);
    # a loss off by more than half of ln(C) means the loss or the output layer is wrong.
    # The forward pass is the first training step's (batch norm on batch statistics).
    expected = math.log(splits.num_classes)
    seed_everything(recipe.seed)
    initial = float(loss_fn(y, make(0.0, 0.0)(x, training=True)))
    close = abs(initial - expected) <= 0.5 * expected
    checks.append(SanityCheck("initial loss ~ ln(classes)", close,
                              f"{initial:.4f} vs ln({splits.num_classes}) = {expected:.4f}"))

    # 2. A penalty adds to the loss: raising L2 must raise the initial (total) loss.
    seed_everything(recipe.seed)
    plain = make(0.0, 0.0)
    seed_everything(recipe.seed)
    penalized = make(0.0, 1e-2)
    loss_plain = float(loss_fn(y, plain(x, training=True)))
    data_loss = loss_fn(y, penalized(x, training=True))
    loss_l2 = float(data_loss + tf.cast(tf.add_n(penalized.losses), data_loss.dtype))
    checks.append(SanityCheck("raising L2 raises the initial loss", loss_l2 > loss_plain,
                              f"{loss_plain:.4f} with l2=0, {loss_l2:.4f} with l2=0.01"))

    # 3. Without regularization and augmentation, a tiny subset must be learned completely.
    seed_everything(recipe.seed)
    model = make(0.0, 0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss_fn, metrics=["accuracy"])
    tiny_x, tiny_y = splits.x_train[:subset], keras.utils.to_categorical(
        splits.y_train[:subset], splits.num_classes)
    accuracy, steps = 0.0, 0
    while steps < max_steps and accuracy < 1.0:
        history = model.fit(tiny_x, tiny_y, batch_size=subset, epochs=25, verbose=0)
        steps += 25
        accuracy = float(model.evaluate(tiny_x, tiny_y, verbose=0)[1])
    checks.append(SanityCheck(f"overfits {subset} examples", accuracy == 1.0,
                              f"train accuracy {accuracy:.2f} after {steps} steps, loss "
                              f"{history.history['loss'][-1]:.4f}"))
    return checks
