"""Learning-rate schedules computed in the graph, from the recipe's `optimizer` section.

Every schedule but `plateau` is a `keras.optimizers.schedules` object that the optimizer
evaluates at its own step counter, inside the compiled train step: no per-batch Python hook, so
Keras can run a whole epoch per call (`steps_per_execution`). Keras' built-in schedules serve
every schedule without warmup, so those models load in plain Keras without the zoo; a warmup
wraps the schedule in `zoo>Warmup` (loading such a model's optimizer needs `import zoo`, or
`compile=False`). `plateau` reacts to an epoch's metrics, so it stays an epoch-level callback
over a plain float rate (its warmup, if any, rises once per epoch).

`learning_rate_at` is the reference formula of every schedule, in plain Python; the tests hold
the graph schedules to it.
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


def make_schedule(section: OptimizerSection, steps_per_epoch: int, total_steps: int):
    """The optimizer's `learning_rate`: a float, or a schedule evaluated in the graph.

    Args:
        section: the recipe's `optimizer` section.
        steps_per_epoch: batches per epoch.
        total_steps: steps of the whole training run.

    Returns:
        A float (constant and plateau without warmup) or a `LearningRateSchedule` equal to
        `learning_rate_at` at every step.
    """
    lr, kind = section.learning_rate, section.schedule
    warmup = section.warmup_epochs * steps_per_epoch
    schedules = keras.optimizers.schedules
    if kind in ("constant", "plateau"):
        base = lr
    elif kind == "step":
        base = schedules.ExponentialDecay(lr, section.drop_every * steps_per_epoch,
                                          section.factor, staircase=True)
    elif kind == "exponential":
        base = schedules.ExponentialDecay(lr, steps_per_epoch, section.decay_rate)
    elif kind == "inverse_time":
        base = schedules.InverseTimeDecay(lr, steps_per_epoch, section.decay_rate)
    else:  # cosine
        base = schedules.CosineDecay(lr, max(1, total_steps - warmup))
    if warmup and kind != "plateau":
        return Warmup(base, warmup, lr)
    return base


@keras.saving.register_keras_serializable(package="zoo")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """A linear ramp to `learning_rate` over `warmup_steps`, then `schedule` from its step 0.

    Args:
        schedule: a `LearningRateSchedule` or a float (a constant rate after the ramp).
        warmup_steps: length of the ramp; step s < warmup_steps gets lr * (s + 1) / warmup_steps.
        learning_rate: the rate the ramp rises to.
    """

    def __init__(self, schedule, warmup_steps: int, learning_rate: float):
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.learning_rate = float(learning_rate)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        ramp = self.learning_rate * (step + 1.0) / self.warmup_steps
        after = step - self.warmup_steps
        later = (self.schedule(ops.maximum(after, 0.0)) if callable(self.schedule)
                 else ops.convert_to_tensor(self.schedule, "float32"))
        return ops.where(after < 0, ramp, ops.cast(later, "float32"))

    def get_config(self):
        schedule = (keras.saving.serialize_keras_object(self.schedule)
                    if callable(self.schedule) else self.schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps,
                "learning_rate": self.learning_rate}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def current_rate(optimizer) -> float:
    """The rate the optimizer's last step used (its first step's before it has stepped)."""
    rate = optimizer._learning_rate  # the float variable or the schedule itself
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        step = max(0, int(keras.ops.convert_to_numpy(optimizer.iterations)) - 1)
        return float(keras.ops.convert_to_numpy(rate(step)))
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class LearningRateController(keras.callbacks.Callback):
    """Logs each epoch's learning rate (the one its last step used) as `learning_rate`.

    For the `plateau` schedule it also sets the rate, once per epoch: the warmup ramp (per
    epoch), then a multiplication by `factor` whenever `monitor` has not improved by
    `min_delta` for `patience` epochs. Only epoch hooks: per-batch hooks would keep Keras from
    running several steps per call.

    The rate logged is `learning_rate_at` at the epoch's last step, the formula the tests hold
    the graph schedules to (in float64; the optimizer computes it in float32), or for `plateau`
    the rate this callback set. Asking TensorFlow instead cost 0.3 to 0.6 ms an epoch, a
    hundredth of a small model's epoch; it is asked only when an epoch may have ended before its
    last step (training stopped, with one step per call).
    """

    def __init__(self, section: OptimizerSection, steps_per_epoch: int, epochs: int):
        super().__init__()
        self.section = section
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = epochs * steps_per_epoch  # what `make_schedule` decays over
        self.plateau = section.schedule == "plateau"
        self.plateau_scale = 1.0
        self._best = math.inf
        self._wait = 0
        self._plateau_rate = section.learning_rate  # the rate set for this epoch (plateau)

    def on_epoch_begin(self, epoch, logs=None):
        if self.plateau:
            warmup = self.section.warmup_epochs
            ramp = (epoch + 1) / warmup if epoch < warmup else 1.0
            self._plateau_rate = self.plateau_scale * ramp * self.section.learning_rate
            self.model.optimizer.learning_rate = self._plateau_rate

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self._epoch_rate(epoch)
        if not self.plateau:
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

    def _epoch_rate(self, epoch: int) -> float:
        """The rate the epoch's last step used."""
        if self.model is not None and self.model.stop_training:
            # Possibly before the epoch's last step: the optimizer knows which step it took.
            return current_rate(self.model.optimizer)
        if self.plateau:
            return self._plateau_rate
        last_step = (epoch + 1) * self.steps_per_epoch - 1
        return learning_rate_at(self.section, last_step, self.steps_per_epoch, self.total_steps)
