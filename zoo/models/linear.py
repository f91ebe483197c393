"""Logistic regression: the floor every other model is measured against."""

from __future__ import annotations

from keras import layers

from zoo.models import _blocks
from zoo.registry.models import register_model


@register_model
def linear(x, num_classes, regularizer, /):
    """Multinomial logistic regression on the flattened input."""
    x = layers.Flatten(name="flatten")(x)
    return _blocks.classifier(x, num_classes, regularizer)
