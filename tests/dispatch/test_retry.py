"""Retry policy: exponential backoff from ``base``, capped, with full jitter and Retry-After as a floor."""

from __future__ import annotations

import random

import pytest

from magpie.dispatch.retry import backoff
from tests.support import FixedJitter


@pytest.mark.parametrize(
    ("attempt", "draw", "retry_after", "expected"),
    [
        pytest.param(1, 1.0, None, 0.5, id="first-retry-waits-base"),
        pytest.param(2, 1.0, None, 1.0, id="second-doubles"),
        pytest.param(4, 1.0, None, 4.0, id="fourth-is-base-times-eight"),
        pytest.param(8, 1.0, None, 10.0, id="capped"),
        pytest.param(3, 0.25, None, 0.5, id="jitter-scales-down"),
        pytest.param(3, 0.0, None, 0.0, id="jitter-may-reach-zero"),
        pytest.param(1, 0.5, 7.0, 7.0, id="retry-after-is-a-floor"),
        pytest.param(4, 1.0, 2.0, 4.0, id="longer-backoff-beats-retry-after"),
        pytest.param(1, 0.5, 3600.0, 10.0, id="retry-after-capped"),
    ],
)
def test_backoff_exponential_capped_jittered(
    attempt: int, draw: float, retry_after: float | None, expected: float
) -> None:
    delay = backoff(attempt=attempt, base=0.5, cap=10.0, retry_after=retry_after, rng=FixedJitter(draw))
    assert delay == pytest.approx(expected)


def test_backoff_jitter_spreads_retries() -> None:
    rng = random.Random(42)
    delays = [backoff(attempt=5, base=0.5, cap=60.0, rng=rng) for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    # Full jitter: the waits are spread over the whole range, not bunched at one value.
    assert min(delays) < 2.0 and max(delays) > 6.0
    assert len(set(delays)) == len(delays)
