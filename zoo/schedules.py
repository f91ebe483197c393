"""Learning-rate schedules as plain functions of the optimizer step, applied by one callback.

Schedules live outside the optimizer so that every one of them can be combined with a warmup and
with plateau decay, and so that saved models hold a plain float learning rate (they load in any
Keras, without the zoo).
"""

from __future__ import annotations

import math

import keras

from zoo.recipe import OptimizerSection


def learning_rate_at(section: OptimizerSection, step: int, steps_per_epoch: int,
                     total_steps: int) -> float:
    """The scheduled learning rate before step `step` (0-based), warmup included.

    Args:
        section: the recipe's `optimizer` section.
        step: optimizer steps taken so far.
        steps_per_epoch: batches per epoch.
        total_steps: steps of the whole training run (cosine decays to 0 over them).
    """
    lr = section.learning_rate
    warmup = section.warmup_epochs * steps_per_epoch
    if step < warmup:
        return lr * (step + 1) / warmup
    epoch = (step - warmup) / steps_per_epoch  # fractional epochs since warmup ended
    kind = section.schedule
    if kind == "step":
        return lr * section.factor ** math.floor(epoch / section.drop_every)
    if kind == "exponential":
        return lr * section.decay_rate ** epoch
    if kind == "inverse_time":
        return lr / (1.0 + section.decay_rate * epoch)
    if kind == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr  # constant, and plateau (whose decay the callback applies)


class LearningRateController(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before each batch and logs it each epoch.

    For the `plateau` schedule, multiplies the rate by `factor` whenever `monitor` has not
    improved for `patience` epochs.
    """

    def __init__(self, section: OptimizerSection, steps_per_epoch: int, epochs: int):
        super().__init__()
        self.section = section
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * epochs
        self.epoch = 0
        self.plateau_scale = 1.0
        self._best = math.inf
        self._wait = 0
        self._current: float | None = None
        # Constant, step and plateau rates change only between epochs; skip the per-batch work.
        self._per_batch = section.warmup_epochs > 0 or section.schedule in (
            "exponential", "inverse_time", "cosine")

    # Only batch *begin* hooks: a batch-end hook would make Keras wait for every batch's logs.
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._apply(epoch * self.steps_per_epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self._per_batch:
            self._apply(self.epoch * self.steps_per_epoch + batch)

    def _apply(self, step: int) -> None:
        rate = self.plateau_scale * learning_rate_at(
            self.section, step, self.steps_per_epoch, self.total_steps)
        if rate != self._current:  # assigning costs a little; constant rates never re-assign
            self.model.optimizer.learning_rate = rate
            self._current = rate

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(self._current or 0.0)
        if self.section.schedule != "plateau":
            return
        value = logs.get(self.section.monitor)
        if value is None:
            return
        sign = 1.0 if self.section.monitor.endswith("loss") else -1.0  # accuracy: higher is better
        if sign * value < self._best - self.section.min_delta:
            self._best, self._wait = sign * value, 0
            return
        self._wait += 1
        if self._wait >= self.section.patience:
            self.plateau_scale *= self.section.factor
            self._wait = 0
