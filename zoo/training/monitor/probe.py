"""The monitor's probe: per-layer statistics of a model on a fixed batch, read from snapshots of
its variables so that the passes can run on another thread while training goes on.

A snapshot is the variables' values as tensors, read in one call. TensorFlow gives a read value
its own storage once the variable is next written (copy on write), so the snapshot keeps the
values it was taken with while training goes on, and taking it copies nothing.

The passes run in inference mode (batch norm on its moving statistics, no dropout): a
training-mode call would advance the dropout layers' seed generators and update batch norm's
statistics, and the monitored run would then no longer train the same weights as an
unmonitored one. Nothing here draws random numbers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import numpy as np

from zoo.training.monitor.statistics import ActivationStats, KernelStats, Statistics, update_ratio

HISTOGRAM_VALUES = 4096  # values per layer kept for each histogram (a strided subsample)
SATURATING = ("sigmoid", "tanh")


class Samples(NamedTuple):
    """Per layer, a strided subsample of its values on the probe batch, for histograms."""

    activations: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]  # of the kernels


def activation_kind(layer) -> str | None:
    """The nonlinearity a layer applies, or None (linear, softmax, or no activation)."""
    from keras import layers

    table = ((layers.ReLU, "relu"), (layers.LeakyReLU, "leaky_relu"), (layers.PReLU, "prelu"),
             (layers.ELU, "elu"))
    for cls, kind in table:
        if isinstance(layer, cls):
            return kind
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return None if name in (None, "linear", "softmax") else name


class Probe:
    """Statistics of `model`'s trainable kernels and activations on (x, y).

    `snapshot()` reads the variables (a fraction of a millisecond, on the training thread);
    `measure` and `samples` read only snapshots, from any one thread. The update of an epoch is
    measured between the snapshots at its start and its end.
    """

    def __init__(self, model, x: np.ndarray, y: np.ndarray):
        import tensorflow as tf

        self.kernel_layers = [layer for layer in model.layers
                              if getattr(layer, "kernel", None) is not None and layer.trainable]
        self.activation_layers = [(layer, kind) for layer in model.layers
                                  if (kind := activation_kind(layer)) is not None]
        self.examples = len(x)
        # Named: an auto-named model would advance Keras' name counters.
        activation_outputs = [layer.output for layer, _ in self.activation_layers]
        probe = keras.Model(model.inputs, [model.outputs[0], *activation_outputs],
                            name=f"{model.name}_monitor_probe")
        kinds = [kind for _, kind in self.activation_layers]
        loss_fn = model.loss if callable(model.loss) else keras.losses.get(model.loss)
        x = tf.constant(x)
        y = tf.constant(y, dtype=model.outputs[0].dtype)
        self._live = [*probe.trainable_variables, *probe.non_trainable_variables]
        trainable_count = len(probe.trainable_variables)
        position = {id(v): i for i, v in enumerate(probe.trainable_variables)}
        self._kernel_at = [position[id(layer.kernel)] for layer in self.kernel_layers]

        def probe_pass(values, previous_kernels):
            """(kernel statistics, activation statistics, activation samples, gradient
            samples, update norms) of the snapshot `values` on the probe batch; the update
            norms are, per kernel, those of its change since `previous_kernels` and of them."""
            kernels = [values[i] for i in self._kernel_at]
            norms = []
            for kernel, old in zip(kernels, previous_kernels, strict=True):
                norms += [tf.cast(tf.norm(kernel - old), tf.float32),
                          tf.cast(tf.norm(old), tf.float32)]
            with tf.GradientTape() as tape:
                tape.watch(kernels)
                outputs, _ = probe.stateless_call(values[:trainable_count],
                                                  values[trainable_count:], x, training=False)
                outputs = outputs if isinstance(outputs, list) else [outputs]
                loss = loss_fn(y, outputs[0])
            grads = tape.gradient(loss, kernels)
            grads = [tf.zeros_like(k) if g is None else g
                     for k, g in zip(kernels, grads, strict=True)]
            kernel_stats = []
            for kernel, grad in zip(kernels, grads, strict=True):
                units = tf.reshape(kernel, [-1, kernel.shape[-1]])
                kernel_stats.append(tf.stack([
                    tf.cast(tf.norm(grad), tf.float32),
                    tf.cast(tf.reduce_max(tf.reduce_max(units, 1) - tf.reduce_min(units, 1)),
                            tf.float32),
                    tf.cast(tf.reduce_max(tf.abs(units)), tf.float32)]))
            activation_stats = []
            for kind, a in zip(kinds, outputs[1:], strict=True):
                a = tf.cast(a, tf.float32)
                # The fraction in trouble: dead ReLU units (a convolution's unit is a channel,
                # zero at every position), saturated sigmoid or tanh outputs (where the local
                # derivative is below about 1% of its maximum); -1 for other kinds.
                if kind == "relu":
                    units = tf.reshape(a, [-1, a.shape[-1]])
                    share = tf.reduce_mean(tf.cast(tf.reduce_max(units, 0) <= 0, tf.float32))
                elif kind == "sigmoid":
                    share = tf.reduce_mean(tf.cast((a < 0.01) | (a > 0.99), tf.float32))
                elif kind == "tanh":
                    share = tf.reduce_mean(tf.cast(tf.abs(a) > 0.99, tf.float32))
                else:
                    share = tf.constant(-1.0)
                activation_stats.append(tf.stack([tf.reduce_mean(a), tf.math.reduce_std(a),
                                                  share]))
            return (kernel_stats, activation_stats, [_subsample(a) for a in outputs[1:]],
                    [_subsample(g) for g in grads],
                    tf.stack(norms) if norms else tf.zeros([0]))

        # No tensor-dependent control flow: without autograph the traces take half as long.
        # Both are traced off the training thread, the read by `prepare` and the pass by its
        # first use: the first call of a function costs tens of milliseconds, a later one a
        # fraction of one.
        self._read_function = tf.function(lambda: [tf.identity(v.value) for v in self._live],
                                          autograph=False)
        self._pass_function = tf.function(probe_pass, autograph=False)
        self._read: Any = None  # the traced read, once `prepare` has run
        self._pass_traced: Any = None

    def snapshot(self) -> tuple:
        """The variables' values now, for `measure` and `samples` to read later."""
        read = self._read
        if read is None:  # not prepared yet: read one by one, which needs no trace
            import tensorflow as tf

            return tuple(tf.identity(v.value) for v in self._live)
        return tuple(read())

    def prepare(self) -> None:
        """Trace the read of a snapshot and call it once (it writes nothing), off the training
        thread, so that the snapshots at the ends of epochs cost what a later call costs."""
        read = self._read_function.get_concrete_function()
        read()
        self._read = read

    def measure(self, snapshot: tuple, previous: tuple, steps: int) -> Statistics:
        """The statistics of `snapshot`; the update ratios are of the change since `previous`
        (the snapshot at the start of the epoch), over its `steps` optimizer steps."""
        kernel_values, activation_values, _, _, norms = self._pass(snapshot, previous)
        norms = norms.numpy()
        kernels, ratios = {}, {}
        for i, (layer, values) in enumerate(zip(self.kernel_layers, kernel_values, strict=True)):
            grad_norm, spread, largest = (float(v) for v in values.numpy())
            kernels[layer.name] = KernelStats(grad_norm, spread, largest,
                                              units=int(layer.kernel.shape[-1]),
                                              size=int(np.prod(layer.kernel.shape)))
            ratio = update_ratio(float(norms[2 * i]), float(norms[2 * i + 1]), steps)
            if ratio is not None:
                ratios[layer.name] = ratio
        activations = {}
        for (layer, kind), values in zip(self.activation_layers, activation_values, strict=True):
            mean, std, share = (float(v) for v in values.numpy())
            activations[layer.name] = ActivationStats(
                kind, mean, std, dead_fraction=share if kind == "relu" else None,
                saturated_fraction=share if kind in SATURATING else None)
        return Statistics(kernels, activations, ratios)

    def samples(self, snapshot: tuple) -> Samples:
        """The activation and kernel-gradient samples of `snapshot`, for histograms."""
        _, _, activations, gradients, _ = self._pass(snapshot, snapshot)
        return Samples(
            {layer.name: a.numpy() for (layer, _), a in zip(self.activation_layers, activations,
                                                             strict=True)},
            {layer.name: g.numpy() for layer, g in zip(self.kernel_layers, gradients,
                                                        strict=True)})

    def kernels_now(self) -> dict[str, KernelStats]:
        """The kernels' statistics from their current values, without a pass (no gradient:
        enough to tell symmetric units before training)."""
        stats = {}
        for layer in self.kernel_layers:
            kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float32)
            units = kernel.reshape(-1, kernel.shape[-1])
            stats[layer.name] = KernelStats(
                grad_norm=0.0, unit_spread=float((units.max(1) - units.min(1)).max()),
                largest_weight=float(np.abs(units).max()), units=units.shape[-1],
                size=kernel.size)
        return stats

    def _pass(self, snapshot: tuple, previous: tuple):
        values = list(snapshot)
        previous_kernels = [previous[i] for i in self._kernel_at]
        if self._pass_traced is None:
            self._pass_traced = self._pass_function.get_concrete_function(
                values, previous_kernels)
        return self._pass_traced(values, previous_kernels)


def _subsample(tensor):
    import tensorflow as tf

    flat = tf.reshape(tf.cast(tensor, tf.float32), [-1])
    stride = max(1, int(flat.shape[0]) // HISTOGRAM_VALUES)
    return flat[::stride]
