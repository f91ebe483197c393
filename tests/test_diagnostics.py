"""Gradient check and sanity checks: they pass on the zoo's models and catch broken ones."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from zoo.diagnostics import float64, gradcheck, relative_error, sanity
from zoo.recipe import load_recipe


# MLPs agree to 1e-6; CNN gradients include entries of ~1e-5 whose centered difference is
# limited by float64 round-off (absolute error ~1e-11), so they are held to "not suspect".
@pytest.mark.parametrize("name,limit", [("digits/mlp", 1e-6), ("mnist1d/mlp", 1e-6),
                                        ("digits/cnn", 1e-4), ("mnist1d/cnn", 1e-4)])
def test_gradients_agree_on_the_zoo_models(name, limit):
    recipe = load_recipe(name, ["regularization.l2=1e-3", "regularization.l1=1e-4"])
    for regularized in (False, True):
        checks = gradcheck(recipe, regularized=regularized)
        kinds = {c.name.split("/")[-1] for c in checks}
        assert "kernel" in kinds and ({"bias", "beta"} & kinds)
        worst = max(c.max_relative_error for c in checks)
        assert worst < limit, (name, regularized, worst)


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
