"""The monitor's probe: per-layer statistics of a model on a fixed batch, read from copies of
its variables so that the passes can run on another thread while training goes on.

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

    `copy()` snapshots the variables (a fraction of a millisecond, on the training thread);
    `measure` and `samples` read only the snapshot, from any one thread. The kernels' copies
    are also what an epoch's update is measured against.
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
        live = [*probe.trainable_variables, *probe.non_trainable_variables]
        copies = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in live]
        trainable_count = len(probe.trainable_variables)
        position = {id(v): i for i, v in enumerate(probe.trainable_variables)}
        kernel_at = [position[id(layer.kernel)] for layer in self.kernel_layers]

        def copy_weights():
            """Per kernel, the norms of its change since the last copy and of that copy; then
            copy every variable (TensorFlow orders a function's reads and writes of a variable
            as written, so the norms see the old copy)."""
            norms = []
            for i in kernel_at:
                value, old = tf.convert_to_tensor(live[i]), copies[i]
                norms += [tf.norm(value - old), tf.norm(old)]
            for variable, copy in zip(live, copies, strict=True):
                copy.assign(tf.convert_to_tensor(variable))
            return tf.stack([tf.cast(n, tf.float32) for n in norms]) if norms else tf.zeros([0])

        def probe_pass():
            """(kernel statistics, activation statistics, activation samples, gradient
            samples) of the copies on the probe batch."""
            values = [tf.convert_to_tensor(c) for c in copies]
            kernels = [values[i] for i in kernel_at]
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
                    [_subsample(g) for g in grads])

        # No tensor-dependent control flow: without autograph the traces take half as long.
        # The copy is called as a concrete function: the polymorphic call's dispatch would add
        # a third to its fraction of a millisecond, each epoch.
        self._copy = tf.function(copy_weights, autograph=False).get_concrete_function()
        self._pass_function = tf.function(probe_pass, autograph=False)
        self._pass_traced: Any = None  # traced by the first pass, on the thread that runs it

    def copy(self):
        """Snapshot the variables now. Returns the norms of the kernels' change since the last
        snapshot and of that snapshot, as a tensor for `measure` to read later."""
        return self._copy()

    def measure(self, norms, steps: int) -> Statistics:
        """The statistics of the snapshot; `norms` is what the `copy()` that took it returned,
        and `steps` the optimizer steps between that copy and the one before."""
        kernel_values, activation_values, _, _ = self._pass()
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

    def samples(self) -> Samples:
        """The activation and kernel-gradient samples of the snapshot, for histograms."""
        _, _, activations, gradients = self._pass()
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

    def _pass(self):
        if self._pass_traced is None:
            self._pass_traced = self._pass_function.get_concrete_function()
        return self._pass_traced()


def _subsample(tensor):
    import tensorflow as tf

    flat = tf.reshape(tf.cast(tensor, tf.float32), [-1])
    stride = max(1, int(flat.shape[0]) // HISTOGRAM_VALUES)
    return flat[::stride]
