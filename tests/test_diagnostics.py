"""Gradient check and sanity checks: they pass on the zoo's models and catch broken ones."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from zoo.diagnostics import float64, gradcheck, relative_error, sanity
from zoo.recipe import load_recipe


# Richardson-extrapolated centered differences, measured away from kinks, agree with the
# analytic gradients to better than 1e-6 on every family, CNNs included.
@pytest.mark.parametrize("name", ["digits/mlp", "mnist1d/mlp", "digits/cnn", "mnist1d/cnn"])
def test_gradients_agree_on_the_zoo_models(name):
    recipe = load_recipe(name, ["regularization.l2=1e-3", "regularization.l1=1e-4"])
    for regularized in (False, True):
        checks = gradcheck(recipe, regularized=regularized)
        kinds = {c.name.split("/")[-1] for c in checks}
        assert "kernel" in kinds and ({"bias", "beta"} & kinds)
        worst = max(c.max_relative_error for c in checks)
        assert worst < 1e-6, (name, regularized, worst)
        assert not any(c.unresolved for c in checks)


def _relu_model(bias: float):
    """Inputs -> 4 ReLU units whose pre-activation is `bias` for every example -> softmax."""
    inputs = keras.Input((40, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(4, kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant(bias), name="hidden")(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


def test_kinks_are_reported_and_measured_on_a_smooth_stretch():
    recipe = load_recipe("mnist1d/mlp")
    with float64():
        near = _relu_model(bias=4e-4)  # a step of 1e-3 crosses 0; 3e-4 does not
        at = _relu_model(bias=0.0)  # every step crosses 0
    checks = {c.name: c for c in gradcheck(recipe, regularized=False, model=near)}
    bias = checks["hidden/bias"]
    assert (bias.kinks, bias.unresolved) == (4, 0)
    assert bias.max_relative_error < 1e-6
    checks = {c.name: c for c in gradcheck(recipe, regularized=False, model=at)}
    bias = checks["hidden/bias"]
    # ReLU's derivative at 0 is taken as 0, the centered difference sees half the right slope.
    assert (bias.kinks, bias.unresolved) == (4, 4)
    assert bias.verdict == "wrong"


class _WrongGradient(keras.layers.Layer):
    """y = x * w, but reports twice the true gradient for w."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

    def call(self, x):
        @tf.custom_gradient
        def scale(x, w):
            def grad(upstream):
                return upstream * w, 2.0 * tf.reduce_sum(upstream * x, axis=0)
            return x * w, grad
        # identity: the function sees a tensor, and the gradient still reaches the variable
        return scale(x, tf.identity(self.w))


def test_gradcheck_catches_a_wrong_gradient():
    recipe = load_recipe("mnist1d/mlp")
    with float64():
        inputs = keras.Input((40, 1))
        x = keras.layers.Flatten()(inputs)
        x = _WrongGradient(name="wrong")(x)
        outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
        model = keras.Model(inputs, outputs)
    checks = {c.name: c for c in gradcheck(recipe, regularized=False, model=model)}
    assert checks["wrong/w"].verdict == "wrong"
    assert checks["head/kernel"].verdict in ("good", "acceptable with kinks")


def test_relative_error_bands():
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(1.0, 1.0 + 1e-9) == pytest.approx(1e-9, rel=1e-3)


def test_sanity_passes_on_digits_mlp():
    checks = sanity(load_recipe("digits/mlp"))
    assert [c.passed for c in checks] == [True, True, True], checks


def test_broken_loss_fails_the_initial_loss_check():
    checks = sanity(load_recipe("digits/mlp", ["training.loss=mse"]))
    assert checks[0].passed is False
    assert "ln(10)" in checks[0].detail
