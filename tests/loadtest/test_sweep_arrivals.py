"""Open-loop arrivals: Poisson gaps are exponential at the asked rate, seeded; constant ones evenly spaced."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from loadtest.arrivals import arrival_times


def test_poisson_gaps_have_the_mean_spread_and_memorylessness_of_an_exponential():
    times = arrival_times(50.0, 200.0, "poisson", seed=7)  # ~10,000 arrivals
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == pytest.approx(10_000, rel=0.03)
    assert statistics.fmean(gaps) == pytest.approx(1 / 50, rel=0.03)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.05)  # CV 1
    for x in (0.01, 0.02, 0.05):  # P(gap > x) = exp(-rate x)
        assert sum(g > x for g in gaps) / len(gaps) == pytest.approx(math.exp(-50 * x), abs=0.015)


def test_poisson_counts_per_second_have_variance_equal_to_their_mean():
    times = arrival_times(20.0, 500.0, "poisson", seed=3)
    counts = [0] * 500
    for t in times:
        counts[int(t)] += 1
    assert statistics.fmean(counts) == pytest.approx(20, rel=0.05)
    assert statistics.variance(counts) / statistics.fmean(counts) == pytest.approx(1.0, abs=0.2)  # dispersion 1


def test_the_same_seed_gives_the_same_arrivals_and_another_seed_others():
    assert arrival_times(5, 10, seed=1) == arrival_times(5, 10, seed=1)
    assert arrival_times(5, 10, seed=1) != arrival_times(5, 10, seed=2)


def test_constant_arrivals_are_evenly_spaced_within_the_window():
    assert arrival_times(4, 1.0, "constant") == [0.0, 0.25, 0.5, 0.75]


@pytest.mark.parametrize(
    "args,message", [((0, 1), "--rates"), ((1, 0), "--duration-s"), ((1, 1, "bursty"), "--arrivals")]
)
def test_bad_arguments_name_the_flag(args, message):
    with pytest.raises(ValueError, match=message):
        arrival_times(*args)
