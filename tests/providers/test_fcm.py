"""FcmProvider against the fake FCM server: request shape, OAuth2 token life cycle, error mapping."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from magpie.providers.base import (
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    PushMessage,
    SendResult,
    TokenInvalid,
)
from magpie.providers.fcm import FcmProvider, parse_retry_after
from tests.fakes.fcm import FakeFcm
from tests.fakes.server import http_date
from tests.providers.common import NOW, assert_mapped, expect_error, fault_outcomes, using
from tests.support import FakeClock

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fcm-device-token-1"

# The OAuth 2.0 scope Google documents for the FCM HTTP v1 API.
MESSAGING_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    # Generating a 2048-bit key per test would dominate the run time.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fcm(rsa_key: rsa.RSAPrivateKey, clock: FakeClock) -> Iterator[FakeFcm]:
    with FakeFcm(private_key=rsa_key, clock=clock) as fake:
        yield fake


MESSAGE = PushMessage(
    token=TOKEN,
    provider_type="FCM",
    title="Hello",
    body="World",
    hackle={"campaignId": 7, "title": "Hello", "body": "World"},
)


def message(**changes: Any) -> PushMessage:
    return replace(MESSAGE, **changes)


def with_provider(
    fcm: FakeFcm,
    body: Callable[[FcmProvider], Awaitable[T]],
    *,
    service_account: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> T:
    async def main() -> T:
        async with aiohttp.ClientSession() as session:
            provider = FcmProvider(
                project_id=fcm.project_id,
                service_account=service_account or fcm.service_account(),
                session=session,
                base_url=fcm.base_url,
                clock=fcm.clock,
                timeout=timeout,
            )
            return await using(provider, body)

    return asyncio.run(main())


def send(fcm: FakeFcm, msg: PushMessage | None = None, **kwargs: Any) -> SendResult:
    return with_provider(fcm, lambda provider: provider.send(msg or message()), **kwargs)


def send_error(fcm: FakeFcm, msg: PushMessage | None = None, **kwargs: Any) -> ProviderError:
    return expect_error(lambda: send(fcm, msg, **kwargs))


# -- request shape ------------------------------------------------------------------------------------


def test_send_posts_fcm_v1_data_message(fcm: FakeFcm) -> None:
    msg = message(ttl_seconds=3600, collapse_id="campaign-7", extra_data={"source": "magpie"})

    result = send(fcm, msg)

    [request] = fcm.requests
    assert request.method == "POST"
    assert request.path == "/v1/projects/magpie-test/messages:send"
    assert request.headers["authorization"] == f"Bearer {fcm.issued_tokens[0]}"
    assert request.headers["content-type"].startswith("application/json")
    assert request.json == {
        "message": {
            "token": TOKEN,
            "data": {"source": "magpie", "hackle": json.dumps(msg.hackle, separators=(",", ":"))},
            "android": {"priority": "HIGH", "ttl": "3600s", "collapse_key": "campaign-7"},
        }
    }
    assert json.loads(request.json["message"]["data"]["hackle"]) == msg.hackle
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("projects/magpie-test/messages/")
    assert fcm.delivered == [TOKEN]


def test_send_normal_priority_omits_collapse_key(fcm: FakeFcm) -> None:
    send(fcm, message(high_priority=False, ttl_seconds=0))

    assert fcm.requests[0].json["message"]["android"] == {"priority": "NORMAL", "ttl": "0s"}


def test_send_extra_data_cannot_shadow_hackle(fcm: FakeFcm) -> None:
    send(fcm, message(extra_data={"hackle": "not json"}))

    data = fcm.requests[0].json["message"]["data"]
    assert json.loads(data["hackle"]) == message().hackle


def test_send_ttl_clamped_to_fcm_maximum(fcm: FakeFcm) -> None:
    send(fcm, message(ttl_seconds=10**9))

    assert fcm.requests[0].json["message"]["android"]["ttl"] == "2419200s"


# -- OAuth2 -------------------------------------------------------------------------------------------


def test_token_request_is_signed_service_account_grant(
    fcm: FakeFcm, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    send(fcm)

    [token_request] = fcm.token_requests
    assert token_request.status == 200
    assert token_request.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assertion = token_request.form["assertion"]
    assert jwt.get_unverified_header(assertion) == {"alg": "RS256", "kid": "fake-key-1", "typ": "JWT"}
    claims = jwt.decode(
        assertion,
        rsa_key.public_key(),
        algorithms=["RS256"],
        audience=fcm.token_uri,
        options={"verify_exp": False},
    )
    assert claims == {
        "iss": fcm.client_email,
        "scope": MESSAGING_SCOPE,
        "aud": fcm.token_uri,
        "iat": int(clock()),
        "exp": int(clock()) + 3600,
    }


def test_token_cached_across_sequential_sends(fcm: FakeFcm) -> None:
    async def body(provider: FcmProvider) -> None:
        for _ in range(20):
            await provider.send(message())

    with_provider(fcm, body)

    assert len(fcm.token_requests) == 1
    assert len(fcm.delivered) == 20
    assert {r.headers["authorization"] for r in fcm.requests} == {f"Bearer {fcm.issued_tokens[0]}"}


def test_token_request_shared_by_concurrent_sends(fcm: FakeFcm) -> None:
    async def body(provider: FcmProvider) -> list[SendResult]:
        return await asyncio.gather(*(provider.send(message(token=f"t{i}")) for i in range(50)))

    results = with_provider(fcm, body)

    assert len(fcm.token_requests) == 1
    assert len(results) == 50
    assert sorted(fcm.delivered) == sorted(f"t{i}" for i in range(50))


def test_token_refreshed_a_minute_before_expiry(fcm: FakeFcm, clock: FakeClock) -> None:
    fcm.expires_in = 600

    async def body(provider: FcmProvider) -> None:
        await provider.send(message())
        clock.advance(539)
        await provider.send(message())
        assert len(fcm.token_requests) == 1
        clock.advance(1)
        await provider.send(message())

    with_provider(fcm, body)

    assert len(fcm.token_requests) == 2
    first, second = fcm.issued_tokens
    assert [r.headers["authorization"] for r in fcm.requests] == [
        f"Bearer {first}",
        f"Bearer {first}",
        f"Bearer {second}",
    ]
    assert fcm.token_requests[1].claims["iat"] == int(NOW) + 540


def test_send_401_refreshes_token_and_retries_once(fcm: FakeFcm) -> None:
    async def body(provider: FcmProvider) -> SendResult:
        await provider.send(message())
        fcm.revoke_access_tokens()  # as if Google revoked or expired the token early
        return await provider.send(message())

    result = with_provider(fcm, body)

    assert result.provider_message_id is not None
    assert [r.status for r in fcm.requests] == [200, 401, 200]
    assert len(fcm.token_requests) == 2
    assert fcm.requests[1].headers["authorization"] != fcm.requests[2].headers["authorization"]


def test_send_persistent_401_rejected_after_one_retry(fcm: FakeFcm) -> None:
    fcm.script(status=401, count=5)

    error = send_error(fcm)

    assert isinstance(error, ProviderRejected)
    assert error.code == "UNAUTHENTICATED"
    assert [r.status for r in fcm.requests] == [401, 401]
    assert len(fcm.token_requests) == 2


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        pytest.param(503, None, ProviderUnavailable, "AUTH_UNAVAILABLE", id="5xx"),
        pytest.param(429, None, ProviderUnavailable, "AUTH_UNAVAILABLE", id="429"),
        pytest.param(400, {"error": "invalid_grant"}, ProviderRejected, "AUTH_ERROR", id="4xx"),
        pytest.param(200, {"token_type": "Bearer"}, ProviderUnavailable, "AUTH_UNAVAILABLE", id="no-token"),
        pytest.param(200, "<html>", ProviderUnavailable, "AUTH_UNAVAILABLE", id="not-json"),
    ],
)
def test_token_endpoint_failure_mapped(
    fcm: FakeFcm, status: int, body: Any, expected: type[ProviderError], code: str
) -> None:
    fcm.script_token_endpoint(status=status, body=body)

    error = send_error(fcm)

    assert type(error) is expected
    assert error.code == code
    assert fcm.requests == []


def test_token_endpoint_refuses_foreign_key(fcm: FakeFcm) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = fcm.service_account()
    account["private_key"] = other_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    error = send_error(fcm, service_account=account)

    assert isinstance(error, ProviderRejected)
    assert error.code == "AUTH_ERROR"
    assert [t.status for t in fcm.token_requests] == [400]


def test_token_endpoint_dropped_connection_unavailable(fcm: FakeFcm) -> None:
    fcm.script_token_endpoint(status=200, drop=True)

    error = send_error(fcm)

    assert isinstance(error, ProviderUnavailable)
    assert error.code == "CONNECTION_ERROR"


# -- error mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "expected", "code", "retry_after"),
    [
        pytest.param(lambda f: f.unregistered.add(TOKEN), TokenInvalid, "UNREGISTERED", None, id="unregistered"),
        pytest.param(
            lambda f: f.script(TOKEN, status=403, error_code="SENDER_ID_MISMATCH"),
            TokenInvalid,
            "SENDER_ID_MISMATCH",
            None,
            id="sender-id-mismatch",
        ),
        pytest.param(lambda f: f.invalid_tokens.add(TOKEN), TokenInvalid, "INVALID_ARGUMENT", None, id="invalid-token"),
        pytest.param(
            lambda f: f.script(status=400, message="Invalid value at 'message.data[0].value'"),
            ProviderRejected,
            "INVALID_ARGUMENT",
            None,
            id="invalid-argument",
        ),
        pytest.param(
            lambda f: f.script(status=429, retry_after=2),
            ProviderUnavailable,
            "QUOTA_EXCEEDED",
            2.0,
            id="429",
        ),
        pytest.param(
            lambda f: f.script(status=429, error_code=""),
            ProviderUnavailable,
            "QUOTA_EXCEEDED",
            None,
            id="429-without-details",
        ),
        pytest.param(lambda f: f.script(status=503, retry_after=7), ProviderUnavailable, "UNAVAILABLE", 7.0, id="503"),
        pytest.param(lambda f: f.script(status=500), ProviderUnavailable, "INTERNAL", None, id="500"),
        pytest.param(
            lambda f: f.script(status=502, body="<html>Bad Gateway</html>", retry_after=1),
            ProviderUnavailable,
            "HTTP_502",
            1.0,
            id="5xx-not-json",
        ),
        pytest.param(
            lambda f: f.script(status=401, error_code="THIRD_PARTY_AUTH_ERROR", count=2),
            ProviderRejected,
            "THIRD_PARTY_AUTH_ERROR",
            None,
            id="third-party-auth",
        ),
        pytest.param(
            lambda f: f.script(status=403, error_code=""),
            ProviderRejected,
            "PERMISSION_DENIED",
            None,
            id="403",
        ),
        pytest.param(
            lambda f: f.script(status=404, error_code="", message="Requested entity was not found."),
            ProviderRejected,
            "NOT_FOUND",
            None,
            id="404-without-details",
        ),
        pytest.param(
            lambda f: f.script(status=418, body=b"teapot"),
            ProviderRejected,
            "HTTP_418",
            None,
            id="4xx-not-json",
        ),
    ],
)
def test_send_error_mapped(
    fcm: FakeFcm,
    setup: Callable[[FakeFcm], None],
    expected: type[ProviderError],
    code: str,
    retry_after: float | None,
) -> None:
    setup(fcm)

    error = send_error(fcm)

    assert_mapped(error, expected, code, retry_after)
    assert fcm.delivered == []


def test_send_retry_after_http_date_relative_to_clock(fcm: FakeFcm, clock: FakeClock) -> None:
    fcm.script(status=503, retry_after=http_date(clock() + 30))

    error = send_error(fcm)

    assert isinstance(error, ProviderUnavailable)
    assert error.retry_after == 30.0


def test_send_wrong_project_rejected(fcm: FakeFcm) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            provider = FcmProvider(
                project_id="someone-else",
                service_account=fcm.service_account(),
                session=session,
                base_url=fcm.base_url,
                clock=fcm.clock,
            )
            with pytest.raises(ProviderRejected) as caught:
                await provider.send(message())
            await provider.aclose()
            assert caught.value.code == "THIRD_PARTY_AUTH_ERROR"

    asyncio.run(main())
    assert fcm.requests[0].path == "/v1/projects/someone-else/messages:send"


def test_send_oversized_data_rejected(fcm: FakeFcm) -> None:
    error = send_error(fcm, message(hackle={"body": "x" * 5000}))

    assert isinstance(error, ProviderRejected)
    assert error.code == "INVALID_ARGUMENT"
    assert "too big" in error.message


def test_send_dropped_connection_unavailable(fcm: FakeFcm) -> None:
    fcm.drop_rate = 1.0

    error = send_error(fcm)

    assert isinstance(error, ProviderUnavailable)
    assert error.code == "CONNECTION_ERROR"
    assert isinstance(error.__cause__, aiohttp.ClientError)
    assert [r.status for r in fcm.requests] == [None]


def test_send_timeout_unavailable(fcm: FakeFcm) -> None:
    fcm.delay = 2.0

    error = send_error(fcm, timeout=0.3)

    assert isinstance(error, ProviderUnavailable)
    assert error.code == "TIMEOUT"
    assert isinstance(error.__cause__, TimeoutError)


def test_send_connection_refused_unavailable(fcm: FakeFcm) -> None:
    account = fcm.service_account()
    port = fcm.port
    fcm.stop()

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            provider = FcmProvider(
                project_id=fcm.project_id,
                service_account=account,
                session=session,
                base_url=f"http://127.0.0.1:{port}",
            )
            with pytest.raises(ProviderUnavailable) as caught:
                await provider.send(message())
            assert caught.value.code == "CONNECTION_ERROR"

    asyncio.run(main())


def test_send_fault_rate_is_seeded(rsa_key: rsa.RSAPrivateKey, clock: FakeClock) -> None:
    def run(seed: int) -> list[str]:
        with FakeFcm(private_key=rsa_key, clock=clock, fail_503_rate=0.5, seed=seed) as fake:
            return with_provider(fake, lambda provider: fault_outcomes(provider, message()))

    outcomes = run(seed=3)

    assert set(outcomes) == {"ok", "UNAVAILABLE"}
    assert outcomes == run(seed=3)


# -- construction and life cycle -------------------------------------------------------------------


def test_constructor_missing_service_account_field_raises() -> None:
    with pytest.raises(ValueError, match="token_uri"):
        FcmProvider(
            project_id="p",
            service_account={"client_email": "a", "private_key": "k", "private_key_id": "i"},
        )


def test_constructor_non_rsa_key_raises() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    account = {"client_email": "a", "private_key": pem, "private_key_id": "i", "token_uri": "http://x/token"}
    with pytest.raises(ValueError, match="RSA"):
        FcmProvider(project_id="p", service_account=account)


def test_aclose_leaves_injected_session_open(fcm: FakeFcm) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            provider = FcmProvider(project_id=fcm.project_id, service_account=fcm.service_account(), session=session)
            await provider.aclose()
            assert not session.closed

    asyncio.run(main())


def test_aclose_closes_own_session(fcm: FakeFcm) -> None:
    async def main() -> None:
        provider = FcmProvider(
            project_id=fcm.project_id,
            service_account=fcm.service_account(),
            base_url=fcm.base_url,
            clock=fcm.clock,
        )
        await provider.send(message())
        await provider.aclose()

    asyncio.run(main())  # an unclosed session would fail the test through -W error
    assert fcm.delivered == [TOKEN]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("2", 2.0, id="seconds"),
        pytest.param(" 1.5 ", 1.5, id="fractional"),
        pytest.param("-3", 0.0, id="negative"),
        pytest.param("Tue, 14 Nov 2023 22:13:40 GMT", 30.0, id="http-date"),
        pytest.param("Tue, 14 Nov 2023 22:12:10 GMT", 0.0, id="past-date"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("nan", None, id="nan"),
    ],
)
def test_parse_retry_after_forms(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW - 10) == expected


# -- the fake itself -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        pytest.param({"message": {"data": {"hackle": "{}"}}}, "Recipient", id="no-token"),
        pytest.param({"message": {"token": "t", "data": {"hackle": "{}", "n": 1}}}, "TYPE_STRING", id="non-string"),
        pytest.param({"message": {"token": "t", "data": {}}}, "hackle", id="no-hackle"),
        pytest.param({"message": {"token": "t", "data": {"hackle": "[1]"}}}, "JSON object", id="hackle-array"),
        pytest.param({"message": {"token": "t", "data": {"hackle": "{}"}, "x": 1}}, "Unknown name", id="unknown"),
        pytest.param(
            {"message": {"token": "t", "data": {"hackle": "{}"}, "android": {"ttl": "60"}}},
            "ttl",
            id="bad-ttl",
        ),
    ],
)
def test_fake_rejects_malformed_send(fcm: FakeFcm, payload: dict[str, Any], problem: str) -> None:
    send(fcm)  # obtains a valid access token
    token = fcm.issued_tokens[0]

    async def main() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{fcm.base_url}/v1/projects/{fcm.project_id}/messages:send",
                json=payload,
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            return response.status, await response.json()

    status, body = asyncio.run(main())

    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert problem in body["error"]["message"]


@pytest.mark.parametrize(
    ("grant_type", "claim_changes", "error"),
    [
        pytest.param("client_credentials", {}, "unsupported_grant_type", id="grant-type"),
        pytest.param(None, {"exp": NOW - 1}, "invalid_grant", id="expired"),
        pytest.param(None, {"exp": NOW + 7200}, "invalid_grant", id="too-long-lived"),
        pytest.param(None, {"aud": "https://oauth2.googleapis.com/token"}, "invalid_grant", id="audience"),
        pytest.param(None, {"scope": "https://www.googleapis.com/auth/cloud-platform"}, "invalid_scope", id="scope"),
    ],
)
def test_fake_token_endpoint_refuses_bad_grants(
    fcm: FakeFcm,
    rsa_key: rsa.RSAPrivateKey,
    grant_type: str | None,
    claim_changes: dict[str, Any],
    error: str,
) -> None:
    claims = {
        "iss": fcm.client_email,
        "scope": MESSAGING_SCOPE,
        "aud": fcm.token_uri,
        "iat": NOW,
        "exp": NOW + 3600,
    }
    claims.update(claim_changes)
    assertion = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": fcm.private_key_id})
    form = {"grant_type": grant_type or "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}

    async def main() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.post(fcm.token_uri, data=form) as response:
            return response.status, await response.json()

    status, body = asyncio.run(main())

    assert status == 400
    assert body["error"] == error
    assert fcm.issued_tokens == []


def test_fake_cli_serves_benchmark_process(tmp_path: Path) -> None:
    account_path = tmp_path / "sa.json"
    command = [sys.executable, "-m", "tests.fakes.fcm", "--port", "0", "--quiet"]
    command += ["--service-account-out", str(account_path)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY "), line
        port = int(line.split()[1])
        account = json.loads(account_path.read_text())
        assert account["token_uri"] == f"http://127.0.0.1:{port}/token"

        async def main() -> dict[str, int]:
            async with aiohttp.ClientSession() as session:
                provider = FcmProvider(
                    project_id="magpie-test",
                    service_account=account,
                    session=session,
                    base_url=f"http://127.0.0.1:{port}",
                )
                await asyncio.gather(*(provider.send(message(token=f"t{i}")) for i in range(10)))
                async with session.get(f"http://127.0.0.1:{port}/__fake/stats") as response:
                    stats: dict[str, int] = await response.json()
                    return stats

        stats = asyncio.run(main())
        assert stats["delivered"] == 10
        assert stats["token_requests"] == 1
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0
