"""The monitor's health policy: which statistics deserve a warning, with the thresholds and why.

Pure functions of `zoo.training.monitor.statistics`: no Keras, no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from zoo.training.monitor.statistics import KernelStats, Statistics


@dataclass(frozen=True)
class HealthPolicy:
    """The thresholds of the monitor's warnings."""

    # The update of one step should be about 1e-3 of the weights (the classic rule of thumb for
    # SGD-family optimizers): much smaller and the layer barely learns, much larger and training
    # is unstable.
    update_ratio_low: float = 1e-4
    update_ratio_high: float = 1e-2
    # Low ratios are flagged only in this first fraction of training: later, small updates are
    # what convergence looks like (and only while the learning rate is at least the recipe's:
    # schedules and warmups lower it on purpose).
    low_update_window: float = 0.1
    # Backpropagation multiplies the gradient by each layer's Jacobian on the way down; in a
    # healthy network the per-weight gradient (RMS, so layers of different sizes compare) of any
    # layer stays within this factor of the classifier's, the layer that receives it first.
    # Below 1/factor the gradient has vanished on the way; above it, it has exploded.
    gradient_spread: float = 100.0
    # A kernel gradient this small moves no weight: even a plain SGD step at rate 1 would change
    # weights of order 0.1 by less than their float32 resolution (~1e-8).
    gradient_zero: float = 1e-10
    # Some dead ReLUs are normal; when most of a layer is dead, its capacity is gone.
    dead_fraction: float = 0.5
    # Likewise for saturated sigmoid/tanh outputs, whose gradients are all but zero.
    saturated_fraction: float = 0.5
    # Units with identical incoming weights compute the same function and get the same
    # gradient: no amount of training separates them (constant or zero initializers).
    symmetry_tolerance: float = 1e-6


DEFAULT_POLICY = HealthPolicy()


@dataclass(frozen=True)
class Finding:
    """One warning: `kind` is one of exploding, zero_gradient, vanishing, update_high,
    update_low, dead, saturated, symmetric."""

    layer: str
    kind: str
    message: str


def low_updates_matter(step: int, *, every: int, epochs: int,
                       current_rate: Callable[[], float | None], base_rate: float | None,
                       policy: HealthPolicy = DEFAULT_POLICY) -> bool:
    """Whether a low update ratio in epoch `step` (monitored every `every` of `epochs`) is
    worth a warning: early in training, and while the learning rate is at least the recipe's
    `base_rate` (`current_rate` is asked only then: reading it costs a device round trip)."""
    if step > max(every, math.ceil(policy.low_update_window * epochs)):
        return False
    rate = current_rate()
    return base_rate is None or rate is None or rate >= base_rate * (1 - 1e-6)


def check(stats: Statistics, *, low_updates_matter: bool, probe_examples: int,
          policy: HealthPolicy = DEFAULT_POLICY) -> list[Finding]:
    """What one epoch's statistics show that is worth a warning (symmetric units included)."""
    found = [*_gradient_findings(stats.kernels, policy),
             *_update_findings(stats.update_ratios, low_updates_matter, policy)]
    for name, activation in stats.activations.items():
        dead, saturated = activation.dead_fraction, activation.saturated_fraction
        if dead is not None and dead > policy.dead_fraction:
            found.append(Finding(name, "dead", f"{dead:.0%} of ReLU units are dead (zero for all "
                                 f"{probe_examples} probe examples)"))
        if saturated is not None and saturated > policy.saturated_fraction:
            found.append(Finding(name, "saturated", f"{saturated:.0%} of {activation.kind} "
                                 "outputs are saturated (their gradient is nearly zero)"))
    return [*_in_layer_order(found, stats.kernels), *symmetric(stats.kernels, policy)]


def symmetric(kernels: Mapping[str, KernelStats],
              policy: HealthPolicy = DEFAULT_POLICY) -> list[Finding]:
    """The layers whose units all have identical weights."""
    return [Finding(name, "symmetric", f"all {kernel.units} units have identical weights — they "
                    "compute the same thing and get the same gradient, so training cannot tell "
                    "them apart (zero or constant initializer?)")
            for name, kernel in kernels.items()
            if kernel.units >= 2
            and kernel.unit_spread <= policy.symmetry_tolerance * kernel.largest_weight]


def _gradient_findings(kernels: Mapping[str, KernelStats], policy: HealthPolicy):
    rms = {name: kernel.grad_norm / math.sqrt(kernel.size) for name, kernel in kernels.items()}
    reference = rms[list(kernels)[-1]] if kernels else 0.0  # the classifier's
    for name, kernel in kernels.items():
        norm = kernel.grad_norm
        if not math.isfinite(norm):
            yield Finding(name, "exploding", f"gradient norm {norm} — not finite")
        elif norm < policy.gradient_zero:
            yield Finding(name, "zero_gradient", f"gradient norm {norm:.1e} — no gradient "
                          "reaches this layer (dead units upstream or downstream, or zero "
                          "weights)")
        elif reference > 0 and rms[name] < reference / policy.gradient_spread:
            yield Finding(name, "vanishing", f"gradient norm {norm:.1e}, "
                          f"{rms[name] / reference:.1e} of the classifier's per weight — "
                          "vanishing gradients (saturating activations? no normalization?)")
        elif reference > 0 and rms[name] > reference * policy.gradient_spread:
            yield Finding(name, "exploding", f"gradient norm {norm:.1e}, "
                          f"{rms[name] / reference:.1e} times the classifier's per weight — "
                          "exploding gradients (clip the norm, lower the learning rate, "
                          "normalize)")


def _update_findings(ratios: Mapping[str, float], low_updates_matter: bool,
                     policy: HealthPolicy):
    for name, ratio in ratios.items():
        if ratio > policy.update_ratio_high:
            yield Finding(name, "update_high", f"update/weight ratio {ratio:.1e} per step, "
                          f"above {policy.update_ratio_high:g} — the learning rate may be too "
                          "high")
        elif ratio < policy.update_ratio_low and low_updates_matter:
            yield Finding(name, "update_low", f"update/weight ratio {ratio:.1e} per step, "
                          f"below {policy.update_ratio_low:g} — this layer barely learns "
                          "(learning rate too low, or vanishing gradients)")


def _in_layer_order(found: list[Finding], kernels: Mapping[str, KernelStats]) -> list[Finding]:
    """Kernel findings by layer, gradients before updates, then the activations' findings, as
    a reader goes through the model."""
    order = {name: i for i, name in enumerate(kernels)}
    return sorted(found, key=lambda f: order.get(f.layer, len(order)))
