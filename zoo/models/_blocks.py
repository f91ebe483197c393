"""Lookup tables that turn one categorical recipe value into Keras layers.

Each axis (activation, normalization, pooling, head, initializer) is one `Literal` type used in
builder signatures and one table keyed by the same names; `tests/models` checks they agree.
"""

from __future__ import annotations

from typing import Annotated, Literal

from keras import layers, mixed_precision
from pydantic import Field

from zoo.registry.models import ArgumentError

Activation = Literal["relu", "leaky_relu", "prelu", "elu", "gelu", "swish", "sigmoid", "tanh"]
Normalization = Literal["batch", "layer", "group", "none"]
Initializer = Literal[
    "he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "lecun_normal", "zeros"
]
NormPosition = Literal["pre", "post"]
Padding = Literal["same", "valid", "causal"]
Pooling = Literal["max", "avg", "strided", "none"]
Head = Literal["flatten", "global_avg", "global_max"]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]

# `alpha` is the negative slope of leaky_relu and the saturation value of elu; others ignore it.
ACTIVATIONS = {
    "relu": lambda name, alpha: layers.ReLU(name=name),
    "leaky_relu": lambda name, alpha: layers.LeakyReLU(negative_slope=alpha, name=name),
    "prelu": lambda name, alpha: layers.PReLU(name=name),
    "elu": lambda name, alpha: layers.ELU(alpha=alpha, name=name),
    "gelu": lambda name, alpha: layers.Activation("gelu", name=name),
    "swish": lambda name, alpha: layers.Activation("silu", name=name),
    "sigmoid": lambda name, alpha: layers.Activation("sigmoid", name=name),
    "tanh": lambda name, alpha: layers.Activation("tanh", name=name),
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


def spatial_rank(x) -> int:
    """1 for sequences (batch, length, channels), 2 for images (batch, h, w, channels)."""
    return len(x.shape) - 2


def data_kind(x) -> str:
    """`sequence`, `image`, or the shape itself for inputs that are neither."""
    return {1: "sequence", 2: "image"}.get(spatial_rank(x), f"shape {tuple(x.shape[1:])}")


def activation(kind: str, name: str, alpha: float = 0.01) -> layers.Layer:
    """The activation layer `kind` named `name`; `alpha` is the negative slope of leaky_relu and the
    saturation value of elu."""
    return ACTIVATIONS[kind](name, alpha)


def normalization(kind: str, name: str, groups: int = 1) -> layers.Layer | None:
    """The normalization layer `kind` named `name`, or None for `none`; `groups` is used by `group`
    only."""
    factory = NORMALIZATIONS[kind]
    return None if factory is None else factory(name, groups)


def norm_act(x, prefix: str, *, normalization_kind: str, activation_kind: str, groups: int,
             position: str = "pre", alpha: float = 0.01):
    """Normalization and activation after a linear layer: `pre` normalizes before the
    activation (the usual conv-BN-ReLU), `post` after it."""
    norm = normalization(normalization_kind, f"{prefix}_norm", groups)
    act = activation(activation_kind, f"{prefix}_act", alpha)
    if norm is not None and position == "pre":
        x = norm(x)
    x = act(x)
    if norm is not None and position == "post":
        x = norm(x)
    return x


def check_groups(normalization_kind: str, groups: int, widths) -> None:
    """Group normalization needs the group count to divide every width."""
    if normalization_kind != "group":
        return
    bad = [w for w in widths if w % groups]
    if bad:
        raise ArgumentError("norm_groups", f"{groups} groups must divide every width; {bad} "
                            f"are not multiples (received norm_groups={groups})")


def conv(rank: int, filters: int, kernel_size: int, name: str, *, strides: int = 1,
         use_bias: bool = True, initializer: str = "he_normal", regularizer=None,
         padding: str = "same", dilation: int = 1, groups: int = 1,
         activation_name: str | None = None) -> layers.Layer:
    """A Conv1D (`rank` 1) or Conv2D (`rank` 2) layer with the initializer `initializer` (a key of
    `INITIALIZERS`); `dilation` is Keras' `dilation_rate`, `activation_name` its `activation`."""
    return _CONVS[rank](
        filters, kernel_size, strides=strides, padding=padding, dilation_rate=dilation,
        groups=groups, use_bias=use_bias, kernel_initializer=INITIALIZERS[initializer],
        kernel_regularizer=regularizer, activation=activation_name, name=name,
    )


def spatial_dropout(rate: float, rank: int, name: str) -> layers.Layer:
    """Dropout of whole channels, the form that regularizes convolutions."""
    return (layers.SpatialDropout1D if rank == 1 else layers.SpatialDropout2D)(rate, name=name)


def pool(kind: str, rank: int, name: str) -> layers.Layer | None:
    """A 2x downsampling pool, or None for `none` and `strided` (the builder adds the conv)."""
    factory = _POOLS.get((kind, rank))
    return None if factory is None else factory(pool_size=2, padding="same", name=name)


def head(kind: str, rank: int, name: str = "head") -> layers.Layer:
    """The layer between the last feature map and the dense layers: `flatten`, `global_avg` or
    `global_max`, for sequences (`rank` 1) or images (`rank` 2)."""
    return _HEADS[(kind, rank)](name=name)


def dense(units: int, name: str, *, use_bias: bool = True, initializer: str = "he_normal",
          regularizer=None) -> layers.Layer:
    """A Dense layer without activation (`norm_act` adds it), with the initializer `initializer`."""
    return layers.Dense(units, use_bias=use_bias, kernel_initializer=INITIALIZERS[initializer],
                        kernel_regularizer=regularizer, name=name)


def classifier(x, num_classes: int, regularizer=None, initializer: str = "glorot_uniform"):
    """The softmax layer every model ends with, so `predict` returns probabilities. Under a
    mixed precision policy it computes in float32, so the softmax and the loss do (Keras'
    advice); otherwise it follows the policy (the gradient check's float64)."""
    mixed = mixed_precision.dtype_policy().name.startswith("mixed_")
    return layers.Dense(num_classes, activation="softmax",
                        kernel_initializer=INITIALIZERS[initializer],
                        kernel_regularizer=regularizer, name="classifier",
                        dtype="float32" if mixed else None)(x)


def add(tensors, name: str):
    """The sum of `tensors` through an Add layer named `name`: where a residual branch joins."""
    return layers.Add(name=name)(tensors)
