"""What every push provider implements, and the typed errors it raises.

A provider turns one rendered ``PushMessage`` into one request on its wire protocol.
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

ProviderType = Literal["FCM", "APN"]


def compact_json(value: Any) -> bytes:
    """JSON as a vendor is sent it: no spaces, UTF-8 kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


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
