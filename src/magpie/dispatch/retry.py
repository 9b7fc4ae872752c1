"""Retry policy for provider errors: exponential backoff with jitter, honouring Retry-After."""

from __future__ import annotations

import random


def backoff(
    *,
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    Full jitter keeps a burst of failures from retrying in lockstep; a provider's
    Retry-After is a floor, never shortened by jitter.

    >>> 0 <= backoff(attempt=3, base=0.5, cap=60, rng=random.Random(1)) <= 2.0
    True
    """
    rand = (rng or random).random()
    delay = min(cap, base * (2 ** (attempt - 1))) * rand
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return float(delay)
