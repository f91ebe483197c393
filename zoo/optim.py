"""Optimizer and learning-rate schedule from the recipe's `optimizer` section (lookup tables)."""

from __future__ import annotations

import keras

from zoo.recipe import OptimizerSection


def make_schedule(section: OptimizerSection, steps_per_epoch: int, epochs: int):
    """A Keras built-in schedule (so saved models load without zoo), stepped per batch."""
    lr = section.learning_rate
    schedules = keras.optimizers.schedules
    table = {
        "constant": lambda: lr,
        "step": lambda: schedules.ExponentialDecay(
            lr, decay_steps=section.drop_every * steps_per_epoch,
            decay_rate=section.factor, staircase=True),
        "exponential": lambda: schedules.ExponentialDecay(
            lr, decay_steps=steps_per_epoch, decay_rate=section.decay_rate),
        "inverse_time": lambda: schedules.InverseTimeDecay(
            lr, decay_steps=steps_per_epoch, decay_rate=section.decay_rate),
        "cosine": lambda: schedules.CosineDecay(lr, decay_steps=epochs * steps_per_epoch),
    }
    return table[section.schedule]()


def make_optimizer(section: OptimizerSection, steps_per_epoch: int, epochs: int):
    """The optimizer named by `optimizer.name`, with its own keys and gradient clipping."""
    common = {
        "learning_rate": make_schedule(section, steps_per_epoch, epochs),
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
