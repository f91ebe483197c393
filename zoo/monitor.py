"""Training monitors: per-layer health metrics each few epochs, warnings, and end-of-run figures.

Switched on by the recipe's `diagnostics.monitor` key. Every `diagnostics.every` epochs the
monitor logs, per layer, to MLflow (`monitor/<layer>/<metric>`, step = epoch):

- `update_ratio`: ||W_end - W_start|| / ||W_start|| of the kernel over the epoch, divided by
  the epoch's optimizer steps: the net change per step (Keras runs a whole epoch per call, so
  there is no hook between its steps);
- `grad_norm`: ||dL/dW|| of the kernel, the data loss's gradient on the probe batch;
- `act_mean`, `act_std`: of the layer's activation outputs on the probe batch;
- `dead_fraction` (ReLU): units that output 0 for every probe example (a unit of a convolution
  is a channel, zero at every position);
- `saturated_fraction` (sigmoid, tanh): outputs outside [0.01, 0.99] (sigmoid) or beyond
  |0.99| (tanh), where the local derivative is below about 1% of its maximum.

The probe batch is a fixed set of training examples, evenly spaced through the split. As an
epoch ends the monitor copies the model's variables (under a millisecond); the probe's passes
then run on the copies in a thread of their own while the next epoch trains, and that thread
also checks what they measured; the metrics are logged, and the warnings printed, as the next
epoch ends. The passes run in inference mode (batch norm on its moving statistics, no
dropout): a training-mode call would advance the dropout layers' seed generators and update
batch norm's statistics, and the monitored run would then no longer train the same weights as
an unmonitored one. Nothing here draws random numbers.

At the end of the run it logs PNGs under `monitor/`: activation and gradient histograms per
layer (before training and after), the per-layer curves over epochs, and for 2D image CNNs the
first convolution's filters (before and after). Problems print one line each, at most once per
layer and kind, become MLflow tags `monitor.warning.<layer>.<kind>`, and are summed up at the end
with the time the monitor held training up (metric `monitor/seconds`).
"""

from __future__ import annotations

import functools
import math
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

PROBE_EXAMPLES = 128
HISTOGRAM_VALUES = 4096  # values per layer kept for each histogram (a strided subsample)

# Thresholds, and why:
# - The update of one step should be about 1e-3 of the weights (the classic rule of thumb for
#   SGD-family optimizers): much smaller and the layer barely learns, much larger and training is
#   unstable. Low ratios are only flagged in the first tenth of training (later, small updates
#   are what convergence looks like) and while the learning rate is at least the recipe's base
#   rate (schedules and warmups lower it on purpose).
UPDATE_RATIO_LOW, UPDATE_RATIO_HIGH = 1e-4, 1e-2
# - Backpropagation multiplies the gradient by each layer's Jacobian on the way down; in a
#   healthy network the per-weight gradient (RMS, so layers of different sizes compare) of any
#   layer stays within a factor of 100 of the classifier's, the layer that receives it first.
#   Below 1/100 the gradient has vanished on the way; above 100x it has exploded.
GRADIENT_SPREAD = 100.0
# - A kernel gradient this small moves no weight: even a plain SGD step at rate 1 would change
#   weights of order 0.1 by less than their float32 resolution (~1e-8).
GRADIENT_ZERO = 1e-10
# - Some dead ReLUs are normal; when most of a layer is dead, its capacity is gone.
DEAD_FRACTION = 0.5
# - Likewise for saturated sigmoid/tanh outputs, whose gradients are all but zero.
SATURATED_FRACTION = 0.5
# - Units with identical incoming weights compute the same function and get the same gradient:
#   no amount of training separates them (constant or zero initializers).
SYMMETRY_TOLERANCE = 1e-6

_SATURATING = ("sigmoid", "tanh")


def _activation_kind(layer) -> str | None:
    """The nonlinearity a layer applies, or None (linear, softmax, or no activation)."""
    from keras import layers

    table = ((layers.ReLU, "relu"), (layers.LeakyReLU, "leaky_relu"), (layers.PReLU, "prelu"),
             (layers.ELU, "elu"))
    for cls, kind in table:
        if isinstance(layer, cls):
            return kind
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return None if name in (None, "linear", "softmax") else name


def _timed(hook):
    """Adds the hook's run time to the monitor's `seconds`: what monitoring cost the run."""

    @functools.wraps(hook)
    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    return timed


@dataclass
class _Warnings:
    """One line per (layer, kind), printed once, with its MLflow tag."""

    run: Any
    print_fn: Callable[[str], None]
    seen: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, layer: str, kind: str, message: str, epoch: int | None) -> None:
        if (layer, kind) in self.seen:
            return
        where = f"epoch {epoch}" if epoch else "before training"
        line = f"monitor: {layer} {message} ({where})"
        self.seen[(layer, kind)] = line
        self.print_fn(line)
        if self.run is not None:
            self.run.set_tags({f"monitor.warning.{layer}.{kind}": line})


class TrainingMonitor(keras.callbacks.Callback):
    """Per-layer training health, every `every` epochs, from epoch hooks only: a batch hook
    would keep Keras from running an epoch per call.

    Args:
        x_probe, y_probe: the probe batch (raw inputs, one-hot targets).
        every: monitor every this many epochs.
        steps_per_epoch: optimizer steps in an epoch (the update ratio is per step).
        run: a `zoo.tracking.TrackedRun`, or None to print warnings only.
        base_learning_rate: the recipe's learning rate (low update ratios are flagged only at it).
        title: figure titles.
        print_fn: where warning lines go.
    """

    def __init__(self, x_probe: np.ndarray, y_probe: np.ndarray, *, every: int = 1,
                 steps_per_epoch: int = 1, run=None,
                 base_learning_rate: float | None = None, title: str = "",
                 print_fn: Callable[[str], None] = print):
        super().__init__()
        self.x_probe, self.y_probe = x_probe, y_probe
        self.every = every
        self.steps_per_epoch = steps_per_epoch
        self.run = run
        self.base_learning_rate = base_learning_rate
        self.title = title
        self.warnings = _Warnings(run, print_fn)
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.seconds = 0.0  # spent in the monitor's hooks

    # ---------------------------------------------------------------------------- set-up
    @_timed
    def on_train_begin(self, logs=None):
        import tensorflow as tf

        model = self.model
        self.weighted = [layer for layer in model.layers
                         if getattr(layer, "kernel", None) is not None and layer.trainable]
        self.activations = [(layer, kind) for layer in model.layers
                            if (kind := _activation_kind(layer)) is not None]
        # Named: an auto-named model would advance Keras' name counters.
        probe = keras.Model(model.inputs,
                            [model.outputs[0], *(layer.output for layer, _ in self.activations)],
                            name=f"{model.name}_monitor_probe")
        kinds = [kind for _, kind in self.activations]
        loss_fn = model.loss if callable(model.loss) else keras.losses.get(model.loss)
        x = tf.constant(self.x_probe)
        y = tf.constant(self.y_probe, dtype=model.outputs[0].dtype)
        # The probe reads copies of the model's variables (plain tf.Variables beside them), not
        # the variables: copying takes well under a millisecond at the end of an epoch, and the
        # probe's passes (a few ms) then run on another thread while the next epoch trains. The
        # kernels' copies are also the snapshot an epoch's update is measured against.
        live = [*probe.trainable_variables, *probe.non_trainable_variables]
        copies = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in live]
        trainable_count = len(probe.trainable_variables)
        position = {id(v): i for i, v in enumerate(probe.trainable_variables)}
        kernel_at = [position[id(layer.kernel)] for layer in self.weighted]

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
            """(scalars, activation samples, gradient samples) of the copies on the probe
            batch; the samples are for the histograms (before training, and after)."""
            values = [tf.convert_to_tensor(c) for c in copies]
            kernels = [values[i] for i in kernel_at]
            with tf.GradientTape() as tape:
                tape.watch(kernels)
                outputs, _ = probe.stateless_call(values[:trainable_count],
                                                  values[trainable_count:], x, training=False)
                outputs = outputs if isinstance(outputs, list) else [outputs]
                loss = loss_fn(y, outputs[0])
            grads = tape.gradient(loss, kernels)
            grads = [tf.zeros_like(k) if g is None else g for k, g in zip(kernels, grads,
                                                                           strict=True)]
            # Per kernel: gradient norm, the largest spread of one input's weights across the
            # units, and the largest weight (the units are all alike when the spread is nil
            # next to it).
            stats = []
            for kernel, grad in zip(kernels, grads, strict=True):
                units = tf.reshape(kernel, [-1, kernel.shape[-1]])
                stats += [tf.norm(grad),
                          tf.reduce_max(tf.reduce_max(units, 1) - tf.reduce_min(units, 1)),
                          tf.reduce_max(tf.abs(units))]
            for kind, a in zip(kinds, outputs[1:], strict=True):
                a = tf.cast(a, tf.float32)
                stats += [tf.reduce_mean(a), tf.math.reduce_std(a)]
                if kind == "relu":
                    units = tf.reshape(a, [-1, a.shape[-1]])
                    stats.append(tf.reduce_mean(tf.cast(tf.reduce_max(units, 0) <= 0, tf.float32)))
                elif kind == "sigmoid":
                    stats.append(tf.reduce_mean(tf.cast((a < 0.01) | (a > 0.99), tf.float32)))
                elif kind == "tanh":
                    stats.append(tf.reduce_mean(tf.cast(tf.abs(a) > 0.99, tf.float32)))
            scalars = tf.stack([tf.cast(s, tf.float32) for s in stats])
            return scalars, [_subsample(a) for a in outputs[1:]], [_subsample(g) for g in grads]

        # No tensor-dependent control flow: without autograph the traces take half as long.
        # Called as concrete functions: the polymorphic call's dispatch would add a third to
        # the copy's fraction of a millisecond, each epoch.
        self._copy = tf.function(copy_weights, autograph=False).get_concrete_function()
        self._probe_function = tf.function(probe_pass, autograph=False)
        self._probe_traced = None  # traced by the first probe, on the probe thread
        self._sizes = [int(np.prod(layer.kernel.shape)) for layer in self.weighted]
        self._pending = None  # the probe of the last monitored epoch, still to be read
        self._last_epoch = 0
        self._first_conv = next((layer for layer in self.weighted
                                 if isinstance(layer, keras.layers.Conv2D)), None)
        self._filters_before = (_numpy(self._first_conv.kernel) if self._first_conv is not None
                                else None)
        self._copy()
        self._copied = True  # whether the copies hold the weights as they are now
        kernels = [_numpy(layer.kernel) for layer in self.weighted]
        for layer, kind, message in self._symmetric(_kernel_stats_of(kernels)):
            self.warnings.add(layer, kind, message, epoch=None)
        from concurrent.futures import ThreadPoolExecutor

        # One thread, so probes run in the order given. The first traces the probe and keeps
        # the samples before training.
        self._prober = ThreadPoolExecutor(1, thread_name_prefix="zoo-monitor-probe")
        self._epoch_ended = threading.Event()
        self._before_job = self._prober.submit(self._samples_before_training,
                                               threading.get_ident())
        self._samples_before = None

    def _samples_before_training(self, training_thread: int):
        """The samples before training, taken once the first epoch runs compiled code.

        The probe's trace (a tenth of a second of Python) then overlaps the compilation of the
        training step, which holds no Python lock. Started at once, it would slow the tracing
        of the training step by as much; left for after the first epoch, the end of the next
        one would wait for it. The training thread is in compiled code when two looks 20 ms
        apart find it in the same call of TensorFlow's `quick_execute`; the first epoch's end
        ends the wait in any case.
        """
        last = None
        while not self._epoch_ended.wait(0.02):
            frame = sys._current_frames().get(training_thread)
            if frame is None or (frame is last and frame.f_code.co_name == "quick_execute"):
                break
            last = frame
        return self._samples()

    def _probe(self):
        """The probe's pass (on the probe thread only)."""
        if self._probe_traced is None:
            self._probe_traced = self._probe_function.get_concrete_function()
        return self._probe_traced()

    def _samples(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The probe's activation and gradient samples of the copies, for the histograms."""
        _, activations, gradients = self._probe()
        return [a.numpy() for a in activations], [g.numpy() for g in gradients]

    # ---------------------------------------------------------------------------- hooks
    def _monitored(self, epoch: int) -> bool:
        return (epoch + 1) % self.every == 0

    @_timed
    def on_epoch_begin(self, epoch, logs=None):
        # A monitored epoch's update is measured from the weights it begins with.
        if self._monitored(epoch) and not self._copied:
            self._read_probe()  # the copies are about to change under it
            self._copy()
        self._copied = False

    def _kernel_stats(self, scalars: np.ndarray) -> list[np.ndarray]:
        """Per kernel: (gradient norm, unit spread, largest weight)."""
        return [scalars[3 * i:3 * i + 3] for i in range(len(self.weighted))]

    @_timed
    def on_epoch_end(self, epoch, logs=None):
        self._epoch_ended.set()
        self._last_epoch = epoch
        if not self._monitored(epoch):
            return
        self._read_probe()  # the last epoch's, long done: the copies may change now
        norms = self._copy()
        self._copied = True
        step = epoch + 1
        low_updates_matter = self._low_updates_matter(step)
        self._pending = (step, self._prober.submit(self._measure, step, norms,
                                                   low_updates_matter))

    def _low_updates_matter(self, step: int) -> bool:
        """Whether a low update ratio in epoch `step` is worth a warning: only early in
        training (later, small updates are what convergence looks like) and while the learning
        rate is at least the recipe's (schedules and warmups lower it on purpose)."""
        epochs = (self.params or {}).get("epochs") or step
        if step > max(self.every, math.ceil(0.1 * epochs)):
            return False
        rate = _current_rate(self.model)
        return (self.base_learning_rate is None or rate is None
                or rate >= self.base_learning_rate * (1 - 1e-6))

    def _read_probe(self) -> None:
        """Wait for the pending probe, if any; record and log what it measured and found."""
        if self._before_job is not None:  # it reads the copies, which are about to change
            self._samples_before, self._before_job = self._before_job.result(), None
        if self._pending is None:
            return
        step, future = self._pending
        self._pending = None
        metrics, found = future.result()
        for key, value in metrics.items():
            self.history.setdefault(key, []).append((step, value))
        for layer, kind, message in found:
            self.warnings.add(layer, kind, message, step)
        if self.run is not None:
            self.run.log_epoch({k: v for k, v in metrics.items() if math.isfinite(v)}, step)

    def _measure(self, step: int, norms, low_updates_matter: bool):
        """The probe's pass over the copies and the checks of what it measured, on the probe
        thread while the next epoch trains: (metrics, [(layer, kind, message), ...])."""
        scalars, norms = self._probe()[0].numpy(), norms.numpy()
        kernel_stats = self._kernel_stats(scalars)
        metrics: dict[str, float] = {}
        steps = max(1, self.steps_per_epoch)
        for i, (layer, (grad_norm, _, _)) in enumerate(zip(self.weighted, kernel_stats,
                                                           strict=True)):
            change, scale = norms[2 * i], norms[2 * i + 1]
            metrics[f"monitor/{layer.name}/grad_norm"] = float(grad_norm)
            if scale > 0:
                metrics[f"monitor/{layer.name}/update_ratio"] = float(change / scale / steps)
            elif change == 0:
                metrics[f"monitor/{layer.name}/update_ratio"] = 0.0
        at = 3 * len(self.weighted)
        for layer, kind in self.activations:
            metrics[f"monitor/{layer.name}/act_mean"] = float(scalars[at])
            metrics[f"monitor/{layer.name}/act_std"] = float(scalars[at + 1])
            at += 2
            if kind == "relu":
                metrics[f"monitor/{layer.name}/dead_fraction"] = float(scalars[at])
                at += 1
            elif kind in _SATURATING:
                metrics[f"monitor/{layer.name}/saturated_fraction"] = float(scalars[at])
                at += 1
        found = self._check(metrics, low_updates_matter)
        found += self._symmetric(kernel_stats)
        return metrics, found

    def on_train_end(self, logs=None):
        started = time.perf_counter()
        self._epoch_ended.set()  # a run stopped before its first epoch ended
        try:
            self._read_probe()
        finally:
            if self._prober is not None:
                self._prober.shutdown(wait=True)
                self._prober = None
        count = len(self.warnings.seen)
        summary = (f"monitor: {count} warning(s): " + "; ".join(
            f"{layer} {kind}" for layer, kind in self.warnings.seen) if count
            else "monitor: no warnings")
        if self.run is not None:
            self._log_figures(summary)
        self.seconds += time.perf_counter() - started
        self.warnings.print_fn(f"{summary} (monitoring took {self.seconds:.1f} s)")
        if self.run is not None:
            self.run.set_tags({"monitor.warnings": count})
            self.run.log_metrics({"monitor/seconds": self.seconds}, step=self._last_epoch + 1)

    def _log_figures(self, summary: str) -> None:
        act_before, grad_before = self._samples_before
        self._copy()  # the weights as training left them (early stopping may have restored some)
        act_after, grad_after = self._samples()
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            files = [folder / "warnings.txt"]
            files[0].write_text("\n".join([*self.warnings.seen.values(), summary]) + "\n")
            names = [layer.name for layer, _ in self.activations]
            if names:
                files.append(_histograms(
                    names, act_before, act_after, folder / "activations.png",
                    f"{self.title}: activations on the probe batch", log_magnitude=False))
            names = [layer.name for layer in self.weighted]
            if names:
                files.append(_histograms(
                    names, grad_before, grad_after, folder / "gradients.png",
                    f"{self.title}: kernel gradients on the probe batch", log_magnitude=True))
            if self.history:
                files.append(_curves(self.history, folder / "curves.png", self.title))
            if self._first_conv is not None:
                files.append(_filters(self._filters_before, _numpy(self._first_conv.kernel),
                                      folder / "filters.png",
                                      f"{self.title}: {self._first_conv.name} filters"))
            for path in files:
                self.run.log_artifact(path, "monitor")

    # ---------------------------------------------------------------------------- checks
    def _check(self, metrics: dict[str, float],
               low_updates_matter: bool) -> list[tuple[str, str, str]]:
        """What an epoch's metrics show that is worth a warning: [(layer, kind, message)]."""
        found: list[tuple[str, str, str]] = []

        def warn(layer: str, kind: str, message: str) -> None:
            found.append((layer, kind, message))

        rms = {layer.name: metrics[f"monitor/{layer.name}/grad_norm"] / math.sqrt(size)
               for layer, size in zip(self.weighted, self._sizes, strict=True)}
        reference = rms[self.weighted[-1].name] if self.weighted else 0.0
        for layer in self.weighted:
            name = layer.name
            norm = metrics[f"monitor/{name}/grad_norm"]
            if not math.isfinite(norm):
                warn(name, "exploding", f"gradient norm {norm} — not finite")
            elif norm < GRADIENT_ZERO:
                warn(name, "zero_gradient", f"gradient norm {norm:.1e} — no gradient reaches "
                     "this layer (dead units upstream or downstream, or zero weights)")
            elif reference > 0 and rms[name] < reference / GRADIENT_SPREAD:
                warn(name, "vanishing", f"gradient norm {norm:.1e}, {rms[name] / reference:.1e} "
                     "of the classifier's per weight — vanishing gradients (saturating "
                     "activations? no normalization?)")
            elif reference > 0 and rms[name] > reference * GRADIENT_SPREAD:
                warn(name, "exploding", f"gradient norm {norm:.1e}, {rms[name] / reference:.1e} "
                     "times the classifier's per weight — exploding gradients (clip the norm, "
                     "lower the learning rate, normalize)")
            ratio = metrics.get(f"monitor/{name}/update_ratio")
            if ratio is None:
                continue
            if ratio > UPDATE_RATIO_HIGH:
                warn(name, "update_high", f"update/weight ratio {ratio:.1e} per step, above "
                     f"{UPDATE_RATIO_HIGH:g} — the learning rate may be too high")
            elif ratio < UPDATE_RATIO_LOW and low_updates_matter:
                warn(name, "update_low", f"update/weight ratio {ratio:.1e} per step, below "
                     f"{UPDATE_RATIO_LOW:g} — this layer barely learns (learning rate too low, "
                     "or vanishing gradients)")
        for layer, kind in self.activations:
            dead = metrics.get(f"monitor/{layer.name}/dead_fraction")
            if dead is not None and dead > DEAD_FRACTION:
                warn(layer.name, "dead", f"{dead:.0%} of ReLU units are dead (zero for all "
                     f"{len(self.x_probe)} probe examples)")
            saturated = metrics.get(f"monitor/{layer.name}/saturated_fraction")
            if saturated is not None and saturated > SATURATED_FRACTION:
                warn(layer.name, "saturated", f"{saturated:.0%} of {kind} outputs are saturated "
                     "(their gradient is nearly zero)")
        return found

    def _symmetric(self, kernel_stats: list[np.ndarray]) -> list[tuple[str, str, str]]:
        """The layers whose units all have identical weights: [(layer, kind, message)]."""
        found = []
        for layer, (*_, spread, largest) in zip(self.weighted, kernel_stats, strict=True):
            units = layer.kernel.shape[-1]
            if units >= 2 and spread <= SYMMETRY_TOLERANCE * largest:
                found.append((layer.name, "symmetric", f"all {units} units have identical "
                              "weights — they compute the same thing and get the same gradient, "
                              "so training cannot tell them apart (zero or constant "
                              "initializer?)"))
        return found


def monitor_for(prepared, run) -> TrainingMonitor:
    """The monitor of a prepared training run (`zoo.train.Prepared`): its probe batch is
    `PROBE_EXAMPLES` training examples evenly spaced through the split."""
    splits, recipe = prepared.splits, prepared.recipe
    n = len(splits.y_train)
    index = np.unique(np.linspace(0, n - 1, min(PROBE_EXAMPLES, n)).round().astype(int))
    targets = np.eye(splits.num_classes, dtype=np.float32)[splits.y_train[index]]
    return TrainingMonitor(splits.x_train[index], targets, every=recipe.diagnostics.every,
                           steps_per_epoch=prepared.steps_per_epoch, run=run,
                           base_learning_rate=recipe.optimizer.learning_rate,
                           title=recipe.name, print_fn=lambda line: print(line, flush=True))


# -------------------------------------------------------------------------------- helpers
def _numpy(variable) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def _kernel_stats_of(kernels: list[np.ndarray]) -> list[np.ndarray]:
    """Per kernel, as the probe computes them: (0 for the gradient norm, the largest spread of
    one input's weights across the units, the largest weight)."""
    stats = []
    for kernel in kernels:
        units = kernel.reshape(-1, kernel.shape[-1])
        stats.append(np.array([0.0, (units.max(1) - units.min(1)).max(), np.abs(units).max()]))
    return stats


def _subsample(tensor):
    import tensorflow as tf

    flat = tf.reshape(tf.cast(tensor, tf.float32), [-1])
    stride = max(1, int(flat.shape[0]) // HISTOGRAM_VALUES)
    return flat[::stride]


def _current_rate(model) -> float | None:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return None


def _histograms(names: list[str], before: list[np.ndarray], after: list[np.ndarray], path: Path,
                title: str, *, log_magnitude: bool) -> Path:
    """One panel per layer: the values before training against after it."""
    from matplotlib.ticker import MaxNLocator

    from zoo.plots import fixed_title, log_scale, pyplot

    plt = pyplot()
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    height = 2.4 * rows + 0.9
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, height), squeeze=False)
    for ax, name, first, last in zip(axes.flat, names, before, after, strict=False):
        if log_magnitude:  # gradients span orders of magnitude: the exponent is what matters
            first, last = (np.log10(np.abs(v) + 1e-30) for v in (first, last))
        both = np.concatenate([first, last])
        both = both[np.isfinite(both)]
        bins = np.linspace(both.min(), both.max() + 1e-12, 41) if both.size else 10
        # Precomputed counts drawn as one step outline each: much faster than ax.hist's bars.
        for values, label in ((first, "before training"), (last, "after")):
            counts, edges = np.histogram(values[np.isfinite(values)], bins=bins)
            ax.stairs(np.maximum(counts, 0.5), edges, fill=True, alpha=0.5, label=label,
                      baseline=0.5)
        fixed_title(ax, name, fontsize=9)
        log_scale(ax, subs=(1.0,))
        ax.xaxis.set_major_locator(MaxNLocator(5))  # each tick costs about a millisecond
        ax.set_xlabel("log10 |gradient|" if log_magnitude else "activation", fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    # Fixed margins in inches: tight_layout would cost more than drawing the figure.
    fig.subplots_adjust(left=0.55 / (3.6 * columns), right=0.98, bottom=0.5 / height,
                        top=1 - 0.55 / height, hspace=0.55, wspace=0.25)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _curves(history: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    """Update ratio and gradient norm per layer over epochs, with the warning thresholds."""
    from zoo.plots import log_scale, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, label in ((axes[0], "update_ratio", "update / weight ratio per step"),
                              (axes[1], "grad_norm", "kernel gradient norm (probe batch)")):
        for key, points in history.items():
            if not key.endswith(f"/{metric}"):
                continue
            steps, values = zip(*points, strict=True)
            values = np.maximum(np.asarray(values), 1e-12)  # zeros on a log axis
            ax.plot(steps, values, label=key.split("/")[1], linewidth=1.2)
        if metric == "update_ratio":
            for bound in (UPDATE_RATIO_LOW, UPDATE_RATIO_HIGH):
                ax.axhline(bound, color="0.5", linestyle="--", linewidth=0.8)
            ax.axhline(1e-3, color="0.7", linestyle=":", linewidth=0.8)
        log_scale(ax, subs=(1.0,))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _filters(before: np.ndarray, after: np.ndarray, path: Path, title: str) -> Path:
    """The first convolution's filters (up to 32), before training (left) and after (right),
    each scaled to its own range."""
    from zoo.plots import pyplot

    plt = pyplot()
    count, per_row = min(after.shape[-1], 32), 8
    rows, columns = math.ceil(count / per_row), min(count, per_row)
    fig, axes = plt.subplots(rows, 2 * columns + 1, figsize=(0.55 * (2 * columns + 1) + 0.4,
                                                              0.6 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for side, kernel in enumerate((before, after)):
        for i in range(count):
            image = kernel[..., i]  # (height, width, input channels)
            image = image if image.shape[-1] == 3 else image.mean(axis=-1)
            low, high = image.min(), image.max()
            image = (image - low) / max(high - low, 1e-12)
            ax = axes[i // per_row][side * (columns + 1) + i % per_row]
            ax.imshow(image, cmap=None if image.ndim == 3 else "gray", interpolation="nearest")
        axes[0][side * (columns + 1)].set_title("before" if side == 0 else "after", fontsize=8,
                                                 loc="left")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
