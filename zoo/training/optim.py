"""The optimizer from the recipe's `optimizer` section (a lookup table)."""

from __future__ import annotations

import keras

from zoo.recipe import OptimizerSection


def make_optimizer(section: OptimizerSection, learning_rate=None):
    """The optimizer named by `optimizer.name`, with its own keys and gradient clipping.

    Args:
        section: the recipe's `optimizer` section.
        learning_rate: a float or a schedule (`zoo.schedules.make_schedule`); default the
            section's constant rate.
    """
    common = {
        "learning_rate": section.learning_rate if learning_rate is None else learning_rate,
        "clipnorm": section.clipnorm,
        "clipvalue": section.clipvalue,
    }
    adam_keys = {"beta_1": section.beta_1, "beta_2": section.beta_2, "epsilon": section.epsilon}
    opt = keras.optimizers
    table = {
        "sgd": lambda: opt.SGD(**common),
        "momentum": lambda: opt.SGD(momentum=section.momentum, **common),
        "nesterov": lambda: opt.SGD(momentum=section.momentum, nesterov=True, **common),
        "adagrad": lambda: opt.Adagrad(epsilon=section.epsilon, **common),
        "rmsprop": lambda: opt.RMSprop(rho=section.rho, epsilon=section.epsilon, **common),
        "adam": lambda: opt.Adam(**adam_keys, **common),
        "adamw": lambda: opt.AdamW(weight_decay=section.weight_decay, **adam_keys, **common),
    }
    return table[section.name]()
