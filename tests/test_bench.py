"""The bench's report: ratios against their targets, and the paired rounds' median."""

import pytest

from zoo.workflows.bench import Ratio, _paired


def test_a_ceiling_is_met_at_or_below_it_and_a_floor_at_or_above_it():
    assert Ratio("overhead", 1.10, 1.10).met is True
    assert Ratio("overhead", 1.11, 1.10).met is False
    assert Ratio("throughput", 1.5, 1.5, at_least=True).met is True
    assert Ratio("throughput", 1.49, 1.5, at_least=True).met is False
    assert Ratio("reported", 0.6).met is None
    assert "(target <= 1.1: NOT met)" in Ratio("overhead", 1.11, 1.10).line()
    assert "(target >= 1.5: met)" in Ratio("throughput", 1.6, 1.5, at_least=True).line()
    assert Ratio("reported", 0.6).line().endswith("(reported)")


def test_an_overhead_is_the_median_of_its_ratios_within_each_round():
    # Round 2 is slow for both sides: paired, it cancels. The fastest of each (10.5 / 10.0),
    # the mean (1.117) and the worst round (1.2) would each say something else.
    times = {"side": [11.0, 18.0, 10.5], "base": [10.0, 15.0, 10.0]}
    ratio = _paired("side / base", times, "side", "base", 1.10)
    assert ratio.rounds == pytest.approx((1.1, 1.2, 1.05))
    assert ratio.value == pytest.approx(1.1)
    assert ratio.met is True
    assert ratio.line().endswith("rounds 1.100, 1.200, 1.050")


@pytest.mark.parametrize("rounds,at_least,verdict", [
    ((1.05, 1.20, 1.08), False, "unsettled"),  # rounds on both sides of 1.10: the host decides
    ((1.02, 1.08, 1.10), False, "met"),        # every round at or below the ceiling
    ((1.12, 1.20, 1.15), False, "NOT met"),
    ((1.4, 1.6, 1.55), True, "unsettled"),
    ((1.5, 1.6, 1.55), True, "met"),
])
def test_rounds_on_both_sides_of_the_target_are_unsettled(rounds, at_least, verdict):
    import statistics

    ratio = Ratio("r", statistics.median(rounds), 1.5 if at_least else 1.10, at_least=at_least,
                  rounds=rounds)
    assert ratio.verdict == verdict
    assert f": {verdict})" in ratio.line()
    assert Ratio("single", 1.2, 1.10).verdict == "NOT met"  # one measurement: no spread


def test_rounds_of_unequal_count_are_an_error():
    with pytest.raises(ValueError):
        _paired("side / base", {"side": [1.0, 2.0], "base": [1.0]}, "side", "base", 1.1)
