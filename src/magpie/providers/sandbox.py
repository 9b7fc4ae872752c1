"""The sandbox provider: every push lands in magpie's own inbox instead of a device.

It needs no credentials, so a new store shows the whole flow end to end; the inbox is
readable through the admin API (``/admin/v1/environments/{env}/inbox``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict

from magpie.providers.base import PushMessage, SendResult

Record = Callable[[PushMessage, dict[str, object]], Awaitable[int]]


class SandboxProvider:
    name = "sandbox"

    def __init__(self, *, record: Record) -> None:
        self._record = record

    async def send(self, message: PushMessage) -> SendResult:
        inbox_id = await self._record(message, asdict(message))
        return SendResult(provider_message_id=f"sandbox-{inbox_id}")

    async def aclose(self) -> None:
        return None
