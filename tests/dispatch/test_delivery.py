"""Delivery through real wire protocols: fake FCM and APNs servers on loopback, and a webhook."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from aiohttp import web

from magpie.providers.webhook import verify_signature
from tests.fakes.apns import FakeApns
from tests.fakes.fcm import FakeFcm
from tests.support import (
    AppClient,
    Env,
    FixedJitter,
    add_token,
    apply_campaign,
    dispatch,
    outcomes,
    provider_settings,
    run_dispatcher,
    trigger,
)


@pytest.fixture
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm() as fake:
        yield fake


@pytest.fixture
def apns() -> Iterator[FakeApns]:
    with FakeApns() as fake:
        yield fake


def _configure(
    client: AppClient,
    env: Env,
    *,
    fcm: FakeFcm | None = None,
    apns: FakeApns | None = None,
    webhook: dict[str, str] | None = None,
) -> None:
    providers = provider_settings(fcm=fcm, apns=apns)
    if webhook is not None:
        providers["webhook"] = webhook
    response = client.put(
        f"/admin/v1/environments/{env.name}", json={"settings": {"providers": providers}}, headers=env.admin
    )
    assert response.status_code == 200, response.text


def test_delivery_fcm_request_is_exactly_what_fcm_expects(client: AppClient, env: Env, fcm: FakeFcm) -> None:
    _configure(client, env, fcm=fcm)
    apply_campaign(
        client,
        env,
        provider="push",
        message={
            "title": "Hi {{ user.id }}",
            "body": "Order {{ api_properties.no }}",
            "clickAction": "DEEP_LINK",
            "link": "shop://o/{{ api_properties.no }}",
            "imageUrl": "https://img.example/p.png",
        },
    )
    add_token(client, env, device_id="d1", user_id="u1", token="fcm-token-1")
    dispatch_id = trigger(client, env, [{"userId": "u1", "apiProperties": {"no": 77}}])
    run_dispatcher(client)
    view = dispatch(client, env, dispatch_id)
    assert outcomes(view) == [("SENT", None)]
    (delivery,) = view["recipients"][0]["deliveries"]
    (request,) = fcm.requests
    assert request.method == "POST"
    assert request.path == f"/v1/projects/{fcm.project_id}/messages:send"
    assert request.headers["authorization"] == f"Bearer {fcm.issued_tokens[0]}"
    message = request.json["message"]
    assert message["token"] == "fcm-token-1"
    assert all(isinstance(v, str) for v in message["data"].values())
    hackle = json.loads(message["data"]["hackle"])
    assert hackle["title"] == "Hi u1" and hackle["body"] == "Order 77"
    assert hackle["clickAction"] == "DEEP_LINK" and hackle["link"] == "shop://o/77"
    assert hackle["pushMessageKey"] == 7 and hackle["pushMessageId"] == 7
    assert hackle["pushMessageExecutionId"] == view["executionId"]
    assert hackle["pushMessageDeliveryId"] == delivery["deliveryId"]
    assert hackle["thumbnailImageUrl"] == "https://img.example/p.png"
    assert hackle["largeImageUrl"] == "https://img.example/p.png"
    assert hackle["showForeground"] is True and hackle["debug"] is False
    assert message["android"]["priority"] == "HIGH"
    assert delivery["providerMessageId"].startswith(f"projects/{fcm.project_id}/messages/")
    assert delivery["provider"] == "fcm"
    (token_request,) = fcm.token_requests
    assert token_request.claims["iss"] == fcm.client_email


def test_delivery_apns_request_is_exactly_what_apns_expects(client: AppClient, env: Env, apns: FakeApns) -> None:
    _configure(client, env, apns=apns)
    apply_campaign(
        client,
        env,
        provider="push",
        purpose="MARKETING",
        consentRule="SUBSCRIBED_OR_UNKNOWN",
        message={"title": "Sale", "body": "Now", "imageUrl": "https://img.example/i.png"},
    )
    token = "ab" * 32
    add_token(client, env, device_id="iphone", user_id="u1", token=token, provider="APN")
    client.post(
        "/v1/push-subscriptions",
        json={"userId": "u1", "nightSubscriptionStatus": "SUBSCRIBED"},
        headers=env.headers,
    )
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    view = dispatch(client, env, dispatch_id)
    assert outcomes(view) == [("SENT", None)]
    (request,) = apns.requests
    assert request.path == f"/3/device/{token}"
    assert request.http_version == "2"
    assert request.headers["apns-topic"] == apns.topic
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "5"  # marketing is not urgent
    assert int(request.headers["apns-expiration"]) > 0
    assert request.headers["authorization"].startswith("bearer ")
    payload = request.json
    assert payload["aps"]["alert"]["title"].startswith("(광고)")
    assert payload["hackle"]["imageUrl"] == "https://img.example/i.png"
    assert payload["hackle"]["pushMessageDeliveryId"] == view["recipients"][0]["deliveries"][0]["deliveryId"]
    apns_id = view["recipients"][0]["deliveries"][0]["providerMessageId"]
    assert str(uuid.UUID(apns_id)).upper() == apns_id.upper()


def test_delivery_mixed_devices_use_fcm_and_apns(client: AppClient, env: Env, fcm: FakeFcm, apns: FakeApns) -> None:
    _configure(client, env, fcm=fcm, apns=apns)
    apply_campaign(client, env, provider="push")
    add_token(client, env, device_id="android", user_id="u1", token="fcm-a")
    add_token(client, env, device_id="iphone", user_id="u1", token="cd" * 32, provider="APN")
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    view = dispatch(client, env, dispatch_id)
    assert sorted(d["provider"] for d in view["recipients"][0]["deliveries"]) == ["apns", "fcm"]
    assert fcm.delivered == ["fcm-a"] and apns.delivered == ["cd" * 32]


def test_delivery_unregistered_token_is_retired_and_never_used_again(client: AppClient, env: Env, fcm: FakeFcm) -> None:
    _configure(client, env, fcm=fcm)
    apply_campaign(client, env, provider="push")
    fcm.unregistered.add("dead-token")
    add_token(client, env, device_id="d1", user_id="u1", token="dead-token")
    add_token(client, env, device_id="d2", user_id="u1", token="live-token")
    first = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    view = dispatch(client, env, first)
    assert outcomes(view) == [("SENT", None)]
    failed = [d for d in view["recipients"][0]["deliveries"] if d["status"] == "FAILED"]
    assert [(d["errorCode"], d["attempts"]) for d in failed] == [("UNREGISTERED", 1)]
    user = client.user(env, "u1")
    statuses = {t["status"] for d in user["devices"] for t in d["pushTokens"] if d["deviceId"] == "d1"}
    assert statuses == {"RETIRED"}
    # Re-registering a retired token does not bring it back.
    response = client.post(
        "/v1/push-tokens",
        json={"deviceId": "d1", "providerType": "FCM", "token": "dead-token"},
        headers=env.headers,
    )
    assert response.json()["tokenStatus"] == "RETIRED"
    fcm.clear()
    second = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    assert [r.json["message"]["token"] for r in fcm.requests] == ["live-token"]
    assert outcomes(dispatch(client, env, second)) == [("SENT", None)]


def test_delivery_only_dead_token_leaves_recipient_failed_then_no_token(
    client: AppClient, env: Env, fcm: FakeFcm
) -> None:
    _configure(client, env, fcm=fcm)
    apply_campaign(client, env, provider="push")
    fcm.unregistered.add("dead")
    add_token(client, env, device_id="d1", user_id="u1", token="dead")
    first = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    assert outcomes(dispatch(client, env, first)) == [("FAILED", "UNREGISTERED")]
    second = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    assert outcomes(dispatch(client, env, second)) == [("EXCLUDED", "NO_PUSH_TOKEN")]


def test_delivery_retries_429_honouring_retry_after(client: AppClient, env: Env, fcm: FakeFcm) -> None:
    _configure(client, env, fcm=fcm)
    apply_campaign(client, env, provider="push")
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    fcm.script("t1", status=429, retry_after=7, count=2)
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client, sleep=record_sleep)
    assert waits == [7, 7]
    statuses = [r.status for r in fcm.requests]
    assert statuses == [429, 429, 200]
    assert dispatch(client, env, dispatch_id)["recipients"][0]["deliveries"][0]["attempts"] == 3


def test_delivery_retries_503_with_exponential_backoff(client: AppClient, env: Env, fcm: FakeFcm) -> None:
    _configure(client, env, fcm=fcm)
    apply_campaign(client, env, provider="push")
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    fcm.script("t1", status=503, count=3)
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client, sleep=record_sleep, rng=FixedJitter(0.75), retry_base_seconds=1.0, retry_max_seconds=3.0)
    # 0.75 of 1 s, 2 s, then 4 s capped at 3 s.
    assert waits == [0.75, 1.5, 2.25]
    assert [r.status for r in fcm.requests] == [503, 503, 503, 200]
    assert dispatch(client, env, dispatch_id)["recipients"][0]["deliveries"][0]["attempts"] == 4


def test_delivery_permanent_error_is_not_retried(client: AppClient, env: Env, fcm: FakeFcm) -> None:
    _configure(client, env, fcm=fcm)
    apply_campaign(client, env, provider="push")
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    fcm.script("t1", status=403, error_code="THIRD_PARTY_AUTH_ERROR")
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    view = dispatch(client, env, dispatch_id)
    assert outcomes(view) == [("FAILED", "THIRD_PARTY_AUTH_ERROR")]
    assert view["recipients"][0]["deliveries"][0]["attempts"] == 1
    assert len(fcm.requests) == 1


def test_delivery_gives_up_after_max_attempts(client: AppClient, env: Env, fcm: FakeFcm) -> None:
    _configure(client, env, fcm=fcm)
    apply_campaign(client, env, provider="push")
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    fcm.script("t1", status=503, count=10)
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client, max_delivery_attempts=3)
    view = dispatch(client, env, dispatch_id)
    assert outcomes(view) == [("FAILED", "UNAVAILABLE")]
    assert view["recipients"][0]["deliveries"][0]["attempts"] == 3


def test_delivery_survives_503s_and_dropped_connections(client: AppClient, env: Env) -> None:
    with FakeFcm(fail_503_rate=0.30, drop_rate=0.05, seed=7) as fcm:
        _configure(client, env, fcm=fcm)
        apply_campaign(client, env, provider="push")
        for i in range(100):
            add_token(client, env, device_id=f"d{i}", user_id=f"u{i}", token=f"t{i}")
        ids = [trigger(client, env, [{"userId": f"u{i}"} for i in range(start, start + 50)]) for start in (0, 50)]
        run_dispatcher(client, max_delivery_attempts=20)
        for dispatch_id in ids:
            view = dispatch(client, env, dispatch_id)
            assert view["counts"] == {"SENT": 50, "FAILED": 0, "EXCLUDED": 0, "PENDING": 0}
            assert view["status"] == "COMPLETED"
        assert sorted(set(fcm.delivered)) == sorted(f"t{i}" for i in range(100))
        stats = fcm.stats
        assert stats["dropped"] > 0 and any(r.status == 503 for r in fcm.requests)


def test_delivery_webhook_is_signed(client: AppClient, env: Env) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=200, headers={"X-Message-Id": "hook-1"})

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = client.run(start())
    try:
        port = runner.addresses[0][1]
        _configure(client, env, webhook={"url": f"http://127.0.0.1:{port}/hook", "secret": "s3cret"})
        apply_campaign(client, env, provider="webhook")
        add_token(client, env, device_id="d1", user_id="u1", token="t1")
        dispatch_id = trigger(client, env, [{"userId": "u1"}])
        run_dispatcher(client)
    finally:
        client.run(runner.cleanup())
    (headers, body) = received[0]
    assert verify_signature(
        secret="s3cret",
        timestamp=headers["X-Magpie-Timestamp"],
        body=body,
        signature=headers["X-Magpie-Signature"],
    )
    assert not verify_signature(
        secret="wrong",
        timestamp=headers["X-Magpie-Timestamp"],
        body=body,
        signature=headers["X-Magpie-Signature"],
    )
    assert json.loads(body)["title"] == "Hello u1"
    view = dispatch(client, env, dispatch_id)
    assert view["recipients"][0]["deliveries"][0]["providerMessageId"] == "hook-1"
