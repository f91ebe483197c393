"""Training monitors: per-layer health metrics each few epochs, warnings, and end-of-run figures.

Switched on by the recipe's `monitor.enabled` key. Every `monitor.every` epochs the
monitor measures, per layer (in MLflow as `monitor/<layer>/<metric>`, step = epoch, at most
`callback.MAX_LOGGED_POINTS` points each; every epoch in `monitor/statistics.csv`):

- `update_ratio`: ||W_end - W_start|| / ||W_start|| of the kernel over the epoch, divided by
  the epoch's optimizer steps: the net change per step (Keras runs a whole epoch per call, so
  there is no hook between its steps);
- `grad_norm`: ||dL/dW|| of the kernel, the data loss's gradient on the probe batch;
- `act_mean`, `act_std`: of the layer's activation outputs on the probe batch;
- `dead_fraction` (ReLU): units that output 0 for every probe example (a unit of a convolution
  is a channel, zero at every position);
- `saturated_fraction` (sigmoid, tanh): outputs outside [0.01, 0.99] (sigmoid) or beyond
  |0.99| (tanh), where the local derivative is below about 1% of its maximum.

The probe batch is a fixed set of training examples, evenly spaced through the split. At the
end of the run the monitor logs PNGs under `monitor/`, drawn in a forked child process:
activation and gradient histograms per layer (before training and after), the per-layer curves
over epochs, and for 2D image CNNs the first convolution's filters (before and after).
Problems print one line each, at most once per layer and kind, become MLflow tags
`monitor.warning.<layer>.<kind>`, and are summed up at the end with the time the monitor held
training up (metric `monitor/seconds`).

The parts, each with one job:
- `statistics`: what is measured, by name, and the MLflow metrics it becomes (plain data);
- `policy`: which statistics deserve a warning, with every threshold in `HealthPolicy` (pure);
- `probe`: the passes over the probe batch that measure them (Keras, TensorFlow);
- `callback`: `TrainingMonitor`, the Keras callback that drives the probe and logs;
- the figures are in `zoo.plots`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainingMonitor", "monitor_for"]


def __getattr__(name: str) -> Any:
    # The callback imports Keras; the statistics and the policy must stay importable without it.
    if name in __all__:
        from zoo.training.monitor import callback

        return getattr(callback, name)
    raise AttributeError(f"module 'zoo.training.monitor' has no attribute {name!r}")
