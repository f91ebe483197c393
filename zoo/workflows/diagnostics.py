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

from zoo.data import recipe_splits
from zoo.models import model_for
from zoo.recipe import Recipe

# Relative-error bands of the classic playbook.
WRONG, SUSPECT, KINKS_OK = 1e-2, 1e-4, 1e-7

# Steps h of the centered differences, largest first. Richardson extrapolation of two centered
# differences, (4 D(h/2) - D(h)) / 3, cancels their h^2 term and leaves an O(h^4) truncation
# error, about 1e-12 at h = 1e-3; float64 round-off of the loss (~1e-15) divided by h is about
# 1e-12 too. The plain 2-point difference at h = 1e-5 instead carries ~1e-10 of round-off: a
# relative error of 1e-5 on the ~1e-5 gradient entries of the CNNs. A smaller step is used only
# when a larger one crosses a kink, so that every estimate comes from a stretch where the loss is
# smooth.
STEPS = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
# Activations with a kink at 0 (a jump of the slope): their output's sign marks the smooth piece.
_KINKED_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "selu")


@dataclass
class TensorCheck:
    """The gradient check of one weight tensor (`name` is its path): the largest relative error
    between analytic and numeric gradients over its sampled entries."""

    name: str
    max_relative_error: float
    samples: int
    # Samples whose first (largest) step crossed a kink: a ReLU or leaky ReLU changed sign, a
    # max-pool changed its choice, or an L1-penalized weight changed sign. They are measured
    # again with smaller steps and their error counts like any other.
    kinks: int
    # Of those, samples that crossed a kink at every step (their last estimate is kept).
    unresolved: int = 0

    @property
    def verdict(self) -> str:
        """`good`, `acceptable with kinks`, `suspect` or `wrong`: the playbook's band of the largest
        relative error (`KINKS_OK`, `SUSPECT`, `WRONG`)."""
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
    splits = recipe_splits(recipe)
    args = {k: (0.0 if k in ("dropout", "spatial_dropout") else v)
            for k, v in recipe.model.args.items()}
    return splits, lambda l1, l2: model_for(recipe, splits, args=args, l1=l1, l2=l2)


def relative_error(a: float, n: float) -> float:
    """|a - n| / max(|a|, |n|); both zero counts as agreement."""
    scale = max(abs(a), abs(n))
    return 0.0 if scale == 0 else abs(a - n) / scale


def _kink_layers(model) -> tuple[list, list]:
    """The layers where the loss can have a kink: (ReLU-like layers, max-pooling layers)."""
    from keras import layers

    relus, pools = [], []
    max_pools = (layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D,
                 layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D)
    for layer in model.layers:
        activation = getattr(getattr(layer, "activation", None), "__name__", "")
        if (isinstance(layer, (layers.ReLU, layers.LeakyReLU, layers.PReLU, layers.ELU))
                or activation in _KINKED_ACTIVATIONS):
            relus.append(layer)
        elif isinstance(layer, max_pools):
            pools.append(layer)
    return relus, pools


def _l1_penalized(model) -> set[int]:
    """ids of the variables under an L1 penalty (|w| has a kink at w = 0)."""
    penalized = set()
    for layer in model.layers:
        for attribute in ("kernel", "bias"):
            regularizer = getattr(layer, f"{attribute}_regularizer", None)
            if getattr(regularizer, "l1", 0.0):
                penalized.add(id(getattr(layer, attribute)))
    return penalized


def gradcheck(recipe: Recipe, *, regularized: bool, batch: int = 8, samples: int = 6,
              seed: int = 0, model=None) -> list[TensorCheck]:
    """Analytic against numeric gradients on sampled entries of every weight tensor.

    Each numeric gradient is a Richardson-extrapolated centered difference (see `STEPS`). Every
    forward pass also records which piece of the piecewise-smooth loss it is on (the sign of
    every ReLU-like output, the choice of every max-pool, the sign of L1-penalized weights); a
    step that lands on another piece than the unperturbed weights crossed a kink, and the entry
    is measured again with the next smaller step.

    Args:
        recipe: whose model, data and regularization to check.
        regularized: include the recipe's L1/L2 penalties in the loss.
        batch: examples in the batch the loss is computed on.
        samples: entries sampled per tensor (all of them for smaller tensors).
        seed: of the entry sampling.
        model: check this functional float64 model instead of the recipe's (tests).

    Returns:
        One `TensorCheck` per trainable tensor, kernels and biases both.
    """
    import tensorflow as tf

    from zoo.training.execution import seed_everything

    with float64():
        splits, make = check_model(recipe)
        # After loading: a data set's first load in a process may draw from NumPy's generator,
        # and both passes should check the same initial weights.
        seed_everything(recipe.seed)
        reg = recipe.regularization
        if model is None:
            model = make(reg.l1 if regularized else 0.0, reg.l2 if regularized else 0.0)
        x = tf.constant(splits.x_train[:batch], tf.float64)
        y = tf.one_hot(splits.y_train[:batch], splits.num_classes, dtype=tf.float64)
        loss_fn = keras.losses.CategoricalCrossentropy()
        relus, pools = _kink_layers(model)
        probe = keras.Model(model.inputs, [model.outputs[0], *(layer.output for layer in relus),
                                           *(layer.input for layer in pools)])
        l1_ids = _l1_penalized(model) if regularized else set()

        def loss(probabilities) -> tf.Tensor:
            value = loss_fn(y, probabilities)
            return value + tf.add_n(model.losses) if (regularized and model.losses) else value

        @tf.function
        def evaluate():
            """The loss and the flattened pattern of its smooth piece."""
            outputs = probe(x, training=False)
            # A model with one output returns a tensor, not a list.
            probabilities, *tensors = outputs if isinstance(outputs, list) else [outputs]
            marks = [tf.reshape(t > 0, [-1]) for t in tensors[:len(relus)]]
            for layer, pooled in zip(pools, tensors[len(relus):], strict=True):
                with tf.GradientTape() as tape:
                    tape.watch(pooled)
                    chosen = layer(pooled)
                # The gradient of a max-pool's sum is 1 where it picked its maximum, else 0.
                marks.append(tf.reshape(tape.gradient(chosen, pooled) != 0, [-1]))
            pattern = tf.concat(marks, 0) if marks else tf.zeros([0], tf.bool)
            return loss(probabilities), pattern

        with tf.GradientTape() as tape:
            value = loss(model(x, training=False))
        grads = tape.gradient(value, model.trainable_weights)
        _, base_pattern = evaluate()
        base_pattern = base_pattern.numpy()
        rng = np.random.default_rng(seed)
        checks = []
        for weight, grad in zip(model.trainable_weights, grads, strict=True):
            values = keras.ops.convert_to_numpy(weight).copy()
            analytic = np.zeros_like(values) if grad is None else grad.numpy()
            flat = values.reshape(-1)
            picks = rng.choice(flat.size, size=min(samples, flat.size), replace=False)
            worst, kinks, unresolved = 0.0, 0, 0
            for index in picks:
                numeric, crossed, smooth = _numeric_gradient(
                    evaluate, base_pattern, weight, values, int(index),
                    l1_penalized=id(weight) in l1_ids)
                kinks += crossed
                unresolved += not smooth
                worst = max(worst, relative_error(float(analytic.reshape(-1)[index]), numeric))
            checks.append(TensorCheck(weight.path, worst, len(picks), kinks, unresolved))
        return checks


def _numeric_gradient(evaluate, base_pattern: np.ndarray, weight, values: np.ndarray, index: int,
                      *, l1_penalized: bool) -> tuple[float, bool, bool]:
    """The derivative of the loss along one weight entry, from the largest kink-free step.

    Returns:
        (estimate, whether the first step crossed a kink, whether the final step is kink-free).
    """
    flat = values.reshape(-1)
    original = flat[index]

    def at(offset: float) -> tuple[float, bool]:
        flat[index] = original + offset
        weight.assign(values)
        value, pattern = evaluate()
        return float(value), np.array_equal(pattern.numpy(), base_pattern)

    crossed, smooth, numeric = False, False, 0.0
    try:
        for h in STEPS:
            (plus, same_plus), (minus, same_minus) = at(h), at(-h)
            (half_plus, same_half_plus), (half_minus, same_half_minus) = at(h / 2), at(-h / 2)
            smooth = (same_plus and same_minus and same_half_plus and same_half_minus
                      and not (l1_penalized and abs(original) <= h))
            centered, centered_half = (plus - minus) / (2 * h), (half_plus - half_minus) / h
            if smooth:
                return (4 * centered_half - centered) / 3, crossed, True
            crossed = True
            numeric = centered_half  # no extrapolation across a kink
        return numeric, crossed, smooth
    finally:
        flat[index] = original
        weight.assign(values)


@dataclass
class SanityCheck:
    """One of the `sanity` checks: what it checks, whether it passed, and the numbers behind it."""

    name: str
    passed: bool
    detail: str


def sanity(recipe: Recipe, *, subset: int = 20, max_steps: int = 300) -> list[SanityCheck]:
    """The playbook's three checks, each with the numbers behind its verdict."""
    import tensorflow as tf

    from zoo.training.execution import seed_everything

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
