"""The training monitor as a Keras callback: a probe each few epochs on a thread of its own, the
health policy's warnings, MLflow metrics, and the figures at the end of the run."""

from __future__ import annotations

import functools
import math
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo import mlflow_layout as layout
from zoo.training.monitor import policy
from zoo.training.monitor.probe import Probe
from zoo.training.overlap import wait_for_compiled_code

PROBE_EXAMPLES = 128
# MLflow gets at most this many points of each monitor metric (every k-th monitored epoch, and
# the last): a chart shows no more, and each value costs MLflow's SQL store about 0.1 ms of
# Python while training runs. Every epoch's values go to `monitor/statistics.csv`.
MAX_LOGGED_POINTS = 100


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

    def add(self, finding: policy.Finding, epoch: int | None) -> None:
        if (finding.layer, finding.kind) in self.seen:
            return
        where = f"epoch {epoch}" if epoch else "before training"
        line = f"monitor: {finding.layer} {finding.message} ({where})"
        self.seen[(finding.layer, finding.kind)] = line
        self.print_fn(line)
        if self.run is not None:
            self.run.set_tags({layout.monitor_warning(finding.layer, finding.kind): line})


class TrainingMonitor(keras.callbacks.Callback):
    """Per-layer training health, every `every` epochs, from epoch hooks only: a batch hook
    would keep Keras from running an epoch per call.

    As a monitored epoch ends, the probe snapshots the variables; its pass then runs on a
    thread of its own while the next epoch trains, and that thread also applies the health
    policy; the metrics are logged, and the warnings printed, as the next monitored epoch ends.

    Args:
        x_probe, y_probe: the probe batch (raw inputs, one-hot targets).
        every: monitor every this many epochs.
        steps_per_epoch: optimizer steps in an epoch (the update ratio is per step).
        run: a `zoo.tracking.TrackedRun`, or None to print warnings only.
        base_learning_rate: the recipe's learning rate (low update ratios are flagged only at it).
        title: figure titles.
        print_fn: where warning lines go.
        health: the thresholds of the warnings.
    """

    def __init__(self, x_probe: np.ndarray, y_probe: np.ndarray, *, every: int = 1,
                 steps_per_epoch: int = 1, run=None,
                 base_learning_rate: float | None = None, title: str = "",
                 print_fn: Callable[[str], None] = print,
                 health: policy.HealthPolicy = policy.DEFAULT_POLICY):
        super().__init__()
        self.x_probe, self.y_probe = x_probe, y_probe
        self.every = every
        self.steps_per_epoch = steps_per_epoch
        self.run = run
        self.base_learning_rate = base_learning_rate
        self.title = title
        self.health = health
        self.warnings = _Warnings(run, print_fn)
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.seconds = 0.0  # spent in the monitor's hooks
        self._prober = None  # the probe thread's executor, while training runs

    # ---------------------------------------------------------------------------- hooks
    @_timed
    def on_train_begin(self, logs=None):
        self.probe = Probe(self.model, self.x_probe, self.y_probe)
        self._pending = None  # the probe of the last monitored epoch, still to be read
        self._last_epoch = 0
        monitored = ((self.params or {}).get("epochs") or 1) // self.every
        self._log_stride = max(1, math.ceil(monitored / MAX_LOGGED_POINTS))
        self._first_conv = next((layer for layer in self.probe.kernel_layers
                                 if isinstance(layer, keras.layers.Conv2D)), None)
        self._filters_before = _numpy(self._first_conv.kernel) if self._first_conv else None
        self._snapshot = self.probe.snapshot()  # the start of the next monitored epoch
        self._snapshot_is_now = True  # whether it holds the weights as they are now
        for finding in policy.symmetric(self.probe.kernels_now(), self.health):
            self.warnings.add(finding, epoch=None)
        # One thread, so probes run in the order given. The first traces the probe's pass and
        # its snapshot's read, and keeps the samples before training.
        self._prober = ThreadPoolExecutor(1, thread_name_prefix="zoo-monitor-probe")
        self._epoch_ended = threading.Event()
        self._training_thread = threading.get_ident()
        self._result_due = threading.Event()  # the pending probe's result is wanted now
        self._before_job = self._prober.submit(self._samples_before_training, self._snapshot)
        self._samples_before = None

    def _monitored(self, epoch: int) -> bool:
        return (epoch + 1) % self.every == 0

    @_timed
    def on_epoch_begin(self, epoch, logs=None):
        # A monitored epoch's update is measured from the weights it begins with.
        if self._monitored(epoch) and not self._snapshot_is_now:
            self._snapshot = self.probe.snapshot()
        self._snapshot_is_now = False

    @_timed
    def on_epoch_end(self, epoch, logs=None):
        self._epoch_ended.set()
        self._last_epoch = epoch
        if not self._monitored(epoch):
            return
        self._read_probe()  # the last monitored epoch's, long done
        start, self._snapshot = self._snapshot, self.probe.snapshot()
        self._snapshot_is_now = True
        step = epoch + 1
        low_updates_matter = policy.low_updates_matter(
            step, every=self.every, epochs=(self.params or {}).get("epochs") or step,
            current_rate=lambda: _current_rate(self.model), base_rate=self.base_learning_rate,
            policy=self.health)
        # After the last epoch no compiled code comes to wait for: the pass runs at once, while
        # Keras and the other callbacks end the run, not when `on_train_end` asks for it.
        last = step >= ((self.params or {}).get("epochs") or 0) or self.model.stop_training
        if last:
            self._result_due.set()
        else:
            self._result_due.clear()
        self._pending = (step, self._prober.submit(self._measure, self._snapshot, start,
                                                   low_updates_matter))

    def on_train_end(self, logs=None):
        started = time.perf_counter()
        self._epoch_ended.set()  # a run stopped before its first epoch ended
        try:
            self._read_probe(last=True)
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
            self.run.set_tags({layout.MONITOR_WARNINGS: count})
            self.run.log_metrics({"monitor/seconds": self.seconds}, step=self._last_epoch + 1)

    def finish(self) -> None:
        """Stop the probe thread if training did not end it: an error in `fit` skips
        `on_train_end`, and a probe still waiting for the first epoch to end would keep the
        process from exiting."""
        if self._prober is not None:
            self._epoch_ended.set()
            self._result_due.set()
            self._prober.shutdown(wait=True)
            self._prober = None

    # ---------------------------------------------------------------------------- the probe thread
    def _samples_before_training(self, snapshot):
        """The samples of `snapshot` (the weights before training), taken once the first
        epoch runs compiled code (`zoo.training.overlap`), after the traces of the probe's
        functions.

        The traces (a tenth of a second of Python) then overlap the compilation of the training
        step, which holds no Python lock. Started at once, they would slow the tracing of the
        training step by as much; left for after the first epoch, the end of the next one would
        wait for them.
        """
        wait_for_compiled_code(self._training_thread, self._epoch_ended)
        self.probe.prepare()
        return self.probe.samples(snapshot)

    def _measure(self, snapshot, start, low_updates_matter: bool):
        """The probe's statistics of `snapshot` (the update since `start`, the snapshot at the
        epoch's start) and what the policy finds in them, once the next epoch runs compiled
        code (or its result is due).

        Started at once, the pass's Python met the training thread's between two epochs, where
        that thread needs Python's lock to start the next one: in mnist1d/cnn_paper_plain,
        epochs alternating within a run, 1.20 ms from one epoch's end to the next one's start
        against 0.85 ms without a probe; waiting, 0.82 ms.
        """
        wait_for_compiled_code(self._training_thread, self._result_due, poll=0.002)
        stats = self.probe.measure(snapshot, start, self.steps_per_epoch)
        return stats.metrics(), policy.check(stats, low_updates_matter=low_updates_matter,
                                             probe_examples=self.probe.examples,
                                             policy=self.health)

    def _read_probe(self, last: bool = False) -> None:
        """Wait for the pending probe, if any; record and log what it measured and found
        (MLflow gets every `_log_stride`-th monitored epoch, and the `last`)."""
        if self._before_job is not None:  # the samples before training, taken by now
            self._samples_before, self._before_job = self._before_job.result(), None
        if self._pending is None:
            return
        step, future = self._pending
        self._pending = None
        self._result_due.set()
        metrics, found = future.result()
        for key, value in metrics.items():
            self.history.setdefault(key, []).append((step, value))
        for finding in found:
            self.warnings.add(finding, step)
        if self.run is not None and (last or (step // self.every) % self._log_stride == 0):
            self.run.log_epoch({k: v for k, v in metrics.items() if math.isfinite(v)}, step)

    # ---------------------------------------------------------------------------- figures
    def _log_figures(self, summary: str) -> None:
        """Log the warnings now and the figures as the run ends: they are drawn in a child
        process meanwhile (`zoo.plots.FiguresAside`), while evaluation and saving go on."""
        from zoo import plots

        # The weights as training left them (early stopping may have restored some).
        before, after = self._samples_before, self.probe.samples(self.probe.snapshot())
        folder = Path(tempfile.mkdtemp(prefix="zoo-monitor-"))
        (folder / "warnings.txt").write_text("\n".join([*self.warnings.seen.values(), summary])
                                             + "\n")
        self.run.log_artifact(folder / "warnings.txt", "monitor")
        if self.history:
            _write_statistics(self.history, folder / "statistics.csv")
            self.run.log_artifact(folder / "statistics.csv", "monitor")
        jobs = {}
        if after.activations:
            jobs[folder / "activations.png"] = functools.partial(
                plots.before_after_histograms, before.activations, after.activations,
                title=f"{self.title}: activations on the probe batch", log_magnitude=False)
        if after.gradients:
            jobs[folder / "gradients.png"] = functools.partial(
                plots.before_after_histograms, before.gradients, after.gradients,
                title=f"{self.title}: kernel gradients on the probe batch", log_magnitude=True)
        if self.history:
            jobs[folder / "curves.png"] = functools.partial(
                plots.monitor_curves, self.history, title=self.title,
                update_bounds=(self.health.update_ratio_low, self.health.update_ratio_high))
        if self._first_conv is not None:
            jobs[folder / "filters.png"] = functools.partial(
                plots.filters_before_after, self._filters_before,
                _numpy(self._first_conv.kernel),
                title=f"{self.title}: {self._first_conv.name} filters")
        self.run.log_artifacts_later(plots.FiguresAside(jobs, folder=folder), "monitor")


def monitor_for(prepared, run) -> TrainingMonitor:
    """The monitor of a prepared training run (`zoo.training.trainer.Prepared`): its probe batch is
    `PROBE_EXAMPLES` training examples evenly spaced through the split."""
    splits, recipe = prepared.splits, prepared.recipe
    n = len(splits.y_train)
    index = np.unique(np.linspace(0, n - 1, min(PROBE_EXAMPLES, n)).round().astype(int))
    targets = np.eye(splits.num_classes, dtype=np.float32)[splits.y_train[index]]
    return TrainingMonitor(splits.x_train[index], targets, every=recipe.monitor.every,
                           steps_per_epoch=prepared.steps_per_epoch, run=run,
                           base_learning_rate=recipe.optimizer.learning_rate,
                           title=recipe.name, print_fn=lambda line: print(line, flush=True))


def _write_statistics(history: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """Every monitored epoch's metrics as CSV: a column per `monitor/<layer>/<metric>`, a row
    per epoch (empty where a metric has no value, such as an update ratio of a zero kernel)."""
    import csv

    by_epoch: dict[int, dict[str, float]] = {}
    for key, points in history.items():
        for epoch, value in points:
            by_epoch.setdefault(epoch, {})[key] = value
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", *history])
        for epoch in sorted(by_epoch):
            values = by_epoch[epoch]
            writer.writerow([epoch, *(repr(values[key]) if key in values else ""
                                      for key in history)])


def _numpy(variable) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def _current_rate(model) -> float | None:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return None
