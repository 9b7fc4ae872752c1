"""What the provider tests share: the fixed start time, and helpers for errors and fault runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import pytest

from magpie.providers.base import ProviderError, ProviderUnavailable, PushMessage, SendResult

NOW = 1_700_000_000.0
T = TypeVar("T")


class Sender(Protocol):
    async def send(self, message: PushMessage) -> SendResult: ...

    async def aclose(self) -> None: ...


P = TypeVar("P", bound=Sender)


async def using(provider: P, body: Callable[[P], Awaitable[T]]) -> T:
    """Run ``body`` with ``provider``, then close it."""
    try:
        return await body(provider)
    finally:
        await provider.aclose()


def expect_error(call: Callable[[], object]) -> ProviderError:
    """The ``ProviderError`` that ``call`` raises (the test fails if it raises none)."""
    with pytest.raises(ProviderError) as caught:
        call()
    return caught.value


def assert_mapped(error: ProviderError, expected: type[ProviderError], code: str, retry_after: float | None) -> None:
    """One vendor answer translated at the edge: the exact error type, its code, its Retry-After."""
    assert type(error) is expected
    assert error.code == code
    assert error.retry_after == retry_after
    assert error.retryable is (expected is ProviderUnavailable)


async def fault_outcomes(provider: Sender, message: PushMessage, count: int = 20) -> list[str]:
    """Send ``message`` ``count`` times: ``"ok"`` or the ``ProviderUnavailable`` code of each."""
    outcomes = []
    for _ in range(count):
        try:
            await provider.send(message)
            outcomes.append("ok")
        except ProviderUnavailable as exc:
            outcomes.append(exc.code)
    return outcomes
