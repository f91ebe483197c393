"""What the monitor's probe measures, by name, and the MLflow metrics it becomes.

Plain data: no Keras, no TensorFlow, so the health policy that reads it is tested without them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelStats:
    """One layer's kernel, on the probe batch."""

    grad_norm: float  # ||dL/dW|| of the data loss
    unit_spread: float  # the largest spread of one input's weights across the units
    largest_weight: float  # max |w|: the spread is judged against it
    units: int  # the kernel's last dimension (a convolution's channels)
    size: int  # weights in the kernel


@dataclass(frozen=True)
class ActivationStats:
    """One activation layer's outputs, on the probe batch."""

    kind: str  # relu, sigmoid, tanh, elu, ...
    mean: float
    std: float
    dead_fraction: float | None = None  # ReLU: units that output 0 for every probe example
    saturated_fraction: float | None = None  # sigmoid, tanh: outputs where the derivative is flat


@dataclass(frozen=True)
class Statistics:
    """One monitored epoch: per layer, by layer name, in the model's order."""

    kernels: dict[str, KernelStats]
    activations: dict[str, ActivationStats]
    # Per kernel: ||W_end - W_start|| / ||W_start|| over the epoch, divided by its optimizer
    # steps. Missing for a kernel that grew from all zeros (no scale to judge the change by).
    update_ratios: dict[str, float]

    def metrics(self) -> dict[str, float]:
        """As MLflow metrics: `monitor/<layer>/<metric>`."""
        metrics: dict[str, float] = {}
        for name, kernel in self.kernels.items():
            metrics[f"monitor/{name}/grad_norm"] = kernel.grad_norm
            if name in self.update_ratios:
                metrics[f"monitor/{name}/update_ratio"] = self.update_ratios[name]
        for name, activation in self.activations.items():
            metrics[f"monitor/{name}/act_mean"] = activation.mean
            metrics[f"monitor/{name}/act_std"] = activation.std
            if activation.dead_fraction is not None:
                metrics[f"monitor/{name}/dead_fraction"] = activation.dead_fraction
            if activation.saturated_fraction is not None:
                metrics[f"monitor/{name}/saturated_fraction"] = activation.saturated_fraction
        return metrics


def update_ratio(change: float, scale: float, steps: int) -> float | None:
    """The net change of a kernel per optimizer step, relative to its size at the start:
    `change / scale / steps`; 0 for a kernel that stayed all zeros, None for one that left zero
    (no scale to judge by)."""
    if scale > 0:
        return change / scale / max(1, steps)
    return 0.0 if change == 0 else None
