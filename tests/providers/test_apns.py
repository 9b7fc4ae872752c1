"""ApnsProvider against the fake APNs (TLS + HTTP/2): request shape, provider tokens, error mapping."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from magpie.providers.apns import ApnsProvider
from magpie.providers.base import (
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    PushMessage,
    SendResult,
    TokenInvalid,
)
from tests.fakes.apns import FakeApns
from tests.providers.common import NOW, assert_mapped, expect_error, fault_outcomes, using
from tests.support import FakeClock

T = TypeVar("T")
TOKEN = "a1" * 32
DELIVERY_ID = "5e0c1f0e-8a47-4c3e-9d0a-3f1f2b4c6d7e"


@pytest.fixture
def apns(clock: FakeClock) -> Iterator[FakeApns]:
    with FakeApns(clock=clock) as fake:
        yield fake


MESSAGE = PushMessage(
    token=TOKEN,
    provider_type="APN",
    title="Hello",
    body="World",
    hackle={"campaignId": 7, "imageUrl": "https://example.com/i.png"},
    delivery_id=DELIVERY_ID,
)


def message(**changes: Any) -> PushMessage:
    return replace(MESSAGE, **changes)


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def with_provider(
    apns: FakeApns,
    body: Callable[[ApnsProvider], Awaitable[T]],
    *,
    clock: Callable[[], float] | None = None,
    timeout: float = 10.0,
    **overrides: Any,
) -> T:
    async def main() -> T:
        async with httpx.AsyncClient(http2=True, verify=apns.client_verify, timeout=timeout) as client:
            options: dict[str, Any] = {
                "team_id": apns.team_id,
                "key_id": apns.key_id,
                "private_key": apns.private_key_pem,
                "topic": apns.topic,
                "client": client,
                "base_url": apns.base_url,
                "clock": clock or apns.clock,
            }
            options.update(overrides)
            provider = ApnsProvider(**options)
            return await using(provider, body)

    return asyncio.run(main())


def send(apns: FakeApns, msg: PushMessage | None = None, **kwargs: Any) -> SendResult:
    return with_provider(apns, lambda provider: provider.send(msg or message()), **kwargs)


def send_error(apns: FakeApns, msg: PushMessage | None = None, **kwargs: Any) -> ProviderError:
    return expect_error(lambda: send(apns, msg, **kwargs))


def bearer_claims(apns: FakeApns, authorization: str) -> tuple[dict[str, Any], dict[str, Any]]:
    scheme, _, token = authorization.partition(" ")
    assert scheme == "bearer"
    claims = jwt.decode(token, apns.public_key, algorithms=["ES256"], options={"verify_iat": False})
    return jwt.get_unverified_header(token), claims


# -- request shape ------------------------------------------------------------------------------------


def test_send_posts_alert_over_http2(apns: FakeApns, clock: FakeClock) -> None:
    msg = message(ttl_seconds=3600, collapse_id="campaign-7")

    result = send(apns, msg)

    [request] = apns.requests
    assert request.http_version == "2"
    assert request.method == "POST"
    assert request.path == f"/3/device/{TOKEN}"
    assert request.headers[":path"] == f"/3/device/{TOKEN}"
    assert request.headers[":scheme"] == "https"
    assert request.headers["apns-topic"] == apns.topic
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"
    assert request.headers["apns-expiration"] == str(int(NOW) + 3600)
    assert request.headers["apns-collapse-id"] == "campaign-7"
    assert request.headers["apns-id"] == DELIVERY_ID
    assert request.json == {
        "aps": {"alert": {"title": "Hello", "body": "World"}, "sound": "default", "mutable-content": 1},
        "hackle": msg.hackle,
    }
    header, claims = bearer_claims(apns, request.headers["authorization"])
    assert header == {"alg": "ES256", "kid": apns.key_id}
    assert claims == {"iss": apns.team_id, "iat": int(NOW)}
    assert result.provider_message_id == DELIVERY_ID
    assert apns.delivered == [TOKEN]


def test_send_low_priority_without_optional_headers(apns: FakeApns) -> None:
    result = send(apns, message(high_priority=False, delivery_id="not-a-uuid", ttl_seconds=0))

    headers = apns.requests[0].headers
    assert headers["apns-priority"] == "5"
    assert headers["apns-expiration"] == "0"
    assert "apns-collapse-id" not in headers
    assert "apns-id" not in headers
    assert result.provider_message_id is not None
    uuid.UUID(result.provider_message_id)  # APNs made one up


def test_send_collapse_id_truncated_to_64_bytes(apns: FakeApns) -> None:
    send(apns, message(collapse_id="é" * 40))  # 80 bytes of UTF-8

    raw = apns.requests[0].headers["apns-collapse-id"].encode("latin-1")
    assert raw.decode() == "é" * 32


def test_send_payload_too_large_rejected_locally(apns: FakeApns) -> None:
    error = send_error(apns, message(hackle={"body": "x" * 4096}))

    assert isinstance(error, ProviderRejected)
    assert error.code == "PAYLOAD_TOO_LARGE"
    assert apns.requests == []


def test_send_non_hex_token_invalid_without_request(apns: FakeApns) -> None:
    error = send_error(apns, message(token="../../evil"))

    assert isinstance(error, TokenInvalid)
    assert error.code == "BadDeviceToken"
    assert apns.requests == []


# -- provider token -----------------------------------------------------------------------------------


def test_provider_token_reused_until_ttl_then_regenerated(apns: FakeApns, clock: FakeClock) -> None:
    async def body(provider: ApnsProvider) -> None:
        await provider.send(message())
        await provider.send(message())
        clock.advance(1799)
        await provider.send(message())
        clock.advance(1)
        await provider.send(message())

    with_provider(apns, body)

    authorizations = [r.headers["authorization"] for r in apns.requests]
    assert len(set(authorizations[:3])) == 1
    assert authorizations[3] != authorizations[0]
    assert bearer_claims(apns, authorizations[3])[1]["iat"] == int(NOW) + 1800


def test_provider_token_shared_by_concurrent_sends(apns: FakeApns) -> None:
    async def body(provider: ApnsProvider) -> list[SendResult]:
        return await asyncio.gather(*(provider.send(message(token=f"{i:064x}")) for i in range(30)))

    with_provider(apns, body)

    assert len(apns.delivered) == 30
    assert len({r.headers["authorization"] for r in apns.requests}) == 1


def test_expired_provider_token_regenerated_and_retried(apns: FakeApns) -> None:
    apns.script(status=403, reason="ExpiredProviderToken")

    result = send(apns)

    assert result.provider_message_id == DELIVERY_ID
    first, second = apns.requests
    assert (first.status, second.status) == (403, 200)
    assert first.headers["authorization"] != second.headers["authorization"]


def test_provider_token_older_than_an_hour_at_apns_rejected_after_one_retry(apns: FakeApns, clock: FakeClock) -> None:
    # The provider's clock lags Apple's by more than an hour, so every token it makes looks expired.
    error = send_error(apns, clock=FakeClock(NOW - 3700))

    assert isinstance(error, ProviderRejected)
    assert error.code == "ExpiredProviderToken"
    assert [r.status for r in apns.requests] == [403, 403]


def test_provider_token_signed_by_wrong_key_rejected(apns: FakeApns) -> None:
    error = send_error(apns, private_key=pem(ec.generate_private_key(ec.SECP256R1())))

    assert isinstance(error, ProviderRejected)
    assert error.code == "InvalidProviderToken"
    assert len(apns.requests) == 2


@pytest.mark.parametrize("ttl", [pytest.param(60, id="too-short"), pytest.param(7200, id="too-long")])
def test_constructor_token_ttl_out_of_range_raises(apns: FakeApns, ttl: float) -> None:
    with pytest.raises(ValueError, match="token_ttl_seconds"):
        ApnsProvider(team_id="T", key_id="K", private_key=apns.private_key_pem, topic="t", token_ttl_seconds=ttl)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), id="rsa"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="p384"),
    ],
)
def test_constructor_wrong_key_type_raises(key: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match="P-256"):
        ApnsProvider(team_id="T", key_id="K", private_key=pem(key()), topic="t")


# -- error mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "expected", "code", "retry_after"),
    [
        pytest.param(lambda f: f.unregistered.add(TOKEN), TokenInvalid, "Unregistered", None, id="410"),
        pytest.param(
            lambda f: f.script(status=400, reason="BadDeviceToken"),
            TokenInvalid,
            "BadDeviceToken",
            None,
            id="bad-device-token",
        ),
        pytest.param(
            lambda f: f.wrong_topic_tokens.add(TOKEN),
            TokenInvalid,
            "DeviceTokenNotForTopic",
            None,
            id="not-for-topic",
        ),
        pytest.param(
            lambda f: f.script(status=429, retry_after=5),
            ProviderUnavailable,
            "TooManyRequests",
            5.0,
            id="429",
        ),
        pytest.param(lambda f: f.script(status=503), ProviderUnavailable, "ServiceUnavailable", None, id="503"),
        pytest.param(
            lambda f: f.script(status=500, retry_after=2),
            ProviderUnavailable,
            "InternalServerError",
            2.0,
            id="500",
        ),
        pytest.param(lambda f: f.script(status=502, body="<html>"), ProviderUnavailable, "HTTP_502", None, id="502"),
        pytest.param(
            lambda f: f.script(status=400, reason="BadCollapseId"),
            ProviderRejected,
            "BadCollapseId",
            None,
            id="400",
        ),
        pytest.param(
            lambda f: f.script(status=413),
            ProviderRejected,
            "PayloadTooLarge",
            None,
            id="413-payload-too-large",
        ),
        pytest.param(lambda f: f.script(status=403, reason="Forbidden"), ProviderRejected, "Forbidden", None, id="403"),
    ],
)
def test_send_error_mapped(
    apns: FakeApns,
    setup: Callable[[FakeApns], None],
    expected: type[ProviderError],
    code: str,
    retry_after: float | None,
) -> None:
    setup(apns)

    error = send_error(apns)

    assert_mapped(error, expected, code, retry_after)
    assert apns.delivered == []


def test_send_wrong_topic_rejected(apns: FakeApns) -> None:
    error = send_error(apns, topic="com.example.other")

    assert isinstance(error, ProviderRejected)
    assert error.code == "TopicDisallowed"
    assert apns.requests[0].headers["apns-topic"] == "com.example.other"


def test_send_dropped_connection_unavailable_then_recovers(apns: FakeApns) -> None:
    apns.script(status=200, drop=True)

    async def body(provider: ApnsProvider) -> SendResult:
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.send(message())
        assert caught.value.code == "CONNECTION_ERROR"
        assert isinstance(caught.value.__cause__, httpx.TransportError)
        return await provider.send(message())  # the client reconnects

    result = with_provider(apns, body)

    assert result.provider_message_id == DELIVERY_ID
    assert [r.status for r in apns.requests] == [None, 200]


def test_send_timeout_unavailable(apns: FakeApns) -> None:
    apns.delay = 2.0

    error = send_error(apns, timeout=0.3)

    assert isinstance(error, ProviderUnavailable)
    assert error.code == "TIMEOUT"
    assert isinstance(error.__cause__, httpx.TimeoutException)


def test_send_connection_refused_unavailable(apns: FakeApns) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]

    error = send_error(apns, base_url=f"https://127.0.0.1:{closed_port}")

    assert isinstance(error, ProviderUnavailable)
    assert error.code == "CONNECTION_ERROR"


def test_send_fault_rates_are_seeded(clock: FakeClock) -> None:
    def run() -> list[str]:
        with FakeApns(clock=clock, fail_503_rate=0.3, fail_429_rate=0.3, seed=11) as fake:
            return with_provider(fake, lambda provider: fault_outcomes(provider, message()))

    outcomes = run()

    assert set(outcomes) == {"ok", "ServiceUnavailable", "TooManyRequests"}
    assert outcomes == run()


def test_aclose_leaves_injected_client_open(apns: FakeApns) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(http2=True, verify=apns.client_verify) as client:
            provider = ApnsProvider(
                team_id=apns.team_id,
                key_id=apns.key_id,
                private_key=apns.private_key_pem,
                topic=apns.topic,
                client=client,
            )
            await provider.aclose()
            assert not client.is_closed

    asyncio.run(main())


# -- the fake itself -------------------------------------------------------------------------------


def _raw_request(
    apns: FakeApns,
    *,
    method: str = "POST",
    path: str = f"/3/device/{TOKEN}",
    headers: dict[str, str] | None = None,
    content: bytes = b'{"aps":{"alert":"hi"}}',
    http2: bool = True,
) -> httpx.Response:
    async def main() -> httpx.Response:
        async with httpx.AsyncClient(http2=http2, verify=apns.client_verify) as client:
            return await client.request(method, apns.base_url + path, headers=headers, content=content)

    return asyncio.run(main())


def _valid_headers(apns: FakeApns, **changes: str | None) -> dict[str, str]:
    headers: dict[str, str | None] = {
        "authorization": f"bearer {apns.provider_token()}",
        "apns-topic": apns.topic,
        "apns-push-type": "alert",
    }
    headers.update(changes)
    return {k: v for k, v in headers.items() if v is not None}


@pytest.mark.parametrize(
    ("request_kwargs", "status", "reason"),
    [
        pytest.param({}, 200, None, id="valid"),
        pytest.param({"method": "PUT"}, 405, "MethodNotAllowed", id="method"),
        pytest.param({"path": "/2/device/ab"}, 404, "BadPath", id="path"),
        pytest.param({"path": "/3/device/xyz"}, 400, "BadDeviceToken", id="token"),
        pytest.param({"headers": {"authorization": None}}, 403, "MissingProviderToken", id="no-auth"),
        pytest.param({"headers": {"authorization": "bearer abc"}}, 403, "InvalidProviderToken", id="bad-jwt"),
        pytest.param({"old_token": True}, 403, "ExpiredProviderToken", id="old-jwt"),
        pytest.param({"headers": {"apns-topic": None}}, 400, "MissingTopic", id="no-topic"),
        pytest.param({"headers": {"apns-push-type": "shout"}}, 400, "InvalidPushType", id="push-type"),
        pytest.param({"headers": {"apns-priority": "7"}}, 400, "BadPriority", id="priority"),
        pytest.param({"headers": {"apns-id": "nope"}}, 400, "BadMessageId", id="apns-id"),
        pytest.param({"content": b""}, 400, "PayloadEmpty", id="empty"),
        pytest.param({"content": b'{"hackle":{}}'}, 400, "BadPayload", id="no-aps"),
        pytest.param({"content": b'{"aps":{},"x":"' + b"y" * 4096 + b'"}'}, 413, "PayloadTooLarge", id="large"),
    ],
)
def test_fake_checks_what_apns_checks(
    apns: FakeApns, request_kwargs: dict[str, Any], status: int, reason: str | None
) -> None:
    kwargs = dict(request_kwargs)
    header_changes = kwargs.pop("headers", {})
    if kwargs.pop("old_token", False):
        header_changes["authorization"] = f"bearer {apns.provider_token(iat=apns.clock() - 3601)}"
    response = _raw_request(apns, headers=_valid_headers(apns, **header_changes), **kwargs)

    assert response.status_code == status
    assert response.http_version == "HTTP/2"
    assert response.headers["apns-id"]
    if reason is not None:
        assert response.json()["reason"] == reason


def test_fake_unregistered_answer_has_timestamp(apns: FakeApns) -> None:
    apns.unregistered.add(TOKEN)

    response = _raw_request(apns, headers=_valid_headers(apns))

    assert response.status_code == 410
    assert response.json() == {"reason": "Unregistered", "timestamp": int(NOW * 1000)}


def test_fake_refuses_http1(apns: FakeApns) -> None:
    with pytest.raises(httpx.TransportError):
        _raw_request(apns, headers=_valid_headers(apns), http2=False)

    assert [(r.http_version, r.status) for r in apns.requests] == [("1.1", None)]
