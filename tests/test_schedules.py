"""Learning-rate schedules, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from zoo.recipe import load_recipe
from zoo.training.schedules import Warmup, learning_rate_at, make_schedule

SPE = 10  # steps per epoch
TOTAL = 100


def section(*overrides: str):
    return load_recipe("mnist1d/mlp", ["optimizer.learning_rate=0.1", *overrides]).optimizer


@pytest.mark.parametrize("overrides,step,expected", [
    (["optimizer.schedule=constant"], 55, 0.1),
    (["optimizer.schedule=plateau"], 55, 0.1),
    (["optimizer.schedule=step", "optimizer.drop_every=2", "optimizer.factor=0.5"], 19, 0.1),
    (["optimizer.schedule=step", "optimizer.drop_every=2", "optimizer.factor=0.5"], 20, 0.05),
    (["optimizer.schedule=step", "optimizer.drop_every=2", "optimizer.factor=0.5"], 45, 0.025),
    (["optimizer.schedule=exponential", "optimizer.decay_rate=0.5"], 20, 0.025),
    (["optimizer.schedule=exponential", "optimizer.decay_rate=0.5"], 5, 0.1 * 0.5 ** 0.5),
    (["optimizer.schedule=inverse_time", "optimizer.decay_rate=1.0"], 30, 0.1 / 4),
    (["optimizer.schedule=cosine"], 0, 0.1),
    (["optimizer.schedule=cosine"], 50, 0.05),
    (["optimizer.schedule=cosine"], 100, 0.0),
    (["optimizer.warmup_epochs=2"], 0, 0.1 / 20),
    (["optimizer.warmup_epochs=2"], 19, 0.1),
    (["optimizer.schedule=cosine", "optimizer.warmup_epochs=2"], 20, 0.1),
    (["optimizer.schedule=cosine", "optimizer.warmup_epochs=2"], 60,
     0.1 * 0.5 * (1 + math.cos(math.pi * 40 / 80))),
])
def test_learning_rate_at(overrides, step, expected):
    assert learning_rate_at(section(*overrides), step, SPE, TOTAL) == pytest.approx(expected)


SCHEDULES = [
    ["optimizer.schedule=constant"],
    ["optimizer.schedule=step", "optimizer.drop_every=2", "optimizer.factor=0.5"],
    ["optimizer.schedule=exponential", "optimizer.decay_rate=0.5"],
    ["optimizer.schedule=inverse_time", "optimizer.decay_rate=1.0"],
    ["optimizer.schedule=cosine"],
    *[[*s, "optimizer.warmup_epochs=2"] for s in (
        ["optimizer.schedule=constant"], ["optimizer.schedule=step", "optimizer.drop_every=2"],
        ["optimizer.schedule=exponential"], ["optimizer.schedule=inverse_time"],
        ["optimizer.schedule=cosine"])],
]


@pytest.mark.parametrize("overrides", SCHEDULES, ids=lambda o: " ".join(o))
def test_graph_schedules_follow_the_reference_formulas(overrides):
    """What the optimizer evaluates in the graph equals `learning_rate_at` at every step."""
    import keras

    recipe_section = section(*overrides)
    schedule = make_schedule(recipe_section, SPE, TOTAL)
    for step in range(0, TOTAL + 10):  # past the end too: cosine stays at 0
        graph = (float(keras.ops.convert_to_numpy(schedule(step))) if callable(schedule)
                 else schedule)
        expected = learning_rate_at(recipe_section, step, SPE, TOTAL)
        # float32 in the graph: agreement to 1e-6 of the base rate.
        assert graph == pytest.approx(expected, rel=1e-5, abs=1e-7), (step, graph, expected)


def test_schedules_without_warmup_are_keras_built_ins_and_warmup_round_trips(tmp_path):
    import keras

    for overrides in SCHEDULES[:5]:
        schedule = make_schedule(section(*overrides), SPE, TOTAL)
        assert isinstance(schedule, float) or type(schedule).__module__.startswith("keras."), (
            overrides, type(schedule))
    warm = make_schedule(section("optimizer.schedule=cosine", "optimizer.warmup_epochs=2"),
                         SPE, TOTAL)
    assert isinstance(warm, Warmup)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(warm))
    for step in (0, 7, 20, 60):
        assert float(again(step)) == pytest.approx(float(warm(step)))


def test_plateau_decays_when_the_monitor_stalls():
    import keras

    from zoo.training.schedules import LearningRateController

    controller = LearningRateController(
        section("optimizer.schedule=plateau", "optimizer.patience=2", "optimizer.factor=0.5"),
        steps_per_epoch=1, epochs=10)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    controller.set_model(model)
    rates = []
    for epoch, val_loss in enumerate([1.0, 0.9, 0.95, 0.92, 0.91, 0.95, 0.99]):
        controller.on_epoch_begin(epoch)
        logs = {"val_loss": val_loss}
        controller.on_epoch_end(epoch, logs)
        rates.append(logs["learning_rate"])
    # Improves at epochs 0 and 1; stalls for 2 epochs (2, 3) -> halved from epoch 4 on;
    # stalls again at 4 and 5 -> halved again from epoch 6.
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025])
