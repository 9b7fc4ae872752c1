"""Experiment statistics against statsmodels, and the A/A check with a look every day."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportions_ztest

from magpie.domain import statistics

_counts = st.integers(min_value=1, max_value=50_000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))
)


@settings(max_examples=300, deadline=None)
@given(sample=_counts)
def test_statistics_wilson_matches_statsmodels(sample: tuple[int, int]) -> None:
    x, n = sample
    low, high = proportion_confint(x, n, alpha=0.05, method="wilson")
    ours = statistics.wilson(successes=x, trials=n)
    assert ours.low == pytest.approx(low, abs=1e-12)
    assert ours.high == pytest.approx(high, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(a=_counts, b=_counts)
def test_statistics_z_test_and_difference_interval_match_statsmodels(a: tuple[int, int], b: tuple[int, int]) -> None:
    (x1, n1), (x2, n2) = a, b
    ours = statistics.two_proportions(x1=x1, n1=n1, x2=x2, n2=n2)
    if 0 < x1 + x2 < n1 + n2:
        z, p = proportions_ztest([x1, x2], [n1, n2])
        assert ours.statistic == pytest.approx(float(z), rel=1e-9, abs=1e-9)
        assert ours.p_value == pytest.approx(float(p), rel=1e-7, abs=1e-12)
    else:
        assert ours.p_value == 1.0
    low, high = confint_proportions_2indep(x1, n1, x2, n2, method="wald", compare="diff", alpha=0.05)
    interval = statistics.difference_interval(x1=x1, n1=n1, x2=x2, n2=n2)
    assert interval.low == pytest.approx(float(low), abs=1e-12)
    assert interval.high == pytest.approx(float(high), abs=1e-12)


def test_statistics_on_generated_data_cover_the_truth() -> None:
    rng = np.random.default_rng(23)
    covered = 0
    runs = 400
    for _ in range(runs):
        x1, x2 = int(rng.binomial(4000, 0.12)), int(rng.binomial(4000, 0.10))
        interval = statistics.sequential(x1=x1, n1=4000, x2=x2, n2=4000).interval
        fixed = statistics.difference_interval(x1=x1, n1=4000, x2=x2, n2=4000)
        assert interval.low <= fixed.low and fixed.high <= interval.high  # always-valid is the wider one
        covered += interval.low <= 0.02 <= interval.high
    assert covered / runs >= 0.95


def test_statistics_sequential_finds_a_real_difference() -> None:
    result = statistics.compare(x1=1300, n1=10_000, x2=1000, n2=10_000)
    assert result.always_valid.significant
    assert result.verdict == "better"
    assert result.always_valid.interval.low > 0


def _aa_run(rng: np.random.Generator, *, days: int, per_day: int, rate: float) -> tuple[bool, bool]:
    """One A/A experiment looked at every day: (ever significant by the fixed test, by the sequential one)."""
    x = np.cumsum(rng.binomial(per_day, rate, size=(2, days)), axis=1)
    n = per_day * np.arange(1, days + 1)
    naive = sequential = False
    for day in range(days):
        x1, x2, m = int(x[0, day]), int(x[1, day]), int(n[day])
        naive |= statistics.two_proportions(x1=x1, n1=m, x2=x2, n2=m).p_value < statistics.LEVEL
        sequential |= statistics.sequential(x1=x1, n1=m, x2=x2, n2=m).significant
    return naive, sequential


def test_statistics_aa_with_daily_looks_stays_within_the_level() -> None:
    rng = np.random.default_rng(199)
    runs = 1000
    results = [_aa_run(rng, days=30, per_day=500, rate=0.05) for _ in range(runs)]
    naive_rate = sum(r[0] for r in results) / runs
    sequential_rate = sum(r[1] for r in results) / runs
    # What peeking does to the fixed-horizon test (the page would call identical variants different)...
    assert naive_rate > statistics.LEVEL
    # ...and the always-valid test, looked at every day for a month, stays within the level.
    assert sequential_rate <= statistics.LEVEL
