"""Every value of every switch: trained for one epoch, and the built model reflects it.

Table-driven: each row is (recipe key, value, the data sets and model families it applies to,
a check of the trained model). The default suite trains each row once, on one family and data
set; the slow suite (`make test-full`) trains every row on every family and data set it applies
to, digits and mnist1d both.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import pytest

from zoo.augment import IMAGE_OPS, SEQUENCE_OPS
from zoo.models import _blocks
from zoo.recipe import OPTIMIZERS, SCHEDULES, load_recipe
from zoo.train import train

BOTH, IMAGES, SEQUENCES = ("digits", "mnist1d"), ("digits",), ("mnist1d",)
SMALL = {
    "mlp": ["model.widths=[8, 8]"],
    "cnn": ["model.widths=[8, 8]", "model.convs_per_block=1"],
}


def layers_of(model, cls) -> list:
    return [layer for layer in model.layers if type(layer) is cls]


def named(model, suffix: str) -> list:
    return [layer for layer in model.layers if layer.name.endswith(suffix)]


def first(model, cls):
    return next(layer for layer in model.layers if isinstance(layer, cls))


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
    return lambda model, result: type(model.get_layer("head")).__name__.startswith(expected)


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


def check_penalty(present: bool, l1: bool = False):
    def check(model, result):
        assert bool(model.losses) == present
        assert ("near_zero_weights" in result.history) == l1
    return check


def check_label_smoothing(value):
    return lambda model, result: model.loss.label_smoothing == value


def check_early_stopping(enabled: bool):
    # Three epochs with a min_delta no epoch can beat: early stopping ends after patience 1.
    return lambda model, result: result.epochs == (2 if enabled else 3)


def check_optimizer(value):
    def check(model, result):
        optimizer = model.optimizer
        assert type(optimizer).__name__ == OPTIMIZER_CLASSES[value]
        if value in ("momentum", "nesterov"):
            assert optimizer.momentum > 0 and optimizer.nesterov == (value == "nesterov")
        if value == "sgd":
            assert optimizer.momentum == 0
    return check


def check_schedule(value):
    def check(model, result):
        rates = result.history["learning_rate"]
        if value in ("constant", "plateau"):
            assert rates[-1] == pytest.approx(0.01)
        else:
            assert rates[-1] < 0.01, f"{value} did not decay: {rates}"
    return check


def check_warmup(epochs: int):
    # The rate logged after epoch 1 is the one its last batch used: with a 2-epoch warmup that
    # is halfway up the ramp, without warmup the full rate.
    def check(model, result):
        first_rate = result.history["learning_rate"][0]
        assert first_rate == pytest.approx(0.005 if epochs == 2 else 0.01), first_rate
    return check


def check_clip(attribute: str, value):
    return lambda model, result: getattr(model.optimizer, attribute) == value


def check_loss(value):
    expected = {"crossentropy": "CategoricalCrossentropy", "mse": "MeanSquaredError"}[value]
    return lambda model, result: type(model.loss).__name__ == expected


def check_trains(model, result):
    assert result.history["loss"] and all(v == v for v in result.history["loss"])


@dataclass(frozen=True)
class Case:
    key: str
    value: Any
    check: Callable
    datasets: tuple[str, ...] = BOTH
    families: tuple[str, ...] = ("cnn",)
    extra: tuple[str, ...] = ()
    epochs: int = 1

    @property
    def id(self) -> str:
        return f"{self.key}={self.value}"


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
    *[Case("regularization.l1", v, check_penalty(v > 0, l1=v > 0), families=("mlp", "cnn"))
      for v in (0.0, 1e-4)],
    *[Case("regularization.l2", v, check_penalty(v > 0), families=("mlp", "cnn"))
      for v in (0.0, 1e-4)],
    *[Case("regularization.label_smoothing", v, check_label_smoothing(v)) for v in (0.0, 0.1)],
    Case("regularization.early_stopping", None, check_early_stopping(False), epochs=3),
    Case("regularization.early_stopping", {"patience": 1, "min_delta": 100.0},
         check_early_stopping(True), epochs=3),
    *[Case("optimizer.name", v, check_optimizer(v), families=("mlp",)) for v in OPTIMIZERS],
    *[Case("optimizer.schedule", v, check_schedule(v), families=("mlp",), epochs=2,
           extra=("optimizer.learning_rate=0.01", "optimizer.drop_every=1"))
      for v in SCHEDULES],
    *[Case("optimizer.warmup_epochs", v, check_warmup(v), families=("mlp",), epochs=2,
           extra=("optimizer.learning_rate=0.01",)) for v in (0, 2)],
    Case("optimizer.clipnorm", 1.0, check_clip("clipnorm", 1.0), families=("mlp",)),
    Case("optimizer.clipvalue", 0.5, check_clip("clipvalue", 0.5), families=("mlp",)),
    *[Case("training.loss", v, check_loss(v), families=("mlp",)) for v in ("crossentropy", "mse")],
    *[Case("data.augmentation", [{"op": op}], check_trains, datasets=IMAGES)
      for op in IMAGE_OPS],
    *[Case("data.augmentation", [{"op": op}], check_trains, datasets=SEQUENCES)
      for op in SEQUENCE_OPS],
]


def _recipe(case: Case, dataset: str, family: str):
    value = "null" if case.value is None else repr(case.value).replace("'", "")
    if isinstance(case.value, bool):
        value = str(case.value).lower()
    overrides = [f"data.dataset={dataset}", "data.batch_size=128", f"model.name={family}",
                 *SMALL[family], f"training.epochs={case.epochs}", *case.extra,
                 f"{case.key}={value}"]
    return load_recipe("digits/mlp", overrides)


def _combinations(every_dataset: bool):
    """Every (case, family, data set) for the slow suite; for the fast one, each case once, on a
    family and data set that alternate from row to row so all of them get exercised."""
    for index, case in enumerate(CASES):
        pairs = [(family, dataset) for family in case.families for dataset in case.datasets]
        if not every_dataset:
            pairs = [pairs[index % len(pairs)]]
        for family, dataset in pairs:
            yield pytest.param(case, dataset, family, id=f"{case.id}-{family}-{dataset}")


def _run(case: Case, dataset: str, family: str, tmp_path):
    result = train(_recipe(case, dataset, family), track=False, verbose=0, model_dir=tmp_path)
    case.check(result.model, result)


@pytest.mark.parametrize("case,dataset,family", list(_combinations(every_dataset=False)))
def test_switch_on_one_data_set(case, dataset, family, tmp_path):
    _run(case, dataset, family, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case,dataset,family", list(_combinations(every_dataset=True)))
def test_switch_on_every_data_set(case, dataset, family, tmp_path):
    _run(case, dataset, family, tmp_path)
