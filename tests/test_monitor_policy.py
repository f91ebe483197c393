"""The monitor's health policy on hand-made statistics: no Keras, no training."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zoo.training.monitor.policy import HealthPolicy, check, low_updates_matter, symmetric
from zoo.training.monitor.statistics import ActivationStats, KernelStats, Statistics, update_ratio


def _kernel(grad_norm: float, *, size: int = 100, units: int = 10, spread: float = 0.1,
            largest: float = 0.5) -> KernelStats:
    return KernelStats(grad_norm=grad_norm, unit_spread=spread, largest_weight=largest,
                       units=units, size=size)


def _found(stats: Statistics, **options) -> set[tuple[str, str]]:
    options = {"low_updates_matter": True, "probe_examples": 128, **options}
    return {(f.layer, f.kind) for f in check(stats, **options)}


def _healthy(**changes) -> Statistics:
    kernels = {"dense1": _kernel(1.0), "dense2": _kernel(1.0), "classifier": _kernel(1.0)}
    activations = {"act1": ActivationStats("relu", 0.5, 1.0, dead_fraction=0.1)}
    ratios = {name: 1e-3 for name in kernels}
    stats = {"kernels": kernels, "activations": activations, "update_ratios": ratios}
    for key, value in changes.items():
        stats[key] = {**stats[key], **value}
    return Statistics(**stats)


def test_healthy_statistics_raise_nothing():
    assert _found(_healthy()) == set()


def test_gradients_are_judged_per_weight_against_the_classifier():
    # Same norm, 10,000x the weights: 100x smaller per weight, right at the edge: no warning.
    assert _found(_healthy(kernels={"dense1": _kernel(1.0, size=1_000_000)})) == set()
    assert _found(_healthy(kernels={"dense1": _kernel(0.5, size=1_000_000)})) == {
        ("dense1", "vanishing")}
    assert _found(_healthy(kernels={"dense2": _kernel(101.0)})) == {("dense2", "exploding")}
    assert _found(_healthy(kernels={"dense2": _kernel(float("nan"))})) == {
        ("dense2", "exploding")}
    assert _found(_healthy(kernels={"dense1": _kernel(0.0)})) == {("dense1", "zero_gradient")}


def test_update_ratios_outside_the_band():
    assert _found(_healthy(update_ratios={"dense1": 0.02})) == {("dense1", "update_high")}
    low = _healthy(update_ratios={"dense2": 1e-5})
    assert _found(low) == {("dense2", "update_low")}
    assert _found(low, low_updates_matter=False) == set()
    # A kernel that left zero has no ratio: nothing to judge.
    assert update_ratio(change=1.0, scale=0.0, steps=10) is None
    assert update_ratio(change=0.0, scale=0.0, steps=10) == 0.0
    assert update_ratio(change=1.0, scale=2.0, steps=10) == pytest.approx(0.05)


def test_low_updates_matter_early_and_at_the_recipes_rate_only():
    def rate(value):
        return lambda: value

    early = {"every": 1, "epochs": 100, "base_rate": 1e-3}
    assert low_updates_matter(5, current_rate=rate(1e-3), **early)
    assert not low_updates_matter(11, current_rate=rate(1e-3), **early)  # past the first tenth
    assert not low_updates_matter(5, current_rate=rate(1e-4), **early)  # a schedule lowered it
    assert low_updates_matter(20, current_rate=rate(1e-3), every=20, epochs=100, base_rate=1e-3)

    def never():
        raise AssertionError("the rate is read only inside the window")

    assert not low_updates_matter(50, current_rate=never, **early)


def test_dead_and_saturated_units():
    dead = _healthy(activations={"act1": ActivationStats("relu", 0.0, 0.1, dead_fraction=0.6)})
    assert _found(dead) == {("act1", "dead")}
    saturated = _healthy(activations={"act2": ActivationStats("tanh", 0.0, 1.0,
                                                              saturated_fraction=0.7)})
    assert _found(saturated) == {("act2", "saturated")}


def test_symmetric_units_need_a_nil_spread_next_to_the_weights():
    kernels = {"zeros": _kernel(1.0, spread=0.0, largest=0.0),
               "constant": _kernel(1.0, spread=0.0, largest=0.3),
               "random": _kernel(1.0, spread=0.2, largest=0.3),
               "one_unit": _kernel(1.0, spread=0.0, largest=0.3, units=1)}
    assert {f.layer for f in symmetric(kernels)} == {"zeros", "constant"}


def test_the_thresholds_are_the_policys():
    strict = HealthPolicy(update_ratio_high=1e-3 / 2, dead_fraction=0.05)
    assert _found(_healthy(), policy=strict) == {
        ("dense1", "update_high"), ("dense2", "update_high"), ("classifier", "update_high"),
        ("act1", "dead")}
    with pytest.raises(AttributeError):
        strict.dead_fraction = 0.9  # frozen: one policy for a whole run


def test_statistics_become_the_documented_metrics():
    metrics = _healthy(activations={"act2": ActivationStats("sigmoid", 0.5, 0.2,
                                                            saturated_fraction=0.1)}).metrics()
    assert metrics["monitor/dense1/grad_norm"] == 1.0
    assert metrics["monitor/classifier/update_ratio"] == 1e-3
    assert metrics["monitor/act1/dead_fraction"] == 0.1
    assert metrics["monitor/act2/saturated_fraction"] == 0.1
    assert "monitor/act1/saturated_fraction" not in metrics


def test_the_policy_imports_neither_keras_nor_tensorflow():
    code = ("import sys, zoo.training.monitor.policy, zoo.training.monitor.statistics; "
            "sys.exit(bool({'keras', 'tensorflow'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
