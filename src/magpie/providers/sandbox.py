"""The sandbox providers: every push, Kakao and text message lands in magpie's own inbox instead of a phone.

It needs no credentials, so a new store shows the whole flow end to end; the inbox is
readable through the admin API (``/admin/v1/environments/{env}/inbox``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict

import msgspec

from magpie.providers.base import DeliveryReport, PhoneMessage, PhoneResult, PushMessage, SendResult

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


# (env_id, message, inbox payload, maybe_sent) -> inbox id; with maybe_sent an existing entry is reused.
RecordPhone = Callable[[int, PhoneMessage, dict[str, object], bool], Awaitable[int]]


class SandboxGateway:
    """Kakao and text messages of one environment land in the inbox, with their type and byte count.

    The recorder shows the number masked: the inbox is for looking at messages, not at phone numbers.
    """

    name = "sandbox"
    polled = False
    # The inbox is the phone: what the sandbox took is delivered.
    delivered_on_accept = True

    def __init__(self, *, env_id: int, record: RecordPhone) -> None:
        self._env_id = env_id
        self._record = record

    async def send_batch(
        self,
        messages: list[PhoneMessage],
        *,
        batch_key: str,  # noqa: ARG002 - the inbox is keyed by delivery
        maybe_sent: bool = False,
    ) -> list[PhoneResult]:
        results: list[PhoneResult] = []
        for m in messages:
            payload: dict[str, object] = {
                "channel": m.channel,
                "type": m.kind,
                "text": m.text,
                "title": m.title,
                "bytes": m.size_bytes,
                "templateCode": m.template_code,
                "buttons": list(m.buttons),
                "imageUrls": list(m.image_urls),
                "fallback": None if m.fallback is None else msgspec.structs.asdict(m.fallback),
                "marketing": m.marketing,
            }
            inbox_id = await self._record(self._env_id, m, payload, maybe_sent)
            results.append(PhoneResult(m.delivery_id, "SENT", provider_message_id=f"sandbox-{inbox_id}"))
        return results

    async def lookup(
        self,
        messages: list[PhoneMessage],  # noqa: ARG002 - see below
        *,
        batch_key: str,  # noqa: ARG002 - see below
    ) -> list[PhoneResult]:
        # The inbox is written in-process and never leaves a batch unanswered; a resend with
        # ``maybe_sent`` reuses the entries already there.
        return []

    async def poll(self, provider_message_ids: list[str]) -> list[DeliveryReport]:  # noqa: ARG002 - see polled
        return []

    async def aclose(self) -> None:
        return None
