"""Multilayer perceptrons on the flattened input."""

from __future__ import annotations

from typing import Annotated

from keras import layers
from pydantic import Field, PositiveInt

from zoo.models import _blocks
from zoo.models._blocks import Activation, Fraction, Initializer, Normalization, NormPosition
from zoo.registry.models import register_model


def check_mlp(kind: str, *, normalization, norm_groups, widths, **_) -> None:
    """The constraints of `mlp` between its arguments: checked when a recipe loads."""
    _blocks.check_groups(normalization, norm_groups, widths)


@register_model(check=check_mlp)
def mlp(
    x,
    num_classes,
    regularizer,
    /,
    *,
    widths: tuple[PositiveInt, ...] = (128, 128),
    activation: Activation = "relu",
    activation_alpha: Annotated[float, Field(ge=0.0)] = 0.01,
    normalization: Normalization = "none",
    norm_position: NormPosition = "pre",
    norm_groups: PositiveInt = 4,
    dropout: Fraction = 0.0,
    residual: bool = False,
    initializer: Initializer = "he_normal",
):
    """Fully connected blocks (dense, norm, activation, dropout), then a softmax classifier.

    Args:
        widths: units of each hidden layer.
        activation: nonlinearity after each hidden layer.
        activation_alpha: negative slope of leaky_relu, saturation of elu.
        normalization: normalization of each hidden layer.
        norm_position: `pre` normalizes before the activation, `post` after it.
        norm_groups: groups for `normalization: group` (must divide every width).
        dropout: rate of the dropout after each hidden block; 0 adds no Dropout layer.
        residual: add each block's input to its output (a linear projection when widths differ).
        initializer: kernel initializer of every dense layer.
    """
    check_mlp("", normalization=normalization, norm_groups=norm_groups, widths=widths)
    style = {"normalization_kind": normalization, "activation_kind": activation,
             "groups": norm_groups, "position": norm_position, "alpha": activation_alpha}
    # A bias is redundant right before a normalization layer, which re-centres anyway.
    use_bias = normalization == "none" or norm_position == "post"
    x = layers.Flatten(name="flatten")(x)
    for i, width in enumerate(widths, start=1):
        block_input = x
        x = _blocks.dense(width, f"block{i}_dense", use_bias=use_bias,
                          initializer=initializer, regularizer=regularizer)(x)
        x = _blocks.norm_act(x, f"block{i}", **style)
        if residual:
            shortcut = block_input
            if block_input.shape[-1] != width:
                shortcut = _blocks.dense(width, f"block{i}_proj", use_bias=False,
                                         initializer=initializer,
                                         regularizer=regularizer)(block_input)
            x = _blocks.add([x, shortcut], f"block{i}_add")
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"block{i}_dropout")(x)
    return _blocks.classifier(x, num_classes, regularizer, initializer)
