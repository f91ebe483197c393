"""Every value of every switch, and a check that the built or trained model reflects it.

Table-driven: each row is (recipe key, value, the data sets and model families it applies to,
a check). Structural rows (layers, optimizer, loss, penalties) are checked on the model that
`prepare` builds and compiles, without fitting; rows whose effect only shows while training
(schedules, warmup, early stopping, the L1 metric, augmentation) train, one full-batch step per
epoch. The default suite runs each row once, on one family and data set; the slow suite
(`make test-full`) runs every row on every family and data set it applies to.

Checks assert; `_run` fails one that returns instead, and `test_check_rejects_another_value`
feeds each check the model or run of another value of its key, so a check that cannot fail is
caught.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import pytest

from zoo.data import load_dataset
from zoo.data.augment import IMAGE_OPS, SEQUENCE_OPS
from zoo.data.pipeline import training_dataset
from zoo.models import _blocks
from zoo.recipe import OPTIMIZERS, SCHEDULES, load_recipe
from zoo.training.schedules import current_rate
from zoo.training.trainer import prepare, train

BOTH, IMAGES, SEQUENCES = ("digits", "mnist1d"), ("digits",), ("mnist1d",)
SMALL = {
    "mlp": ["model.widths=[8, 8]"],
    "cnn": ["model.widths=[8, 8]", "model.convs_per_block=1"],
}
# Above the largest training split (mnist1d: 3600), so every epoch is one optimizer step: the
# fewest steps to train, and the rate logged after epoch e is the rate of step e - 1.
FULL_BATCH = 4096


def layers_of(model, cls) -> list:
    return [layer for layer in model.layers if type(layer) is cls]


def named(model, suffix: str) -> list:
    return [layer for layer in model.layers if layer.name.endswith(suffix)]


def conv_layers(model):
    return [layer for layer in model.layers
            if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D))]


ACTIVATION_CHECKS = {
    "relu": lambda m: layers_of(m, keras.layers.ReLU),
    "leaky_relu": lambda m: layers_of(m, keras.layers.LeakyReLU),
    "prelu": lambda m: layers_of(m, keras.layers.PReLU),
    "elu": lambda m: layers_of(m, keras.layers.ELU),
    **{name: (lambda m, fn=fn: [layer for layer in layers_of(m, keras.layers.Activation)
                                if layer.activation.__name__ == fn])
       for name, fn in [("gelu", "gelu"), ("swish", "silu"), ("sigmoid", "sigmoid"),
                        ("tanh", "tanh")]},
}
NORM_CLASSES = {"batch": keras.layers.BatchNormalization,
                "layer": keras.layers.LayerNormalization,
                "group": keras.layers.GroupNormalization}
INITIALIZER_CLASSES = {"he_normal": "HeNormal", "he_uniform": "HeUniform",
                       "glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal",
                       "lecun_normal": "LecunNormal", "zeros": "Zeros"}
POOL_CLASSES = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
                keras.layers.AveragePooling1D, keras.layers.AveragePooling2D)
OPTIMIZER_CLASSES = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adagrad": "Adagrad",
                     "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}

# The rate logged after each of 3 one-step epochs (FULL_BATCH), from learning_rate 0.01,
# drop_every 1, factor 0.1, decay_rate 0.9, and for plateau patience 1 with a min_delta no epoch
# can beat: it decays after epoch 2, so epoch 3 runs at 0.001. Every schedule gives a different
# list, so a run of one cannot pass the check of another. tests/test_schedules.py checks the
# formulas themselves; these rows check that the recipe key reaches the training loop.
SCHEDULE_RATES = {
    "constant": [0.01, 0.01, 0.01],
    "step": [0.01, 0.001, 0.0001],
    "exponential": [0.01, 0.009, 0.0081],
    "inverse_time": [0.01, 0.01 / 1.9, 0.01 / 2.8],
    "cosine": [0.01, 0.0075, 0.0025],  # 0.01 * (1 + cos(pi * step / 3)) / 2
    "plateau": [0.01, 0.01, 0.001],
}
# A 2-epoch warmup ramps over its 2 steps, rate * (step + 1) / 2; without one, the full rate.
WARMUP_RATES = {0: [0.01, 0.01], 2: [0.005, 0.01]}


def early_stopping_epochs(enabled: bool) -> int:
    # Three epochs with a min_delta no epoch can beat: early stopping ends after patience 1.
    return 2 if enabled else 3


# ---------------------------------------------------------------------------------------------
# Checks: (model, result) -> None, failing by assertion. `result` is None for structural rows
# (the model is the compiled, unfitted one from `prepare`) and the `Result` of `train` otherwise.


def check_activation(value):
    def check(model, result):
        assert ACTIVATION_CHECKS[value](model), f"no {value} layer"
        others = [k for k in ACTIVATION_CHECKS if k != value and ACTIVATION_CHECKS[k](model)]
        assert not others, f"{value} model also has {others}"
    return check


def check_normalization(value):
    def check(model, result):
        for kind, cls in NORM_CLASSES.items():
            assert bool(layers_of(model, cls)) == (kind == value), kind
    return check


def check_norm_position(value):
    def check(model, result):
        names = [layer.name for layer in model.layers]
        norm, act = names.index(named(model, "_norm")[0].name), names.index(
            named(model, "_act")[0].name)
        assert (norm < act) == (value == "pre")
    return check


def check_initializer(value):
    def check(model, result):
        kernels = conv_layers(model) or layers_of(model, keras.layers.Dense)
        assert type(kernels[0].kernel_initializer).__name__ == INITIALIZER_CLASSES[value]
    return check


def check_pooling(value):
    def check(model, result):
        pools = [layer for layer in model.layers if isinstance(layer, POOL_CLASSES)]
        down = named(model, "_down")
        if value in ("max", "avg"):
            prefix = {"max": "MaxPooling", "avg": "AveragePooling"}[value]
            assert pools and all(type(p).__name__.startswith(prefix) for p in pools)
            assert not down
        elif value == "strided":
            assert not pools and down and all(d.strides[0] == 2 for d in down)
        else:
            assert not pools and not down
    return check


def check_head(value):
    expected = {"flatten": "Flatten", "global_avg": "GlobalAveragePooling",
                "global_max": "GlobalMaxPooling"}[value]

    def check(model, result):
        got = type(model.get_layer("head")).__name__
        assert got.startswith(expected), f"head is {got}, not {expected}"
    return check


def check_presence(cls, present: bool):
    def check(model, result):
        assert bool(layers_of(model, cls)) == present
    return check


def check_conv_attribute(attribute: str, value):
    def check(model, result):
        convs = conv_layers(model)
        got = [getattr(c, attribute) for c in convs]
        got = [g[0] if isinstance(g, tuple) else g for g in got]
        assert value in got, f"{attribute}={value} not in {got}"
    return check


def check_penalty(present: bool):
    def check(model, result):
        assert bool(model.losses) == present, model.losses
    return check


def check_near_zero_metric(present: bool):
    # The fraction of near-zero kernel weights is logged by a callback train adds only with L1.
    def check(model, result):
        assert ("near_zero_weights" in result.history) == present, list(result.history)
        if present:
            assert all(0.0 <= v <= 1.0 for v in result.history["near_zero_weights"])
    return check


def check_label_smoothing(value):
    def check(model, result):
        assert model.loss.label_smoothing == value, model.loss.label_smoothing
    return check


def check_early_stopping(enabled: bool):
    def check(model, result):
        assert result.epochs == early_stopping_epochs(enabled), result.epochs
    return check


def check_optimizer(value):
    def check(model, result):
        optimizer = model.optimizer
        assert type(optimizer).__name__ == OPTIMIZER_CLASSES[value]
        if value in ("momentum", "nesterov"):
            assert optimizer.momentum > 0 and optimizer.nesterov == (value == "nesterov")
        if value == "sgd":
            assert optimizer.momentum == 0
    return check


def check_rates(expected: list[float]):
    def check(model, result):
        rates = result.history["learning_rate"]
        assert rates == pytest.approx(expected), f"rates {rates}, expected {expected}"
        # The rates logged come from the reference formula: the optimizer's own schedule, in
        # the graph, must have used the same at the last step.
        used = current_rate(model.optimizer)
        assert used == pytest.approx(rates[-1], rel=1e-5), f"optimizer used {used}"
    return check


def check_clip(attribute: str, value):
    def check(model, result):
        got = getattr(model.optimizer, attribute)
        assert got == value, f"{attribute} is {got}"
    return check


def check_loss(value):
    expected = {"crossentropy": "CategoricalCrossentropy", "mse": "MeanSquaredError"}[value]

    def check(model, result):
        assert type(model.loss).__name__ == expected, type(model.loss).__name__
    return check


def check_augmented(model, result):
    """The training stream differs from the same shuffled stream without augmentation.

    The run itself shows that fit accepts the augmented stream (a NaN loss would have failed it:
    tests/test_train.py covers that); this shows the stream is augmented at all.
    """
    recipe = result.recipe
    prepared = prepare(recipe)
    splits = prepared.splits
    plain = training_dataset(splits.x_train, splits.y_train, splits.num_classes,
                             recipe.data.batch_size, seed=recipe.seed)
    (x_augmented, y_augmented), (x_plain, y_plain) = (next(iter(prepared.train_data)),
                                                      next(iter(plain)))
    assert x_augmented.shape == x_plain.shape and x_augmented.dtype == x_plain.dtype
    np.testing.assert_array_equal(y_augmented, y_plain)  # the same examples in the same order
    assert not np.allclose(x_augmented, x_plain), "the training inputs are not augmented"


# ---------------------------------------------------------------------------------------------
# The table

NEXT = object()  # Case.wrong: the meta-test uses the next value of the same axis
DEFAULT = object()  # a value that leaves the key at the recipe's default


@dataclass(frozen=True)
class Case:
    key: str
    value: Any
    check: Callable
    datasets: tuple[str, ...] = BOTH
    families: tuple[str, ...] = ("cnn",)
    extra: tuple[str, ...] = ()
    trains: bool = False  # False: checked on the compiled model from `prepare`, not fitted
    epochs: int = 1
    # Training rows only: the result a run of a recipe gives, made up without running it, so
    # the meta-test can feed the check a run of another value cheaply.
    fake: Callable | None = None
    # The other value the meta-test feeds the check: NEXT, DEFAULT or a value.
    wrong: Any = NEXT
    label: str = ""  # tells apart rows of one key that check different things

    @property
    def id(self) -> str:
        return f"{self.key}={self.value}" + (f"({self.label})" if self.label else "")


def _fake_rates(table, key: Callable):
    return lambda recipe: SimpleNamespace(history={"learning_rate": table[key(recipe)]})


def _fake_l1_run(recipe):
    metric = {"near_zero_weights": [0.5]} if recipe.regularization.l1 > 0 else {}
    return SimpleNamespace(history={"loss": [1.0], **metric})


def _fake_stopping_run(recipe):
    return SimpleNamespace(
        epochs=early_stopping_epochs(recipe.regularization.early_stopping is not None))


def check_order(shuffled: bool):
    """The first training batch is the split's first examples in their stored order exactly
    when the recipe does not shuffle."""

    def check(model, result):
        prepared = prepare(result.recipe)
        x_first, _ = next(iter(prepared.train_data))
        stored = prepared.splits.x_train[:len(x_first)]
        in_order = bool(np.array_equal(np.asarray(x_first), stored))
        assert in_order is not shuffled, f"shuffle={shuffled} but in stored order: {in_order}"
    return check


def _fake_augmented_run(recipe):
    # Real where it is cheap: the check prepares this recipe's pipeline, nothing is fitted.
    return SimpleNamespace(recipe=recipe)


CASES = [
    *[Case("model.activation", v, check_activation(v), families=("mlp", "cnn"))
      for v in typing.get_args(_blocks.Activation)],
    *[Case("model.normalization", v, check_normalization(v), families=("mlp", "cnn"),
           extra=("model.norm_groups=2",)) for v in typing.get_args(_blocks.Normalization)],
    *[Case("model.norm_position", v, check_norm_position(v), families=("mlp", "cnn"),
           extra=("model.normalization=batch",)) for v in ("pre", "post")],
    *[Case("model.initializer", v, check_initializer(v), families=("mlp", "cnn"))
      for v in typing.get_args(_blocks.Initializer)],
    *[Case("model.pooling", v, check_pooling(v)) for v in typing.get_args(_blocks.Pooling)],
    *[Case("model.head", v, check_head(v)) for v in typing.get_args(_blocks.Head)],
    *[Case("model.residual", v, check_presence(keras.layers.Add, v), families=("mlp", "cnn"))
      for v in (True, False)],
    *[Case("model.dropout", v, check_presence(keras.layers.Dropout, v > 0),
           families=("mlp", "cnn")) for v in (0.0, 0.3)],
    *[Case("model.spatial_dropout", v, check_presence(
        keras.layers.SpatialDropout2D, v > 0), datasets=IMAGES) for v in (0.0, 0.3)],
    *[Case("model.spatial_dropout", v, check_presence(
        keras.layers.SpatialDropout1D, v > 0), datasets=SEQUENCES) for v in (0.0, 0.3)],
    Case("model.padding", "same", check_conv_attribute("padding", "same")),
    Case("model.padding", "valid", check_conv_attribute("padding", "valid"),
         extra=("model.pooling=none",)),
    Case("model.padding", "causal", check_conv_attribute("padding", "causal"),
         datasets=SEQUENCES),
    Case("model.kernel_size", 5, check_conv_attribute("kernel_size", 5)),
    Case("model.strides", 2, check_conv_attribute("strides", 2), extra=("model.pooling=none",)),
    Case("model.dilation", 2, check_conv_attribute("dilation_rate", 2)),
    Case("model.groups", 2, check_conv_attribute("groups", 2),
         extra=("model.convs_per_block=2",)),
    *[Case(key, v, check_penalty(v > 0), families=("mlp", "cnn"))
      for key in ("regularization.l1", "regularization.l2") for v in (0.0, 1e-4)],
    *[Case("regularization.l1", v, check_near_zero_metric(v > 0), families=("mlp", "cnn"),
           trains=True, fake=_fake_l1_run, label="metric") for v in (0.0, 1e-4)],
    *[Case("regularization.label_smoothing", v, check_label_smoothing(v)) for v in (0.0, 0.1)],
    *[Case("regularization.early_stopping", v, check_early_stopping(v is not None),
           families=("mlp",), trains=True, epochs=3, fake=_fake_stopping_run)
      for v in (None, {"patience": 1, "min_delta": 100.0})],
    *[Case("optimizer.name", v, check_optimizer(v), families=("mlp",)) for v in OPTIMIZERS],
    *[Case("optimizer.schedule", v, check_rates(SCHEDULE_RATES[v]), families=("mlp",),
           trains=True, epochs=3,
           fake=_fake_rates(SCHEDULE_RATES, lambda r: r.optimizer.schedule),
           extra=("optimizer.learning_rate=0.01", "optimizer.drop_every=1",
                  "optimizer.patience=1", "optimizer.min_delta=100.0"))
      for v in SCHEDULES],
    *[Case("optimizer.warmup_epochs", v, check_rates(WARMUP_RATES[v]), families=("mlp",),
           trains=True, epochs=2,
           fake=_fake_rates(WARMUP_RATES, lambda r: r.optimizer.warmup_epochs),
           extra=("optimizer.learning_rate=0.01",)) for v in (0, 2)],
    Case("optimizer.clipnorm", 1.0, check_clip("clipnorm", 1.0), families=("mlp",)),
    Case("optimizer.clipvalue", 0.5, check_clip("clipvalue", 0.5), families=("mlp",)),
    *[Case("training.loss", v, check_loss(v), families=("mlp",)) for v in ("crossentropy", "mse")],
    *[Case("data.shuffle", v, check_order(v), families=("mlp",), trains=True,
           fake=_fake_augmented_run) for v in (True, False)],
    # The check cannot tell one op from another, only augmented from plain: its wrong input is
    # the default, no augmentation.
    *[Case("data.augmentation", [{"op": op}], check_augmented, datasets=IMAGES, trains=True,
           fake=_fake_augmented_run, wrong=DEFAULT) for op in IMAGE_OPS],
    *[Case("data.augmentation", [{"op": op}], check_augmented, datasets=SEQUENCES, trains=True,
           fake=_fake_augmented_run, wrong=DEFAULT) for op in SEQUENCE_OPS],
]


def _recipe(case: Case, dataset: str, family: str, value: Any = NEXT):
    """The recipe of a case; `value` replaces the case's own (DEFAULT: leave the key out)."""
    value = case.value if value is NEXT else value
    overrides = [f"data.dataset={dataset}", f"data.batch_size={FULL_BATCH}", f"model.name={family}",
                 *SMALL[family], f"training.epochs={case.epochs}", *case.extra]
    if value is not DEFAULT:
        text = "null" if value is None else repr(value).replace("'", "")
        if isinstance(value, bool):
            text = str(value).lower()
        overrides.append(f"{case.key}={text}")
    return load_recipe("digits/mlp", overrides)


def _pairs(index: int, case: Case, every_dataset: bool) -> list[tuple[str, str]]:
    """Every (family, data set) of a case for the slow suite; for the fast one, one pair that
    alternates from row to row so all of them get exercised."""
    pairs = [(family, dataset) for family in case.families for dataset in case.datasets]
    return pairs if every_dataset else [pairs[index % len(pairs)]]


def _combinations(every_dataset: bool):
    for index, case in enumerate(CASES):
        for family, dataset in _pairs(index, case, every_dataset):
            yield pytest.param(case, dataset, family, id=f"{case.id}-{family}-{dataset}")


def _run(case: Case, dataset: str, family: str, tmp_path):
    recipe = _recipe(case, dataset, family)
    if case.trains:
        assert len(load_dataset(dataset, recipe.data.validation_split).y_train) <= FULL_BATCH
        result = train(recipe, track=False, verbose=0, model_dir=tmp_path)
        model = result.model
    else:
        model, result = prepare(recipe).model, None
    assert case.check(model, result) is None, "checks assert, they do not return"


@pytest.mark.parametrize("case,dataset,family", list(_combinations(every_dataset=False)))
def test_switch_on_one_data_set(case, dataset, family, tmp_path):
    _run(case, dataset, family, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case,dataset,family", list(_combinations(every_dataset=True)))
def test_switch_on_every_data_set(case, dataset, family, tmp_path):
    _run(case, dataset, family, tmp_path)


# ---------------------------------------------------------------------------------------------
# The meta-test: every check must reject the model or run of another value of its key.


def _wrong_value(case: Case, dataset: str, family: str):
    """The value after the case's among the rows of its axis (same key and label) that apply to
    this data set and family, wrapping around; DEFAULT when the axis has a single row."""
    if case.wrong is not NEXT:
        return case.wrong
    values = []
    for other in CASES:
        if ((other.key, other.label) == (case.key, case.label) and dataset in other.datasets
                and family in other.families and other.value not in values):
            values.append(other.value)
    if len(values) < 2:
        return DEFAULT
    return values[(values.index(case.value) + 1) % len(values)]


@pytest.mark.parametrize("case,dataset,family", list(_combinations(every_dataset=False)))
def test_check_rejects_another_value(case, dataset, family):
    """How each kind of row is fed a wrong input, none of them fitted:
    - structural rows: the compiled model `prepare` builds from the recipe with the other value;
    - schedule, warmup, early stopping and L1-metric rows: the result that a run with the other
      value gives (`Case.fake`: its learning-rate history, epoch count or metric names);
    - augmentation rows: the recipe without augmentation, whose pipeline the check prepares.
    """
    wrong = _wrong_value(case, dataset, family)
    recipe = _recipe(case, dataset, family, wrong)
    assert recipe.fingerprint != _recipe(case, dataset, family).fingerprint, "same recipe"
    if case.trains:
        assert case.fake is not None, f"{case.id} trains: give it a fake run for this test"
        model, result = None, case.fake(recipe)
    else:
        model, result = prepare(recipe).model, None
    shown = "the default" if wrong is DEFAULT else wrong
    with pytest.raises(AssertionError):
        case.check(model, result)
        pytest.fail(f"the check of {case.id} passed a model or run with {shown}")
