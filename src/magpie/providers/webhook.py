"""Webhook provider: POSTs each push as signed JSON to a URL the operator runs, for custom delivery channels.

Requests carry ``X-Magpie-Timestamp`` and ``X-Magpie-Signature: sha256=<hex>``, an HMAC-SHA256 over
``"<timestamp>.<raw body>"``; receivers check it with ``verify_signature``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Final

import aiohttp

from magpie.providers.base import (
    ProviderRejected,
    ProviderUnavailable,
    PushMessage,
    SendResult,
    TokenInvalid,
)
from magpie.providers.fcm import parse_retry_after

__all__ = [
    "MESSAGE_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookProvider",
    "compute_signature",
    "verify_signature",
]

TIMESTAMP_HEADER: Final = "X-Magpie-Timestamp"
SIGNATURE_HEADER: Final = "X-Magpie-Signature"
MESSAGE_ID_HEADER: Final = "X-Message-Id"
_SCHEME: Final = "sha256="


def compute_signature(*, secret: str, timestamp: str | int, body: bytes) -> str:
    """The ``X-Magpie-Signature`` value for one request: ``sha256=<hex digest>``."""
    signed = f"{timestamp}.".encode() + body
    return _SCHEME + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_signature(*, secret: str, timestamp: str | int, body: bytes, signature: str) -> bool:
    """Whether ``signature`` (the header value) signs ``timestamp`` and the raw ``body`` with ``secret``.

    Receivers should also refuse timestamps far from their own clock, to stop replays.

    >>> sig = compute_signature(secret="s", timestamp=1, body=b"{}")
    >>> verify_signature(secret="s", timestamp="1", body=b"{}", signature=sig)
    True
    >>> verify_signature(secret="s", timestamp="2", body=b"{}", signature=sig)
    False
    """
    expected = compute_signature(secret=secret, timestamp=timestamp, body=body)
    # Compare bytes: compare_digest refuses non-ASCII str, and a forged header may contain anything.
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


class WebhookProvider:
    """Delivers ``PushMessage``s by POSTing signed JSON to one URL."""

    name = "webhook"

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
    ) -> None:
        if not secret:
            raise ValueError("a webhook needs a non-empty secret")
        self.url = url
        self._secret = secret
        self._session = session
        # A session we create is ours to close; an injected one belongs to the caller.
        self._owns_session = session is None
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, message: PushMessage) -> SendResult:
        body = json.dumps(
            {
                "deliveryId": message.delivery_id,
                "token": message.token,
                "providerType": message.provider_type,
                "title": message.title,
                "body": message.body,
                "imageUrl": message.image_url,
                "link": message.link,
                "hackle": message.hackle,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: compute_signature(secret=self._secret, timestamp=timestamp, body=body),
        }
        try:
            async with self._http().post(
                self.url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                # Drain the body so the connection can be reused.
                await response.read()
                status = response.status
                message_id = response.headers.get(MESSAGE_ID_HEADER)
                retry_after_header = response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise ProviderUnavailable("TIMEOUT", "webhook timed out") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderUnavailable("CONNECTION_ERROR", f"webhook: {exc!r}") from exc
        if 200 <= status < 300:
            return SendResult(provider_message_id=message_id or None)
        if status == 410:
            raise TokenInvalid("GONE", "webhook answered 410 Gone")
        if status in (408, 429) or status >= 500:
            retry_after = parse_retry_after(retry_after_header, now=self._clock())
            raise ProviderUnavailable(f"HTTP_{status}", retry_after=retry_after)
        raise ProviderRejected(f"HTTP_{status}")

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session
