"""Convolutional networks: Conv1D on sequences, Conv2D on images, chosen by the input's rank."""

from __future__ import annotations

from keras import initializers, layers
from pydantic import PositiveInt

from zoo.errors import RecipeError
from zoo.models import _blocks
from zoo.models._blocks import Activation, Fraction, Head, Initializer, Normalization, Pooling
from zoo.models.registry import register_model


@register_model
def cnn(
    x,
    num_classes,
    regularizer,
    /,
    *,
    widths: tuple[PositiveInt, ...] = (32, 64),
    convs_per_block: PositiveInt = 2,
    kernel_size: PositiveInt = 3,
    pooling: Pooling = "max",
    head: Head = "global_avg",
    dense: tuple[PositiveInt, ...] = (),
    activation: Activation = "relu",
    normalization: Normalization = "batch",
    norm_groups: PositiveInt = 4,
    dropout: Fraction = 0.0,
    residual: bool = False,
    initializer: Initializer = "he_normal",
):
    """Blocks of convolutions that halve the resolution, a pooling head and a classifier.

    Args:
        widths: channels of each block; each block ends with a 2x downsampling.
        convs_per_block: convolutions (conv, norm, activation) in each block.
        kernel_size: kernel size of every convolution.
        pooling: the downsampling after each block: a max or average pool, a stride-2
            convolution (`strided`), or none.
        head: how the feature map becomes a vector: flatten or global average/max pooling.
        dense: units of hidden dense layers between the head and the classifier.
        activation: nonlinearity after every convolution and hidden dense layer.
        normalization: normalization between each convolution and its activation.
        norm_groups: groups for `normalization: group` (must divide every width).
        dropout: rate of the dropout before each dense layer; 0 adds no Dropout layer.
        residual: add each block's input to its output (a 1x1 projection when widths differ).
        initializer: kernel initializer of every convolution and dense layer.
    """
    rank = _blocks.spatial_rank(x)
    if rank not in (1, 2):
        raise RecipeError(f"model.name: cnn takes sequences or images, the data has shape "
                          f"{tuple(x.shape[1:])}")
    use_bias = normalization == "none"
    for b, width in enumerate(widths, start=1):
        block_input = x
        for c in range(1, convs_per_block + 1):
            x = _blocks.conv(rank, width, kernel_size, f"block{b}_conv{c}", use_bias=use_bias,
                             initializer=initializer, regularizer=regularizer)(x)
            x = _blocks.norm_act(x, normalization, activation, f"block{b}_conv{c}", norm_groups)
        if residual:
            shortcut = block_input
            if block_input.shape[-1] != width:
                shortcut = _blocks.conv(rank, width, 1, f"block{b}_proj", use_bias=False,
                                        initializer=initializer,
                                        regularizer=regularizer)(block_input)
            x = _blocks.add([x, shortcut], f"block{b}_add")
        if pooling == "strided":
            x = _blocks.conv(rank, width, kernel_size, f"block{b}_down", strides=2,
                             use_bias=use_bias, initializer=initializer,
                             regularizer=regularizer)(x)
            x = _blocks.norm_act(x, normalization, activation, f"block{b}_down", norm_groups)
        else:
            pool = _blocks.pool(pooling, rank, f"block{b}_pool")
            if pool is not None:
                x = pool(x)
    x = _blocks.head(head, rank)(x)
    for d, units in enumerate(dense, start=1):
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"dense{d}_dropout")(x)
        x = _blocks.dense(units, f"dense{d}", use_bias=use_bias, initializer=initializer,
                          regularizer=regularizer)(x)
        x = _blocks.norm_act(x, normalization, activation, f"dense{d}", norm_groups)
    if dropout > 0:
        x = layers.Dropout(dropout, name="classifier_dropout")(x)
    return _blocks.classifier(x, num_classes, regularizer, initializer)


@register_model
def cnn_paper(x, num_classes, regularizer, /, *, channels: PositiveInt = 25):
    """The MNIST-1D paper's CNN: three stride-2 Conv1D layers (kernels 5, 3, 3), ReLU, linear head.

    With 25 channels on length-40 sequences it has 5,210 parameters, as in the paper's code
    (PyTorch `Conv1d(..., stride=2, padding=1)`, reproduced here with explicit zero padding).
    Weights and biases start as PyTorch's defaults do, uniform in +-1/sqrt(fan_in), so the
    training the paper describes starts from the same place.

    Args:
        channels: channels of each convolution.
    """
    if _blocks.spatial_rank(x) != 1:
        raise RecipeError(f"model.name: cnn_paper takes sequences (length, channels), the data "
                          f"has shape {tuple(x.shape[1:])}; use model.name=cnn for images")
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
