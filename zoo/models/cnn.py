"""Convolutional networks: Conv1D on sequences, Conv2D on images, chosen by the input's rank."""

from __future__ import annotations

from typing import Annotated

from keras import initializers, layers
from pydantic import Field, PositiveInt

from zoo.models import _blocks
from zoo.models._blocks import (
    Activation,
    Fraction,
    Head,
    Initializer,
    Normalization,
    NormPosition,
    Padding,
    Pooling,
)
from zoo.registry.models import DATA_KINDS, ArgumentError, register_model


def check_cnn(kind: str, *, widths, strides, dilation, groups, padding, normalization,
              norm_groups, dense, **_) -> None:
    """The constraints of `cnn` that do not depend on the data's values: checked when a recipe
    loads and again when the model is built."""
    if kind not in DATA_KINDS:
        raise ArgumentError("name", f"cnn takes sequences or images, the data has {kind}")
    if strides > 1 and dilation > 1:
        raise ArgumentError("dilation", f"a dilation of {dilation} needs strides=1 (received "
                            f"strides={strides}); Keras convolutions cannot do both")
    if padding == "causal" and kind != "sequence":
        raise ArgumentError("padding", "causal padding is for sequences; use same or valid "
                            "for images (received 'causal')")
    bad = [w for w in widths if w % groups]
    if bad:
        raise ArgumentError("groups", f"{groups} groups must divide every width; {bad} are "
                            f"not multiples (received groups={groups})")
    _blocks.check_groups(normalization, norm_groups, (*widths, *dense))


@register_model(check=check_cnn)
def cnn(
    x,
    num_classes,
    regularizer,
    /,
    *,
    widths: tuple[PositiveInt, ...] = (32, 64),
    convs_per_block: PositiveInt = 2,
    kernel_size: PositiveInt = 3,
    strides: PositiveInt = 1,
    padding: Padding = "same",
    dilation: PositiveInt = 1,
    groups: PositiveInt = 1,
    pooling: Pooling = "max",
    head: Head = "global_avg",
    dense: tuple[PositiveInt, ...] = (),
    activation: Activation = "relu",
    activation_alpha: Annotated[float, Field(ge=0.0)] = 0.01,
    normalization: Normalization = "batch",
    norm_position: NormPosition = "pre",
    norm_groups: PositiveInt = 4,
    dropout: Fraction = 0.0,
    spatial_dropout: Fraction = 0.0,
    residual: bool = False,
    initializer: Initializer = "he_normal",
):
    """Blocks of convolutions that halve the resolution, a pooling head and a classifier.

    Args:
        widths: channels of each block; each block ends with a 2x downsampling.
        convs_per_block: convolutions (conv, norm, activation) in each block.
        kernel_size: kernel size of every convolution.
        strides: stride of each block's first convolution.
        padding: `same`, `valid`, or `causal` (sequences only) for every convolution.
        dilation: dilation rate of every convolution (needs strides 1).
        groups: grouped convolutions: applied to every convolution whose input channels it
            divides (so not to the first one on 1- or 3-channel data).
        pooling: the downsampling after each block: a max or average pool, a stride-2
            convolution (`strided`), or none.
        head: how the feature map becomes a vector: flatten or global average/max pooling.
        dense: units of hidden dense layers between the head and the classifier.
        activation: nonlinearity after every convolution and hidden dense layer.
        activation_alpha: negative slope of leaky_relu, saturation of elu.
        normalization: normalization of every convolution and hidden dense layer.
        norm_position: `pre` normalizes before the activation, `post` after it.
        norm_groups: groups for `normalization: group` (must divide every width).
        dropout: rate of the dropout before each dense layer; 0 adds no Dropout layer.
        spatial_dropout: rate of channel dropout after each block; 0 adds none.
        residual: add each block's input to its output (a 1x1 projection when shapes differ).
        initializer: kernel initializer of every convolution and dense layer.
    """
    rank = _blocks.spatial_rank(x)
    check_cnn(_blocks.data_kind(x), widths=widths, strides=strides, dilation=dilation,
              groups=groups, padding=padding, normalization=normalization,
              norm_groups=norm_groups, dense=dense)
    style = {"normalization_kind": normalization, "activation_kind": activation,
             "groups": norm_groups, "position": norm_position, "alpha": activation_alpha}
    # A bias is redundant right before a normalization layer, which re-centres anyway.
    use_bias = normalization == "none" or norm_position == "post"
    conv_options = {"use_bias": use_bias, "initializer": initializer, "regularizer": regularizer,
                    "padding": padding, "dilation": dilation}
    for b, width in enumerate(widths, start=1):
        block_input = x
        for c in range(1, convs_per_block + 1):
            conv_groups = groups if x.shape[-1] % groups == 0 else 1
            x = _blocks.conv(rank, width, kernel_size, f"block{b}_conv{c}",
                             strides=strides if c == 1 else 1, groups=conv_groups,
                             **conv_options)(x)
            x = _blocks.norm_act(x, f"block{b}_conv{c}", **style)
        if residual:
            shortcut = block_input
            if tuple(block_input.shape[1:]) != tuple(x.shape[1:]):
                shortcut = _blocks.conv(rank, width, 1, f"block{b}_proj", use_bias=False,
                                        strides=strides, initializer=initializer,
                                        regularizer=regularizer)(block_input)
            x = _blocks.add([x, shortcut], f"block{b}_add")
        if pooling == "strided":
            x = _blocks.conv(rank, width, kernel_size, f"block{b}_down", strides=2,
                             **{**conv_options, "padding": "same", "dilation": 1})(x)
            x = _blocks.norm_act(x, f"block{b}_down", **style)
        else:
            pool = _blocks.pool(pooling, rank, f"block{b}_pool")
            if pool is not None:
                x = pool(x)
        if spatial_dropout > 0:
            x = _blocks.spatial_dropout(spatial_dropout, rank, f"block{b}_spatial_dropout")(x)
    x = _blocks.head(head, rank)(x)
    for d, units in enumerate(dense, start=1):
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"dense{d}_dropout")(x)
        x = _blocks.dense(units, f"dense{d}", use_bias=use_bias, initializer=initializer,
                          regularizer=regularizer)(x)
        x = _blocks.norm_act(x, f"dense{d}", **style)
    if dropout > 0:
        x = layers.Dropout(dropout, name="classifier_dropout")(x)
    return _blocks.classifier(x, num_classes, regularizer, initializer)


def check_cnn_paper(kind: str, **_) -> None:
    """The constraint of `cnn_paper`: it takes sequences only (the paper's Conv1D model);
    checked when a recipe loads and again when the model is built.

    Raises:
        ArgumentError: the data are images.
    """
    if kind != "sequence":
        raise ArgumentError("name", "cnn_paper takes sequences (length, channels), the data "
                            "are images; use model.name=cnn for images")


@register_model(check=check_cnn_paper)
def cnn_paper(x, num_classes, regularizer, /, *, channels: PositiveInt = 25):
    """The MNIST-1D paper's CNN: three stride-2 Conv1D layers (kernels 5, 3, 3), ReLU, linear head.

    With 25 channels on length-40 sequences it has 5,210 parameters, as in the paper's code
    (PyTorch `Conv1d(..., stride=2, padding=1)`, reproduced here with explicit zero padding).
    Weights and biases start as PyTorch's defaults do, uniform in +-1/sqrt(fan_in), so the
    training the paper describes starts from the same place.

    Args:
        channels: channels of each convolution.
    """
    check_cnn_paper(_blocks.data_kind(x))
    for i, kernel_size in enumerate((5, 3, 3), start=1):
        fan_in = x.shape[-1] * kernel_size
        x = layers.ZeroPadding1D(1, name=f"conv{i}_pad")(x)
        x = layers.Conv1D(channels, kernel_size, strides=2, activation="relu",
                          kernel_regularizer=regularizer, name=f"conv{i}",
                          **_torch_default_init(fan_in))(x)
    x = layers.Flatten(name="flatten")(x)
    return layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer,
                        name="classifier", **_torch_default_init(x.shape[-1]))(x)


def _torch_default_init(fan_in: int) -> dict:
    """PyTorch's default for Conv and Linear layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    limit = 1.0 / fan_in**0.5
    return {
        # VarianceScaling's uniform limit is sqrt(3 * scale / fan_in): scale 1/3 gives the above.
        "kernel_initializer": initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
        "bias_initializer": initializers.RandomUniform(-limit, limit),
    }
