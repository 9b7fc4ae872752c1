"""WebhookProvider against a loopback aiohttp receiver: signed body, signature checks, status mapping."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from magpie.providers.base import (
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    PushMessage,
    SendResult,
    TokenInvalid,
)
from magpie.providers.webhook import WebhookProvider, compute_signature, verify_signature

T = TypeVar("T")
SECRET = "s3cret"
NOW = 1_700_000_000.0


@dataclass
class Receiver:
    """A webhook endpoint: records what it got and answers ``status`` with ``headers``."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.drop and request.transport is not None:
            request.transport.abort()
            raise asyncio.CancelledError
        return web.Response(status=self.status, headers=self.headers)


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    try:
        await web.SockSite(runner, sock).start()
        yield receiver
    finally:
        await runner.cleanup()
        sock.close()


MESSAGE = PushMessage(
    token="device-1",
    provider_type="FCM",
    title="Hello",
    body="Wörld",
    hackle={"campaignId": 7},
    image_url="https://example.com/i.png",
    link="app://home",
    delivery_id="d-1",
)


def message(**changes: Any) -> PushMessage:
    return replace(MESSAGE, **changes)


def with_webhook(receiver: Receiver, body: Callable[[WebhookProvider], Awaitable[T]], *, timeout: float = 10.0) -> T:
    async def main() -> T:
        async with serving(receiver), aiohttp.ClientSession() as session:
            provider = WebhookProvider(
                url=receiver.url, secret=SECRET, session=session, clock=lambda: NOW, timeout=timeout
            )
            try:
                return await body(provider)
            finally:
                await provider.aclose()

    return asyncio.run(main())


def send(receiver: Receiver, msg: PushMessage | None = None, **kwargs: Any) -> SendResult:
    return with_webhook(receiver, lambda provider: provider.send(msg or message()), **kwargs)


def test_send_posts_signed_json() -> None:
    receiver = Receiver(headers={"X-Message-Id": "m-1"})

    result = send(receiver)

    [(headers, raw)] = receiver.received
    assert json.loads(raw) == {
        "deliveryId": "d-1",
        "token": "device-1",
        "providerType": "FCM",
        "title": "Hello",
        "body": "Wörld",
        "imageUrl": "https://example.com/i.png",
        "link": "app://home",
        "hackle": {"campaignId": 7},
    }
    assert headers["content-type"].startswith("application/json")
    assert headers["x-magpie-timestamp"] == str(int(NOW))
    # The documented scheme, restated: HMAC-SHA256 over "<timestamp>.<raw body>", hex, after "sha256=".
    signed = headers["x-magpie-timestamp"].encode() + b"." + raw
    assert headers["x-magpie-signature"] == "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert result.provider_message_id == "m-1"


def test_send_without_message_id_header() -> None:
    assert send(Receiver(status=204)).provider_message_id is None


@pytest.mark.parametrize(
    ("status", "headers", "expected", "code", "retry_after"),
    [
        pytest.param(410, {}, TokenInvalid, "GONE", None, id="410"),
        pytest.param(429, {"Retry-After": "4"}, ProviderUnavailable, "HTTP_429", 4.0, id="429"),
        pytest.param(500, {}, ProviderUnavailable, "HTTP_500", None, id="500"),
        pytest.param(
            503,
            {"Retry-After": "Tue, 14 Nov 2023 22:13:50 GMT"},
            ProviderUnavailable,
            "HTTP_503",
            30.0,
            id="503-http-date",
        ),
        pytest.param(400, {}, ProviderRejected, "HTTP_400", None, id="400"),
        pytest.param(404, {}, ProviderRejected, "HTTP_404", None, id="404"),
        pytest.param(302, {"Location": "http://127.0.0.1:1/"}, ProviderRejected, "HTTP_302", None, id="redirect"),
    ],
)
def test_send_status_mapped(
    status: int, headers: dict[str, str], expected: type[ProviderError], code: str, retry_after: float | None
) -> None:
    with pytest.raises(ProviderError) as caught:
        send(Receiver(status=status, headers=headers))

    assert type(caught.value) is expected
    assert caught.value.code == code
    assert caught.value.retry_after == retry_after


def test_send_timeout_unavailable() -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        send(Receiver(delay=2.0), timeout=0.3)

    assert caught.value.code == "TIMEOUT"


def test_send_dropped_connection_unavailable() -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        send(Receiver(drop=True))

    assert caught.value.code == "CONNECTION_ERROR"
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)


def test_send_connection_refused_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            provider = WebhookProvider(url=url, secret=SECRET, session=session)
            with pytest.raises(ProviderUnavailable) as caught:
                await provider.send(message())
            assert caught.value.code == "CONNECTION_ERROR"

    asyncio.run(main())


def test_constructor_empty_secret_raises() -> None:
    with pytest.raises(ValueError, match="secret"):
        WebhookProvider(url="http://127.0.0.1/hook", secret="")


def test_aclose_closes_own_session() -> None:
    receiver = Receiver()

    async def main() -> None:
        async with serving(receiver):
            provider = WebhookProvider(url=receiver.url, secret=SECRET)
            await provider.send(message())
            await provider.aclose()

    asyncio.run(main())  # an unclosed session would fail the test through -W error
    assert len(receiver.received) == 1


BODY = b'{"token":"device-1"}'
# printf '1700000000.{"token":"device-1"}' | openssl dgst -sha256 -hmac s3cret
GOOD = "sha256=19daa065bff4d8bc03397a6a6c024d17b64fabfa8c0557da084a7e2d6ce8bace"


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "expected"),
    [
        pytest.param(SECRET, "1700000000", BODY, GOOD, id="openssl-vector"),
        pytest.param(SECRET, 1700000000, BODY, GOOD, id="int-timestamp"),
        # printf '42.{"title":"봄 세일"}' | openssl dgst -sha256 -hmac 'key with spaces'
        pytest.param(
            "key with spaces",
            "42",
            '{"title":"봄 세일"}'.encode(),
            "sha256=c4f7c42abd8e65a2f8672dc63720f7c47f0c1044d8744bd36ecf81879db9e27c",
            id="utf8-body",
        ),
    ],
)
def test_compute_signature_matches_vector(secret: str, timestamp: str | int, body: bytes, expected: str) -> None:
    assert compute_signature(secret=secret, timestamp=timestamp, body=body) == expected


@pytest.mark.parametrize(
    ("timestamp", "body", "signature", "valid"),
    [
        pytest.param("1700000000", BODY, GOOD, True, id="good"),
        pytest.param(1700000000, BODY, GOOD, True, id="int-timestamp"),
        pytest.param("1700000000", BODY + b" ", GOOD, False, id="tampered-body"),
        pytest.param("1700000001", BODY, GOOD, False, id="tampered-timestamp"),
        pytest.param("1700000000", BODY, GOOD.removeprefix("sha256="), False, id="no-scheme"),
        pytest.param("1700000000", BODY, GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1"), False, id="one-digit"),
        pytest.param("1700000000", BODY, "sha256=ü", False, id="non-ascii"),
        pytest.param("1700000000", BODY, "", False, id="empty"),
    ],
)
def test_verify_signature_cases(timestamp: str | int, body: bytes, signature: str, valid: bool) -> None:
    assert verify_signature(secret=SECRET, timestamp=timestamp, body=body, signature=signature) is valid


def test_verify_signature_wrong_secret_fails() -> None:
    assert not verify_signature(secret="other", timestamp="1700000000", body=BODY, signature=GOOD)
