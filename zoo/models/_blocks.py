"""Lookup tables that turn one categorical recipe value into Keras layers.

Each axis (activation, normalization, pooling, head, initializer) is one `Literal` type used in
builder signatures and one table keyed by the same names; `tests/models` checks they agree.
"""

from __future__ import annotations

from typing import Annotated, Literal

from keras import layers
from pydantic import Field

Activation = Literal["relu", "leaky_relu", "prelu", "elu", "gelu", "swish", "sigmoid", "tanh"]
Normalization = Literal["batch", "layer", "group", "none"]
Initializer = Literal[
    "he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "lecun_normal", "zeros"
]
Pooling = Literal["max", "avg", "strided", "none"]
Head = Literal["flatten", "global_avg", "global_max"]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]

ACTIVATIONS = {
    "relu": lambda name: layers.ReLU(name=name),
    "leaky_relu": lambda name: layers.LeakyReLU(negative_slope=0.01, name=name),
    "prelu": lambda name: layers.PReLU(name=name),
    "elu": lambda name: layers.ELU(name=name),
    "gelu": lambda name: layers.Activation("gelu", name=name),
    "swish": lambda name: layers.Activation("silu", name=name),
    "sigmoid": lambda name: layers.Activation("sigmoid", name=name),
    "tanh": lambda name: layers.Activation("tanh", name=name),
}

NORMALIZATIONS = {
    "batch": lambda name, groups: layers.BatchNormalization(name=name),
    "layer": lambda name, groups: layers.LayerNormalization(name=name),
    "group": lambda name, groups: layers.GroupNormalization(groups=groups, name=name),
    "none": None,
}

INITIALIZERS = {
    name: name
    for name in ("he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "lecun_normal",
                 "zeros")
}

_POOLS = {
    ("max", 1): layers.MaxPooling1D,
    ("max", 2): layers.MaxPooling2D,
    ("avg", 1): layers.AveragePooling1D,
    ("avg", 2): layers.AveragePooling2D,
}

_HEADS = {
    ("flatten", 1): layers.Flatten,
    ("flatten", 2): layers.Flatten,
    ("global_avg", 1): layers.GlobalAveragePooling1D,
    ("global_avg", 2): layers.GlobalAveragePooling2D,
    ("global_max", 1): layers.GlobalMaxPooling1D,
    ("global_max", 2): layers.GlobalMaxPooling2D,
}

_CONVS = {1: layers.Conv1D, 2: layers.Conv2D}

POOLINGS = ("max", "avg", "strided", "none")
HEADS = ("flatten", "global_avg", "global_max")


def spatial_rank(x) -> int:
    """1 for sequences (batch, length, channels), 2 for images (batch, h, w, channels)."""
    return len(x.shape) - 2


def activation(kind: str, name: str) -> layers.Layer:
    return ACTIVATIONS[kind](name)


def normalization(kind: str, name: str, groups: int = 1) -> layers.Layer | None:
    factory = NORMALIZATIONS[kind]
    return None if factory is None else factory(name, groups)


def norm_act(x, normalization_kind: str, activation_kind: str, prefix: str, groups: int):
    """Normalization (if any) then activation, the usual post-linear order."""
    norm = normalization(normalization_kind, f"{prefix}_norm", groups)
    if norm is not None:
        x = norm(x)
    return activation(activation_kind, f"{prefix}_act")(x)


def conv(rank: int, filters: int, kernel_size: int, name: str, *, strides: int = 1,
         use_bias: bool = True, initializer: str = "he_normal", regularizer=None,
         padding: str = "same", activation_name: str | None = None) -> layers.Layer:
    return _CONVS[rank](
        filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
        kernel_initializer=INITIALIZERS[initializer], kernel_regularizer=regularizer,
        activation=activation_name, name=name,
    )


def pool(kind: str, rank: int, name: str) -> layers.Layer | None:
    """A 2x downsampling pool, or None for `none` and `strided` (the builder adds the conv)."""
    factory = _POOLS.get((kind, rank))
    return None if factory is None else factory(pool_size=2, padding="same", name=name)


def head(kind: str, rank: int, name: str = "head") -> layers.Layer:
    return _HEADS[(kind, rank)](name=name)


def dense(units: int, name: str, *, use_bias: bool = True, initializer: str = "he_normal",
          regularizer=None) -> layers.Layer:
    return layers.Dense(units, use_bias=use_bias, kernel_initializer=INITIALIZERS[initializer],
                        kernel_regularizer=regularizer, name=name)


def classifier(x, num_classes: int, regularizer=None, initializer: str = "glorot_uniform"):
    """The softmax layer every model ends with, so `predict` returns probabilities."""
    return layers.Dense(num_classes, activation="softmax",
                        kernel_initializer=INITIALIZERS[initializer],
                        kernel_regularizer=regularizer, name="classifier")(x)


def add(tensors, name: str):
    return layers.Add(name=name)(tensors)
