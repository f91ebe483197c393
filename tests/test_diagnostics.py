"""Gradient check, sanity checks and the learning-rate range test: they pass on the zoo's models
and catch broken ones."""

from __future__ import annotations

import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import cli
from zoo.errors import ArgumentError
from zoo.recipe import load_recipe
from zoo.workflows.diagnostics import float64, gradcheck, relative_error, sanity
from zoo.workflows.lr_find import lr_find, suggest


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


def test_gradcheck_command_exits_non_zero_on_a_wrong_tensor(monkeypatch, capsys):
    from zoo.workflows import diagnostics
    from zoo.workflows.diagnostics import TensorCheck

    def checks(recipe, regularized):
        yield TensorCheck("good/kernel", 1e-9, samples=6, kinks=0)
        if regularized:
            yield TensorCheck("broken/kernel", 0.5, samples=6, kinks=0)

    monkeypatch.setattr(diagnostics, "gradcheck", checks)
    assert cli.main(["gradcheck", "digits/mlp"]) == 1
    assert "FAIL  3 tensor checks; worst broken/kernel 5.00e-01 (wrong)" in capsys.readouterr().out


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


def test_lr_find_suggests_a_sane_rate_on_digits_mlp(tmp_path):
    result = lr_find(load_recipe("digits/mlp"), steps=100, track=False, out=tmp_path / "lr.png")
    rates = np.asarray(result.learning_rates)
    assert rates[0] == pytest.approx(1e-7)
    assert np.allclose(rates[1:] / rates[:-1], rates[1] / rates[0])  # exponential
    # Rates up to 10 blow the loss up: the sweep either stops early or climbs far above its
    # lowest loss after it. Which of the two depends on the CPU's rounding (oneDNN): the 4x stop
    # rule fired on an AMD EPYC, while on an Intel Xeon the loss rose to about 3.6x and ran on.
    lowest = int(np.argmin(result.smoothed))
    after = np.asarray(result.losses[lowest:])
    assert result.stopped_early or not np.isfinite(after).all() or (
        after.max() > 3 * result.smoothed[lowest]), (after.max(), result.smoothed[lowest])
    assert 1e-4 <= result.suggested <= 1e-1, result.suggested
    assert result.suggested < result.min_loss_rate
    assert result.override == f"optimizer.learning_rate={result.suggested:.2g}"
    assert (tmp_path / "lr.png").stat().st_size > 10_000


def test_lr_find_logs_a_run_that_comparisons_ignore(mlflow_client, tmp_path):
    recipe = load_recipe("digits/mlp", ["model.widths=[16]", f"name=lr-{uuid.uuid4().hex[:8]}"])
    result = lr_find(recipe, steps=20, out=tmp_path / "lr.png")
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["zoo.kind"] == "lr-find" and "zoo.fingerprint" not in run.data.tags
    history = mlflow_client.get_metric_history(result.run_id, "lr_find/learning_rate")
    assert [m.step for m in history] == list(range(len(result.learning_rates)))
    assert {a.path for a in mlflow_client.list_artifacts(result.run_id)} == {"lr_find.png"}


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    rates = np.logspace(-7, 1, 200)
    x = np.log10(rates)
    # Falls fastest at 1e-3, lowest near 1e-1, then diverges.
    loss = 2.0 - np.tanh(2.0 * (x + 3.0)) + np.where(x > -1, 5.0 * (x + 1) ** 2, 0.0)
    suggested, lowest = suggest(list(rates), list(loss))
    assert suggested == pytest.approx(1e-3, rel=0.1)
    assert lowest == pytest.approx(0.1, rel=0.3)
    assert suggest(list(rates), list(np.linspace(2.0, 3.0, 200)))[0] is None  # never falls


def test_lr_find_refuses_bad_ranges(capsys):
    with pytest.raises(ArgumentError, match="--start"):
        lr_find(load_recipe("digits/mlp"), start=1.0, end=0.1, track=False)
    assert cli.main(["lr-find", "digits/mlp", "--steps", "3", "--no-track"]) == 2
    assert "--steps must be at least 10" in capsys.readouterr().err


def test_lr_find_replaces_the_recipes_schedule_and_warmup(tmp_path):
    # The default recipe decays with a cosine schedule in the graph: its rate cannot be set.
    recipe = load_recipe("mnist1d/cnn_paper", ["optimizer.warmup_epochs=2"])
    assert recipe.optimizer.schedule == "cosine"
    result = lr_find(recipe, steps=12, track=False, out=tmp_path / "lr.png")
    rates = result.learning_rates
    assert len(rates) == 12 and rates[-1] > rates[0]
    assert result.recipe is recipe
