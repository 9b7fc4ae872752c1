"""What every push provider and phone gateway implements, and the typed errors they raise.

A push provider turns one rendered ``PushMessage`` into one request on its wire protocol; a phone
gateway (Kakao and text messages) sends a batch of ``PhoneMessage`` and answers per message.
Vendor errors are translated here, at the edge, so the dispatcher records typed outcomes::

    ProviderError
    ├── TokenInvalid          permanent; the token is retired (FCM UNREGISTERED, APNs 410)
    ├── ProviderRejected      permanent; the message or credentials are wrong
    └── ProviderUnavailable   retryable (429, 5xx, timeouts, resets); may carry retry_after
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

ProviderType = Literal["FCM", "APN"]
_encode = msgspec.json.Encoder().encode


def compact_json(value: Any) -> bytes:
    """JSON as a vendor is sent it: no spaces, UTF-8 kept.

    >>> compact_json({"n": [1, True, None], "t": "안녕"}).decode()
    '{"n":[1,true,null],"t":"안녕"}'
    """
    return _encode(value)


def json_member(body: bytes, name: str) -> object:
    """``name`` of the JSON object in ``body``; None when absent or when the body is no JSON object."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc.get(name) if isinstance(doc, dict) else None


@dataclass(frozen=True, slots=True)
class PushMessage:
    """One push to one device token, already rendered.

    ``hackle`` is the payload object Hackle's mobile SDKs look for; providers put it
    under the key ``hackle`` (a JSON string in FCM ``data``, an object beside ``aps``).
    """

    token: str
    provider_type: ProviderType
    title: str
    body: str
    hackle: dict[str, Any]
    image_url: str | None = None
    link: str | None = None
    collapse_id: str | None = None
    ttl_seconds: int = 86_400
    high_priority: bool = True
    delivery_id: str = ""
    extra_data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendResult:
    """A provider accepted the message."""

    provider_message_id: str | None


class ProviderError(Exception):
    """Base of every error a provider raises for one message."""

    retryable = False

    def __init__(self, code: str, message: str = "", *, retry_after: float | None = None) -> None:
        self.code = code
        self.message = message or code
        self.retry_after = retry_after
        super().__init__(f"{code}: {self.message}")


class TokenInvalid(ProviderError):
    """The device token will never work again; retire it."""


class ProviderRejected(ProviderError):
    """A permanent error other than a dead token; do not retry."""


class ProviderUnavailable(ProviderError):
    """A transient error; retry with backoff, honouring ``retry_after`` when set."""

    retryable = True


class Provider(Protocol):
    """One push channel. Implementations live one per module in this package."""

    name: str

    async def send(self, message: PushMessage) -> SendResult: ...

    async def aclose(self) -> None: ...


# -- Kakao and text messages ---------------------------------------------------------------------------


class Fallback(msgspec.Struct, frozen=True):
    """The text message an AlimTalk falls back to (대체발송) when Kakao cannot reach the phone."""

    kind: str  # SMS | LMS
    text: str
    title: str | None = None


class PhoneMessage(msgspec.Struct, frozen=True):
    """One Kakao or text message to one phone number, already rendered and sized.

    ``kind`` is ``alimtalk`` or ``brand`` on the kakao channel, ``SMS``, ``LMS`` or ``MMS`` on sms.
    An AlimTalk carries its template's code, its filled text (gateways compare it with the
    registered template) and the values of its placeholders.
    """

    delivery_id: str
    to: str  # E.164
    channel: str  # kakao | sms
    kind: str
    text: str
    title: str | None = None
    template_code: str | None = None
    template_parameters: dict[str, str] = msgspec.field(default_factory=dict)
    buttons: tuple[dict[str, str], ...] = ()
    image_urls: tuple[str, ...] = ()
    fallback: Fallback | None = None
    marketing: bool = False
    size_bytes: int = 0

    @property
    def national_number(self) -> str:
        """The number as Korean gateways take it: ``+821012345678`` -> ``01012345678``."""
        if self.to.startswith("+82"):
            return "0" + self.to[3:]
        return self.to.lstrip("+")


class PhoneResult(msgspec.Struct, frozen=True):
    """What a gateway said about one message of a batch.

    ``SENT``: accepted (the gateway took it and will try the phone); ``FAILED``: refused, with the
    gateway's code, or never taken (the gateway said it holds no such message); ``UNKNOWN``: the
    gateway may have taken it but could not say so. Whether it reached the phone (delivered) comes
    later, from a report.
    """

    delivery_id: str
    status: str  # SENT | FAILED | UNKNOWN
    provider_message_id: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A gateway's final word on one accepted message: delivered to the phone, or not (with its code)."""

    provider_message_id: str
    delivered: bool
    code: str
    delivery_id: str | None = None


class PhoneGateway(Protocol):
    """Sends batches of Kakao and text messages; one module per gateway in this package.

    ``send_batch`` is safe to call again with the same ``batch_key`` after a timeout, a 5xx or a
    crash: with ``maybe_sent`` the gateway is first asked what it already accepted of the batch and
    only the rest is sent, so no phone gets a message twice.

    ``lookup`` only asks: a ``SENT`` result for each message of the batch the gateway holds, none
    for those it does not hold; it raises ``ProviderError`` when the gateway cannot be asked.

    Final results (delivered to the phone or not) come as reports: a gateway that is ``polled``
    answers ``poll`` with them; the others call a webhook (or, ``delivered_on_accept``, hold the
    phone themselves: the sandbox inbox).
    """

    name: str
    polled: bool
    delivered_on_accept: bool

    async def send_batch(
        self, messages: list[PhoneMessage], *, batch_key: str, maybe_sent: bool = False
    ) -> list[PhoneResult]: ...

    async def lookup(self, messages: list[PhoneMessage], *, batch_key: str) -> list[PhoneResult]: ...

    async def poll(self, provider_message_ids: list[str]) -> list[DeliveryReport]: ...

    async def aclose(self) -> None: ...
