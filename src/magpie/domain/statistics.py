"""Statistics of an experiment: conversion rates with intervals, comparisons, and a verdict that stays
valid however often it is looked at. Pure functions, no I/O (docs/experiments.md#statistics).

Two kinds of answers are given side by side:

* **Fixed-horizon** figures, the textbook ones: a Wilson interval for each rate, the pooled
  two-proportion z-test, and a Wald interval for a difference of rates. They are exact for one look at
  a sample size fixed in advance, and are shown for reference.
* **Always-valid** figures (a mixture sequential probability ratio test, mSPRT, on the normal
  approximation of the difference; Johari, Pekelis and Walsh, "Always valid inference", 2017). Their
  p-value and interval hold simultaneously at every look, so a page refreshed every day while a
  campaign runs calls two identical variants different no more often than the level. A variant is
  named better or worse only on this test.

>>> round(wilson(successes=10, trials=100).low, 4)
0.0552
>>> sequential(x1=50, n1=1000, x2=50, n2=1000).significant
False
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

LEVEL: Final = 0.05  # the significance level every verdict uses
# The mixing distribution's standard deviation for a difference of conversion rates: the size of the
# effects the test is most sensitive to (two points). Any fixed value keeps the test valid.
MIXTURE_SD: Final = 0.02


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


def _z(level: float) -> float:
    return NormalDist().inv_cdf(1 - level / 2)


def rate(*, successes: int, trials: int) -> float:
    return successes / trials if trials else 0.0


def wilson(*, successes: int, trials: int, level: float = LEVEL) -> Interval:
    """The Wilson score interval of a proportion (``0..1`` when there are no trials)."""
    if trials <= 0:
        return Interval(0.0, 1.0)
    z = _z(level)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True, slots=True)
class ZTest:
    statistic: float
    p_value: float


def two_proportions(*, x1: int, n1: int, x2: int, n2: int) -> ZTest:
    """The pooled two-sided z-test of ``x1/n1 == x2/n2`` (fixed horizon)."""
    if n1 <= 0 or n2 <= 0:
        return ZTest(0.0, 1.0)
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return ZTest(0.0, 1.0)
    statistic = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return ZTest(statistic, 2 * NormalDist().cdf(-abs(statistic)))


def _unpooled_variance(*, x1: int, n1: int, x2: int, n2: int) -> float:
    p1, p2 = x1 / n1, x2 / n2
    return p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2


def difference_interval(*, x1: int, n1: int, x2: int, n2: int, level: float = LEVEL) -> Interval:
    """The Wald interval of ``x1/n1 - x2/n2`` (fixed horizon)."""
    if n1 <= 0 or n2 <= 0:
        return Interval(-1.0, 1.0)
    d = x1 / n1 - x2 / n2
    half = _z(level) * math.sqrt(_unpooled_variance(x1=x1, n1=n1, x2=x2, n2=n2))
    return Interval(d - half, d + half)


@dataclass(frozen=True, slots=True)
class Sequential:
    """The always-valid answer for ``x1/n1 - x2/n2``: a p-value, an interval and whether they are decisive."""

    difference: float
    p_value: float
    interval: Interval
    significant: bool


def sequential(
    *, x1: int, n1: int, x2: int, n2: int, level: float = LEVEL, mixture_sd: float = MIXTURE_SD
) -> Sequential:
    """The mSPRT of ``x1/n1 == x2/n2`` with a normal mixture of standard deviation ``mixture_sd``.

    The likelihood ratio of the observed difference ``d`` (estimated variance ``V``) against no difference,
    mixed over differences ~ N(0, tau^2), is ``sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))``;
    ``min(1, 1 / ratio)`` is a p-value valid at every sample size at once (Ville's inequality). The
    interval is the set of differences the same test would not reject.
    """
    if n1 <= 0 or n2 <= 0:
        return Sequential(0.0, 1.0, Interval(-1.0, 1.0), False)
    d = x1 / n1 - x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    null_variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    tau2 = mixture_sd * mixture_sd
    if null_variance <= 0:
        p_value = 1.0
    else:
        log_ratio = 0.5 * math.log(null_variance / (null_variance + tau2)) + tau2 * d * d / (
            2 * null_variance * (null_variance + tau2)
        )
        p_value = 1.0 if log_ratio <= 0 else math.exp(-log_ratio)
    variance = _unpooled_variance(x1=x1, n1=n1, x2=x2, n2=n2)
    if variance <= 0:
        interval = Interval(-1.0, 1.0) if null_variance <= 0 else Interval(d, d)
    else:
        half = math.sqrt(
            variance * (variance + tau2) / tau2 * (2 * math.log(1 / level) + math.log((variance + tau2) / variance))
        )
        interval = Interval(max(-1.0, d - half), min(1.0, d + half))
    return Sequential(d, p_value, interval, p_value < level)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One arm against a reference arm (the first variant, or the control group)."""

    difference: float  # this arm's rate minus the reference's
    interval: Interval  # fixed-horizon Wald interval of the difference
    z_test: ZTest  # fixed-horizon pooled z-test
    always_valid: Sequential

    @property
    def verdict(self) -> str:
        """``better``, ``worse`` or ``no difference yet``, from the always-valid test only."""
        if not self.always_valid.significant:
            return "no difference yet"
        return "better" if self.difference > 0 else "worse"


def compare(*, x1: int, n1: int, x2: int, n2: int, level: float = LEVEL) -> Comparison:
    """Arm 1 (``x1`` conversions of ``n1``) against reference arm 2."""
    return Comparison(
        difference=rate(successes=x1, trials=n1) - rate(successes=x2, trials=n2),
        interval=difference_interval(x1=x1, n1=n1, x2=x2, n2=n2, level=level),
        z_test=two_proportions(x1=x1, n1=n1, x2=x2, n2=n2),
        always_valid=sequential(x1=x1, n1=n1, x2=x2, n2=n2, level=level),
    )
