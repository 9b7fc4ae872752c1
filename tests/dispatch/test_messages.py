"""Kakao and SMS end to end: Hackle's Kakao trigger, the sandbox inbox, NHN Cloud and Solapi fakes,
exclusion reasons, fallback, reports, 080 opt-outs and the daily limit on paid messages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.fakes.gateway import JPEG
from tests.fakes.nhn import FakeNhn
from tests.fakes.solapi import FakeSolapi
from tests.support import AppClient, Env, FakeClock, close_dispatcher, drain, magpie_cli, make_dispatcher

TEMPLATE = "#{고객명}님, 주문 #{주문번호}이 출발했어요"
PHONE = "010-1111-2222"
SEOUL = ZoneInfo("Asia/Seoul")
# Work becomes available when accepted (real time): the injected clocks run a day ahead of it.
TOMORROW = datetime.now(SEOUL).date() + timedelta(days=1)
NOON = datetime.combine(TOMORROW, dtime(12, 0), SEOUL).timestamp()
NIGHT = datetime.combine(TOMORROW, dtime(22, 0), SEOUL).timestamp()


@pytest.fixture
def nhn() -> Iterator[FakeNhn]:
    with FakeNhn(templates={"ORDER_SHIPPED": TEMPLATE}) as fake:
        yield fake


@pytest.fixture
def solapi() -> Iterator[FakeSolapi]:
    with FakeSolapi(templates={"ORDER_SHIPPED": TEMPLATE}) as fake:
        yield fake


def alimtalk(**fields: Any) -> dict[str, Any]:
    campaign: dict[str, Any] = {
        "key": 10,
        "name": "Order shipped",
        "status": "ACTIVE",
        "channel": "kakao",
        "type": "alimtalk",
        "message": {
            "templateCode": "ORDER_SHIPPED",
            "text": TEMPLATE,
            "variables": {
                "고객명": "{{ user_properties.name | default: '고객' }}",
                "주문번호": "{{ api_properties.orderNo }}",
            },
            "buttons": [{"type": "WL", "name": "배송 조회", "linkMo": "https://shop.example/o/#{주문번호}"}],
        },
    }
    campaign.update(fields)
    return campaign


def brand(**fields: Any) -> dict[str, Any]:
    campaign: dict[str, Any] = {
        "key": 11,
        "name": "Winter sale",
        "status": "ACTIVE",
        "channel": "kakao",
        "type": "brand",
        "message": {"text": "{{ user_properties.name | default: '고객' }}님, 겨울 세일이 시작됐어요"},
    }
    campaign.update(fields)
    return campaign


def sms(**fields: Any) -> dict[str, Any]:
    campaign: dict[str, Any] = {
        "key": 12,
        "name": "Spring sale",
        "status": "ACTIVE",
        "channel": "sms",
        "purpose": "MARKETING",
        "message": {"text": "{{ user_properties.name | default: '고객' }}님 봄 세일 20%"},
    }
    campaign.update(fields)
    return campaign


def setup(client: AppClient, env: Env, settings: dict[str, Any] | None = None, *campaigns: dict[str, Any]) -> None:
    response = client.put(
        f"/admin/v1/environments/{env.name}",
        json={"settings": {"smsOptOutNumber": "080-123-4567", "smsSender": "02-1234-5678", **(settings or {})}},
        headers=env.admin,
    )
    assert response.status_code == 200, response.text
    for campaign in campaigns:
        response = client.post(f"/admin/v1/environments/{env.name}/campaigns", json=campaign, headers=env.admin)
        assert response.status_code == 200, response.text


def user(
    client: AppClient, env: Env, user_id: str, *, phone: str | None = PHONE, name: str = "홍길동", **consent: str
) -> None:
    responses = [
        client.post(
            "/v1/properties", json={"userId": user_id, "operations": {"$set": {"name": name}}}, headers=env.headers
        )
    ]
    if phone is not None:
        responses.append(
            client.post(
                "/v1/properties/phone-numbers", json={"userId": user_id, "phoneNumber": phone}, headers=env.headers
            )
        )
    for channel in ("kakao", "sms"):
        fields = {k.split("_", 1)[1]: v for k, v in consent.items() if k.startswith(channel + "_")}
        if fields:
            body = {"userId": user_id, **{f"{p}SubscriptionStatus": s for p, s in fields.items()}}
            responses.append(client.post(f"/v1/{channel}-subscriptions", json=body, headers=env.headers))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]


def send(client: AppClient, env: Env, channel: str, key: int, users: list[dict[str, Any]]) -> str:
    response = client.post(
        f"/v1/{channel}-message/trigger/send", json={"campaignKey": key, "users": users}, headers=env.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "success"
    return str(body["dispatchId"])


def run(client: AppClient, *, at: float = NOON, **settings: Any) -> Any:
    dispatcher = make_dispatcher(client, clock=FakeClock(at), **settings)
    try:
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    return dispatcher


def view(client: AppClient, env: Env, channel: str, dispatch_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/{channel}-message/dispatches/{dispatch_id}", headers=env.headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def inbox(client: AppClient, env: Env) -> list[dict[str, Any]]:
    response = client.get(f"/admin/v1/environments/{env.name}/inbox", headers=env.admin)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["messages"]
    return items


# -- Hackle's request and its errors -------------------------------------------------------------------


SEED_BODY = """{
  "campaignKey": 10,
  "users": [
    {
      "userId": "user-1",
      "apiProperties": {
        "orderNo": "A-1"
      }
    }
  ]
}"""


def test_kakao_trigger_hackle_shape_reaches_the_sandbox_inbox(client: AppClient, env: Env) -> None:
    setup(client, env, None, alimtalk())
    user(client, env, "user-1")
    response = client.post("/v1/kakao-message/trigger/send", content=SEED_BODY.encode(), headers=env.headers)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"dispatchId", "message"}
    run(client)
    result = view(client, env, "kakao", response.json()["dispatchId"])
    assert result["channel"] == "kakao" and result["counts"]["SENT"] == 1, str(result)
    delivery = result["recipients"][0]["deliveries"][0]
    assert (delivery["provider"], delivery["status"], delivery["type"]) == ("sandbox", "SENT", "alimtalk")
    assert delivery["delivered"] is True and delivery["reportCode"] == "SANDBOX"
    [message] = inbox(client, env)
    shown = message["message"]
    assert shown["text"] == "홍길동님, 주문 A-1이 출발했어요"
    assert shown["buttons"] == [{"type": "WL", "name": "배송 조회", "linkMo": "https://shop.example/o/A-1"}]
    assert shown["to"] == "+82 10-****-2222" and shown["type"] == "alimtalk" and shown["bytes"] > 0
    assert "1111" not in str(message)


@pytest.mark.parametrize("channel", ["kakao", "sms"])
def test_trigger_errors(client: AppClient, env: Env, channel: str) -> None:
    setup(client, env, None, alimtalk(), sms())
    url = f"/v1/{channel}-message/trigger/send"
    key = 10 if channel == "kakao" else 12
    cases: list[tuple[dict[str, str], Any, int, str, str | None]] = [
        ({}, {"campaignKey": key, "users": [{"userId": "u"}]}, 401, "API_KEY_NOT_FOUND", None),
        (
            {"X-HACKLE-API-KEY": "nope"},
            {"campaignKey": key, "users": [{"userId": "u"}]},
            401,
            "INVALID_API_KEY",
            "Invalid API key",
        ),
        (
            env.headers,
            {"campaignKey": key, "users": [{"userId": f"u{i}"} for i in range(51)]},
            400,
            "EXCEED_USER_MAX_LENGTH",
            "Max input length exceeded",
        ),
        (
            env.headers,
            {"campaignKey": 999, "users": [{"userId": "u"}]},
            400,
            "CAMPAIGN_NOT_FOUND",
            f"Could not find {channel} message campaign with the given key",
        ),
        # The other channel's campaign is not this channel's.
        (env.headers, {"campaignKey": 22 - key, "users": [{"userId": "u"}]}, 400, "CAMPAIGN_NOT_FOUND", None),
        (env.headers, {"campaignKey": key, "users": [{"deviceId": "d"}]}, 400, "EMPTY_IDENTIFIER", None),
        (env.headers, {"campaignKey": "x", "users": [{"userId": "u"}]}, 400, "INVALID_REQUEST", None),
        (
            env.headers,
            {"campaignKey": key, "users": [{"userId": "u", "apiProperties": {"a": [1]}}]},
            400,
            "INVALID_REQUEST",
            None,
        ),
    ]
    for headers, body, status, code, message in cases:
        response = client.post(url, json=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (status, code), (body, response.text)
        if message is not None:
            assert response.json()["message"] == message


def test_push_endpoint_does_not_trigger_a_kakao_campaign(client: AppClient, env: Env) -> None:
    setup(client, env, None, alimtalk())
    response = client.post(
        "/v1/push-message/trigger/send", json={"campaignKey": 10, "users": [{"userId": "u"}]}, headers=env.headers
    )
    assert response.json()["code"] == "CAMPAIGN_NOT_FOUND"
    assert response.json()["message"] == "Could not find push message campaign with the given key"


@pytest.mark.parametrize(
    ("channel", "other_key"),
    [pytest.param("push", 10, id="push"), pytest.param("kakao", 12, id="kakao"), pytest.param("sms", 10, id="sms")],
)
def test_statistics_of_an_unknown_campaign_name_its_channel(
    client: AppClient, env: Env, channel: str, other_key: int
) -> None:
    setup(client, env, None, alimtalk(), sms())
    expected = f"Could not find {channel} message campaign with the given key"
    # A key no campaign has, and a key another channel's campaign has: neither is this channel's.
    for key in (999, other_key):
        for method, url, body in (
            ("GET", f"/v1/{channel}-message/campaigns/{key}/stats", None),
            ("POST", f"/v1/{channel}-message/trigger/send", {"campaignKey": key, "users": [{"userId": "u"}]}),
        ):
            response = client.request(method, url, json=body, headers=env.headers)
            assert response.status_code == 400, (url, response.text)
            assert response.json() == {"code": "CAMPAIGN_NOT_FOUND", "message": expected}, url
    if channel != "push":
        own = 10 if channel == "kakao" else 12
        assert client.get(f"/v1/{channel}-message/campaigns/{own}/stats", headers=env.headers).status_code == 200


def test_admin_statistics_of_an_unknown_campaign_name_no_channel(client: AppClient, env: Env) -> None:
    setup(client, env, None, alimtalk())
    response = client.get(f"/admin/v1/environments/{env.name}/campaigns/999/stats", headers=env.admin)
    assert response.json() == {"code": "CAMPAIGN_NOT_FOUND", "message": "Could not find campaign with the given key"}
    assert client.get(f"/admin/v1/environments/{env.name}/campaigns/10/stats", headers=env.admin).status_code == 200


def test_idempotency_key_returns_the_first_dispatch(client: AppClient, env: Env) -> None:
    setup(client, env, None, sms())
    headers = {**env.headers, "Idempotency-Key": "order-1"}
    body = {"campaignKey": 12, "users": [{"userId": "u1"}]}
    first = client.post("/v1/sms-message/trigger/send", json=body, headers=headers).json()
    again = client.post("/v1/sms-message/trigger/send", json=body, headers=headers).json()
    assert first == again


# -- exclusions ------------------------------------------------------------------------------------------


def test_each_exclusion_reason(client: AppClient, env: Env) -> None:
    setup(
        client,
        env,
        None,
        alimtalk(
            audience={
                "targets": [
                    {
                        "conditions": [
                            {
                                "key": {"type": "USER_PROPERTY", "name": "name"},
                                "match": {
                                    "type": "MATCH",
                                    "operator": "IN",
                                    "valueType": "STRING",
                                    "values": ["홍길동"],
                                },
                            }
                        ]
                    }
                ]
            }
        ),
        brand(),
    )
    user(client, env, "in", kakao_information="SUBSCRIBED")
    user(client, env, "other-name", name="김철수")
    user(client, env, "no-phone", phone=None)
    user(client, env, "opted-out", kakao_information="UNSUBSCRIBED")
    info = send(
        client, env, "kakao", 10, [{"userId": u} for u in ("in", "other-name", "no-phone", "opted-out", "ghost")]
    )
    user(client, env, "brand-unknown")
    user(client, env, "brand-yes", kakao_marketing="SUBSCRIBED")
    marketing = send(client, env, "kakao", 11, [{"userId": "brand-unknown"}, {"userId": "brand-yes"}])
    run(client)
    outcomes = {r["userId"]: (r["outcome"], r["reason"]) for r in view(client, env, "kakao", info)["recipients"]}
    assert outcomes == {
        "in": ("SENT", None),
        "other-name": ("EXCLUDED", "NOT_IN_AUDIENCE"),
        "no-phone": ("EXCLUDED", "NO_PHONE_NUMBER"),
        "opted-out": ("EXCLUDED", "NO_CONSENT"),
        "ghost": ("EXCLUDED", "UNKNOWN_USER"),
    }
    outcomes = {r["userId"]: (r["outcome"], r["reason"]) for r in view(client, env, "kakao", marketing)["recipients"]}
    assert outcomes == {"brand-unknown": ("EXCLUDED", "NO_CONSENT"), "brand-yes": ("SENT", None)}


def test_brand_message_at_night_is_held_then_sent_at_eight(client: AppClient, env: Env) -> None:
    setup(client, env, None, brand(), brand(key=13, nightPolicy="DROP"))
    user(client, env, "u1", kakao_marketing="SUBSCRIBED")
    held = send(client, env, "kakao", 11, [{"userId": "u1"}])
    dropped = send(client, env, "kakao", 13, [{"userId": "u1"}])
    run(client, at=NIGHT)
    assert view(client, env, "kakao", held)["status"] == "SCHEDULED"
    assert view(client, env, "kakao", dropped)["recipients"][0]["reason"] == "NIGHT_TIME_DROPPED"
    assert inbox(client, env) == []
    run(client, at=NIGHT + 10 * 3600)
    assert view(client, env, "kakao", held)["recipients"][0]["outcome"] == "SENT"


def test_marketing_sms_at_night_needs_night_consent(client: AppClient, env: Env) -> None:
    setup(client, env, None, sms())
    user(client, env, "night-owl", sms_marketing="SUBSCRIBED", sms_night="SUBSCRIBED")
    user(client, env, "sleeper", sms_marketing="SUBSCRIBED")
    dispatch_id = send(client, env, "sms", 12, [{"userId": "night-owl"}, {"userId": "sleeper"}])
    run(client, at=NIGHT)
    outcomes = {r["userId"]: r["outcome"] for r in view(client, env, "sms", dispatch_id)["recipients"]}
    assert outcomes == {"night-owl": "SENT", "sleeper": "PENDING"}


def test_marketing_sms_carries_the_ad_head_and_opt_out_and_its_type_follows_its_size(
    client: AppClient, env: Env
) -> None:
    long = sms(key=14, message={"text": "{{ api_properties.body }}"}, purpose="INFORMATION")
    setup(client, env, {"senderName": "magpie"}, sms(), long)
    user(client, env, "u1", sms_marketing="SUBSCRIBED")
    short = send(client, env, "sms", 12, [{"userId": "u1"}])
    lms = send(client, env, "sms", 14, [{"userId": "u1", "apiProperties": {"body": "가" * 46}}])
    too_big = send(client, env, "sms", 14, [{"userId": "u1", "apiProperties": {"body": "가" * 1001}}])
    run(client)
    texts = {m["message"]["type"]: m["message"] for m in inbox(client, env)}
    assert set(texts) == {"SMS", "LMS"}
    assert texts["LMS"]["text"] == "가" * 46 and texts["LMS"]["bytes"] == 92
    marketing = texts["SMS"]
    assert marketing["marketing"] is True
    assert marketing["text"].startswith("(광고)magpie\n홍길동님 봄 세일 20%")
    assert marketing["text"].endswith("\n무료수신거부 080-123-4567")
    assert view(client, env, "sms", too_big)["recipients"][0]["reason"] == "MESSAGE_TOO_LARGE"
    stats = client.get("/v1/sms-message/campaigns/14/stats", headers=env.headers).json()
    assert stats["sentByType"] == {"LMS": 1} and stats["delivered"] == 1 and stats["failed"] == 1
    assert view(client, env, "sms", short)["recipients"][0]["outcome"] == "SENT"
    assert view(client, env, "sms", lms)["recipients"][0]["deliveries"][0]["type"] == "LMS"


def test_frequency_cap_can_count_every_channel(client: AppClient, env: Env) -> None:
    caps = [{"limit": 1, "windowHours": 24}]
    setup(client, env, {"frequencyCaps": caps}, brand(), sms())
    user(client, env, "u1", kakao_marketing="SUBSCRIBED", sms_marketing="SUBSCRIBED")
    first = send(client, env, "kakao", 11, [{"userId": "u1"}])
    run(client)
    second = send(client, env, "sms", 12, [{"userId": "u1"}])
    run(client)
    assert view(client, env, "kakao", first)["recipients"][0]["outcome"] == "SENT"
    assert view(client, env, "sms", second)["recipients"][0]["reason"] == "FREQUENCY_CAP"


def test_frequency_cap_for_one_channel_ignores_the_others(client: AppClient, env: Env) -> None:
    caps = [{"limit": 1, "windowHours": 24, "channel": "sms"}]
    setup(client, env, {"frequencyCaps": caps}, brand(), sms())
    user(client, env, "u1", kakao_marketing="SUBSCRIBED", sms_marketing="SUBSCRIBED")
    send(client, env, "kakao", 11, [{"userId": "u1"}])
    run(client)
    second = send(client, env, "sms", 12, [{"userId": "u1"}])
    third = send(client, env, "sms", 12, [{"userId": "u1"}])
    run(client)
    # The two SMS dispatches run side by side: whichever is decided first is sent, the other capped.
    outcomes = sorted(
        (
            view(client, env, "sms", d)["recipients"][0]["outcome"],
            view(client, env, "sms", d)["recipients"][0]["reason"],
        )
        for d in (second, third)
    )
    assert outcomes == [("EXCLUDED", "FREQUENCY_CAP"), ("SENT", None)]


# -- real gateways ---------------------------------------------------------------------------------------


def test_nhn_alimtalk_with_fallback_and_polled_reports(client: AppClient, env: Env, nhn: FakeNhn) -> None:
    campaign = alimtalk()
    campaign["message"]["fallback"] = {"text": "[배송] 주문 #{주문번호} 출발"}
    setup(client, env, {"kakaoGateway": "nhn", "providers": {"nhn": nhn.config()}}, campaign)
    user(client, env, "u1")
    user(client, env, "u2", phone="010-3333-4444")
    nhn.kakao_unreachable.add("01011112222")
    dispatch_id = send(
        client,
        env,
        "kakao",
        10,
        [{"userId": "u1", "apiProperties": {"orderNo": "A-1"}}, {"userId": "u2", "apiProperties": {"orderNo": "A-2"}}],
    )
    dispatcher = run(client)
    assert [(a.to, a.kind, a.text) for a in nhn.accepted] == [
        ("01011112222", "alimtalk", "홍길동님, 주문 A-1이 출발했어요"),
        ("01011112222", "fallback", "[배송] 주문 A-1 출발"),
        ("01033334444", "alimtalk", "홍길동님, 주문 A-2이 출발했어요"),
    ]
    before = view(client, env, "kakao", dispatch_id)
    assert [r["outcome"] for r in before["recipients"]] == ["SENT", "SENT"]
    assert before["recipients"][0]["deliveries"][0]["delivered"] is None
    dispatcher = make_dispatcher(client)
    try:
        assert client.run(dispatcher.poll_reports()) == 2
    finally:
        close_dispatcher(client, dispatcher)
    after = {r["userId"]: r["deliveries"][0] for r in view(client, env, "kakao", dispatch_id)["recipients"]}
    assert (after["u1"]["delivered"], after["u1"]["reportCode"]) == (True, "RSC04")
    assert (after["u2"]["delivered"], after["u2"]["reportCode"]) == (True, "1000")
    stats = client.get("/v1/kakao-message/campaigns/10/stats", headers=env.headers).json()
    assert (stats["sent"], stats["delivered"], stats["sentByType"]) == (2, 2, {"alimtalk": 2})


def test_nhn_refused_credentials_fail_every_recipient_with_the_gateway_code(
    client: AppClient, env: Env, nhn: FakeNhn
) -> None:
    setup(client, env, {"smsGateway": "nhn", "providers": {"nhn": {**nhn.config(), "smsSecretKey": "wrong"}}}, sms())
    user(client, env, "u1", sms_marketing="SUBSCRIBED")
    dispatch_id = send(client, env, "sms", 12, [{"userId": "u1"}])
    run(client)
    recipient = view(client, env, "sms", dispatch_id)["recipients"][0]
    assert (recipient["outcome"], recipient["reason"]) == ("FAILED", "NHN_-1001")
    assert nhn.accepted == []


def test_daily_limit_on_paid_messages_is_an_exclusion(client: AppClient, env: Env, nhn: FakeNhn) -> None:
    setup(
        client,
        env,
        {"smsGateway": "nhn", "paidMessagesDailyLimit": 2, "providers": {"nhn": nhn.config()}},
        sms(purpose="INFORMATION"),
    )
    for i in range(3):
        user(client, env, f"u{i}", phone=f"010-5555-000{i}")
    dispatch_id = send(client, env, "sms", 12, [{"userId": f"u{i}"} for i in range(3)])
    run(client)
    outcomes = [(r["outcome"], r["reason"]) for r in view(client, env, "sms", dispatch_id)["recipients"]]
    assert outcomes == [("SENT", None), ("SENT", None), ("EXCLUDED", "DAILY_LIMIT")]
    assert len(nhn.accepted) == 2


def test_solapi_sends_and_its_report_webhook_records_delivery(client: AppClient, env: Env, solapi: FakeSolapi) -> None:
    config = {**solapi.config(), "webhookSecret": "hook-secret"}
    setup(
        client,
        env,
        {"kakaoGateway": "solapi", "smsGateway": "solapi", "providers": {"solapi": config}},
        alimtalk(),
        sms(purpose="INFORMATION"),
    )
    user(client, env, "u1")
    user(client, env, "u2", phone="010-3333-4444")
    solapi.undeliverable.add("01033334444")
    kakao = send(client, env, "kakao", 10, [{"userId": "u1", "apiProperties": {"orderNo": "A-1"}}])
    text = send(client, env, "sms", 12, [{"userId": "u2"}])
    run(client)
    assert sorted(a.kind for a in solapi.accepted) == ["ATA", "SMS"]
    url = f"/v1/gateways/solapi/reports/{env.name}"
    assert client.post(url + "?secret=wrong", json=solapi.reports[0]).status_code == 401
    for report in solapi.reports:
        response = client.post(url + "?secret=hook-secret", json=report)
        assert response.status_code == 200 and response.json()["updated"] == 1, response.text
    assert view(client, env, "kakao", kakao)["recipients"][0]["deliveries"][0]["delivered"] is True
    failed = view(client, env, "sms", text)["recipients"][0]
    assert failed["outcome"] == "SENT"  # accepted by the gateway...
    assert (failed["deliveries"][0]["delivered"], failed["deliveries"][0]["reportCode"]) == (False, "3040")


def test_nhn_sms_result_webhook_records_delivery_with_the_signature_nhn_sends(
    client: AppClient, env: Env, nhn: FakeNhn
) -> None:
    config = {**nhn.config(), "webhookSecret": nhn.webhook_signature}
    setup(client, env, {"smsGateway": "nhn", "providers": {"nhn": config}}, sms(purpose="INFORMATION"))
    user(client, env, "u1")
    user(client, env, "u2", phone="010-3333-4444")
    nhn.undeliverable.add("01033334444")
    dispatch_id = send(client, env, "sms", 12, [{"userId": "u1"}, {"userId": "u2"}])
    run(client)
    [hook] = nhn.webhooks  # one text request (the same text) for both
    url = f"/v1/gateways/nhn/reports/{env.name}"
    refused = client.post(url, json=hook, headers=nhn.webhook_headers("wrong"))
    assert refused.status_code == 401 and refused.json()["code"] == "INVALID_API_KEY", refused.text
    unsigned = client.post(url, json=hook)
    assert unsigned.status_code == 401
    response = client.post(url, json=hook, headers=nhn.webhook_headers())
    assert response.status_code == 200 and response.json()["updated"] == 2, response.text
    # A repeated call, or one about a message magpie never sent, changes nothing.
    again = client.post(url, json=hook, headers=nhn.webhook_headers())
    assert again.status_code == 200 and again.json()["updated"] == 0
    stranger = {**hook, "hooks": [{**hook["hooks"][0], "requestId": "2026000000000999"}]}
    unknown = client.post(url, json=stranger, headers=nhn.webhook_headers())
    assert unknown.status_code == 200 and unknown.json()["updated"] == 0
    after = {r["userId"]: r["deliveries"][0] for r in view(client, env, "sms", dispatch_id)["recipients"]}
    assert (after["u1"]["delivered"], after["u1"]["reportCode"]) == (True, "1000")
    assert (after["u2"]["delivered"], after["u2"]["reportCode"]) == (False, "3015")


@pytest.mark.parametrize("gateway", ["nhn", "solapi"])
def test_mms_campaign_reaches_each_gateway_with_its_uploaded_image(
    client: AppClient, env: Env, nhn: FakeNhn, solapi: FakeSolapi, gateway: str
) -> None:
    fake: FakeNhn | FakeSolapi = nhn if gateway == "nhn" else solapi
    campaign = sms(purpose="INFORMATION")
    campaign["message"] = {
        "text": "봄 신상품이 도착했어요",
        "title": "봄 신상품",
        "imageUrls": [fake.image_url("a.jpg", JPEG)],
    }
    setup(client, env, {"smsGateway": gateway, "providers": {gateway: fake.config()}}, campaign)
    user(client, env, "u1")
    dispatch_id = send(client, env, "sms", 12, [{"userId": "u1"}])
    run(client, fetch_allow_cidrs="127.0.0.0/8")  # the fake serves its images from loopback
    [accepted] = fake.accepted
    assert accepted.kind == ("mms" if gateway == "nhn" else "MMS")
    assert list(fake.files.values()) == [JPEG]
    [recipient] = view(client, env, "sms", dispatch_id)["recipients"]
    assert (recipient["outcome"], recipient["deliveries"][0]["type"]) == ("SENT", "MMS")


def test_brand_message_through_solapi_is_a_free_form_bms(client: AppClient, env: Env, solapi: FakeSolapi) -> None:
    setup(client, env, {"kakaoGateway": "solapi", "providers": {"solapi": solapi.config()}}, brand())
    user(client, env, "u1", kakao_marketing="SUBSCRIBED")
    dispatch_id = send(client, env, "kakao", 11, [{"userId": "u1"}])
    run(client)
    [sent] = solapi.accepted
    assert (sent.kind, sent.text) == ("BMS_FREE", "홍길동님, 겨울 세일이 시작됐어요")
    assert sent.fields["kakaoOptions"]["bms"] == {"targeting": "I", "chatBubbleType": "TEXT"}
    assert view(client, env, "kakao", dispatch_id)["recipients"][0]["outcome"] == "SENT"


def test_gateway_retry_after_an_unanswered_batch_sends_nobody_twice(
    client: AppClient, env: Env, nhn: FakeNhn, solapi: FakeSolapi
) -> None:
    users = _two_gateways(client, env, nhn, solapi, 5)
    nhn.drop_after_accept = 1
    solapi.drop_after_accept = 1
    kakao = send(client, env, "kakao", 10, users)
    text = send(client, env, "sms", 12, users)
    run(client)
    assert nhn.sent_twice() == [] and solapi.sent_twice() == []
    assert len(nhn.accepted) == 5 and len(solapi.accepted) == 5
    for channel, dispatch_id in (("kakao", kakao), ("sms", text)):
        deliveries = [r["deliveries"][0] for r in view(client, env, channel, dispatch_id)["recipients"]]
        assert all(d["status"] == "SENT" and d["attempts"] == 2 for d in deliveries), deliveries


def _two_gateways(client: AppClient, env: Env, nhn: FakeNhn, solapi: FakeSolapi, users: int) -> list[dict[str, Any]]:
    setup(
        client,
        env,
        {"kakaoGateway": "nhn", "smsGateway": "solapi", "providers": {"nhn": nhn.config(), "solapi": solapi.config()}},
        alimtalk(),
        sms(purpose="INFORMATION"),
    )
    for i in range(users):
        user(client, env, f"u{i}", phone=f"010-7777-000{i}")
    return [{"userId": f"u{i}", "apiProperties": {"orderNo": f"A-{i}"}} for i in range(users)]


@pytest.mark.parametrize("attempts", [pytest.param(1, id="one-attempt"), pytest.param(3, id="three-attempts")])
def test_gateway_that_accepts_then_times_out_every_time_fails_nobody_and_sends_nobody_twice(
    client: AppClient, env: Env, nhn: FakeNhn, solapi: FakeSolapi, attempts: int
) -> None:
    users = _two_gateways(client, env, nhn, solapi, 3)
    nhn.drop_after_accept = solapi.drop_after_accept = 100  # every send request is taken, never answered
    kakao = send(client, env, "kakao", 10, users)
    text = send(client, env, "sms", 12, users)
    run(client, max_delivery_attempts=attempts)
    assert nhn.sent_twice() == [] and solapi.sent_twice() == []
    assert len(nhn.accepted) == 3 and len(solapi.accepted) == 3
    assert nhn.send_requests == 1 and solapi.send_requests == 1  # the rest was asked, not sent
    for channel, dispatch_id in (("kakao", kakao), ("sms", text)):
        shown = view(client, env, channel, dispatch_id)
        assert shown["counts"] == {"SENT": 3, "FAILED": 0, "UNKNOWN": 0, "EXCLUDED": 0, "PENDING": 0}
        assert all(r["deliveries"][0]["providerMessageId"] for r in shown["recipients"])


def test_gateway_that_cannot_say_what_it_took_leaves_its_recipients_unknown(
    client: AppClient, env: Env, nhn: FakeNhn, solapi: FakeSolapi
) -> None:
    users = _two_gateways(client, env, nhn, solapi, 2)
    nhn.drop_after_accept = solapi.drop_after_accept = 100
    nhn.fail_queries = solapi.fail_queries = 100  # and its lookups answer 500
    kakao = send(client, env, "kakao", 10, users)
    text = send(client, env, "sms", 12, users)
    run(client, max_delivery_attempts=2)
    assert len(nhn.accepted) == 2 and len(solapi.accepted) == 2 and nhn.sent_twice() == solapi.sent_twice() == []
    for channel, dispatch_id in (("kakao", kakao), ("sms", text)):
        shown = view(client, env, channel, dispatch_id)
        assert shown["counts"] == {"SENT": 0, "FAILED": 0, "UNKNOWN": 2, "EXCLUDED": 0, "PENDING": 0}
        assert {(r["outcome"], r["reason"]) for r in shown["recipients"]} == {("UNKNOWN", "GATEWAY_UNCONFIRMED")}
        assert {r["deliveries"][0]["status"] for r in shown["recipients"]} == {"UNKNOWN"}
    stats = client.get("/v1/kakao-message/campaigns/10/stats", headers=env.headers).json()
    assert (stats["unknown"], stats["failed"], stats["pending"], stats["sent"]) == (2, 0, 0, 0)
    shown = magpie_cli(
        "stats",
        "dispatch",
        kakao,
        "--env",
        env.name,
        data_dir=client.settings.data_dir,
        database_url=client.settings.database_url_override,
    )
    assert shown.returncode == 0, shown.stderr
    assert "sent 0  failed 0  unknown 2  excluded 0  pending 0" in shown.stdout


def test_gateway_that_never_took_the_batch_fails_it_after_saying_so(
    client: AppClient, env: Env, nhn: FakeNhn, solapi: FakeSolapi
) -> None:
    users = _two_gateways(client, env, nhn, solapi, 2)
    nhn.fail_5xx = solapi.fail_5xx = 100
    kakao = send(client, env, "kakao", 10, users)
    run(client, max_delivery_attempts=2)
    assert nhn.accepted == [] and nhn.queries >= 1
    shown = view(client, env, "kakao", kakao)
    assert {(r["outcome"], r["reason"]) for r in shown["recipients"]} == {("FAILED", "HTTP_500")}


# -- the law ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("gateway", "field"), [("nhn", "recipientNo"), ("solapi", "from")])
def test_080_opt_out_unsubscribes_sms_marketing(client: AppClient, env: Env, gateway: str, field: str) -> None:
    setup(
        client,
        env,
        {
            "providers": {
                gateway: {
                    **({"apiKey": "k", "apiSecret": "s"} if gateway == "solapi" else {}),
                    "webhookSecret": "s3cret",
                }
            }
        },
    )
    user(client, env, "u1", sms_marketing="SUBSCRIBED", kakao_marketing="SUBSCRIBED")
    user(client, env, "u2", phone="010-9999-8888", sms_marketing="SUBSCRIBED")
    url = f"/v1/gateways/{gateway}/opt-outs/{env.name}"
    assert client.post(url + "?secret=nope", json={field: "01011112222"}).status_code == 401
    response = client.post(url + "?secret=s3cret", json={field: "01011112222"})
    assert response.status_code == 200 and response.json()["unsubscribed"] == 1, response.text
    crm = client.user(env, "u1")["consents"]
    assert crm["sms"]["marketing"]["status"] == "UNSUBSCRIBED"
    assert crm["kakao"]["marketing"]["status"] == "SUBSCRIBED"
    assert client.user(env, "u2")["consents"]["sms"]["marketing"]["status"] == "SUBSCRIBED"


@pytest.mark.parametrize("path", ["opt-outs", "reports"])
def test_nhn_unsubscribe_webhook_as_nhn_sends_it(client: AppClient, env: Env, nhn: FakeNhn, path: str) -> None:
    setup(client, env, {"providers": {"nhn": {**nhn.config(), "webhookSecret": nhn.webhook_signature}}})
    user(client, env, "u1", sms_marketing="SUBSCRIBED")
    user(client, env, "u2", phone="010-9999-8888", sms_marketing="SUBSCRIBED")
    url = f"/v1/gateways/nhn/{path}/{env.name}"
    hook = nhn.unsubscribe("01011112222")
    assert client.post(url, json=hook, headers=nhn.webhook_headers("forged")).status_code == 401
    response = client.post(url, json=hook, headers=nhn.webhook_headers())
    assert response.status_code == 200 and response.json()["unsubscribed"] == 1, response.text
    assert client.user(env, "u1")["consents"]["sms"]["marketing"]["status"] == "UNSUBSCRIBED"
    assert client.user(env, "u2")["consents"]["sms"]["marketing"]["status"] == "SUBSCRIBED"


def test_phone_numbers_never_reach_the_logs(client: AppClient, env: Env, nhn: FakeNhn, caplog: Any) -> None:
    setup(client, env, {"smsGateway": "nhn", "providers": {"nhn": {**nhn.config(), "smsSecretKey": "wrong"}}}, sms())
    user(client, env, "u1", sms_marketing="SUBSCRIBED")
    send(client, env, "sms", 12, [{"userId": "u1"}])
    with caplog.at_level("DEBUG"):
        run(client)
    assert "refused the credentials" in caplog.text
    assert "1111" not in caplog.text and "2222" not in caplog.text


def _age_consent(client: AppClient, env: Env, user_id: str, channel: str, days: int) -> None:
    """Backdate a marketing consent, as if the user gave it ``days`` ago."""
    import json

    db = client.app.db
    at = int((time.time() - days * 86_400) * 1000)
    with db.transaction() as conn:
        row = db.fetchone(
            conn, "SELECT crm FROM profiles WHERE env_id = ? AND kind = 'u' AND ident = ?", (env.id, user_id)
        )
        assert row is not None
        crm = json.loads(row[0])
        crm[channel]["marketing"].update({"changedAt": at, "updatedAt": at})
        db.execute(
            conn,
            "UPDATE profiles SET crm = ? WHERE env_id = ? AND kind = 'u' AND ident = ?",
            (json.dumps(crm), env.id, user_id),
        )


def test_two_year_notice_report_and_sending_it_through_a_campaign(client: AppClient, env: Env) -> None:
    notice = sms(
        key=30,
        purpose="INFORMATION",
        message={"text": "{{ api_properties.confirmedAt }}에 동의하신 광고 수신을 유지하고 있습니다"},
    )
    setup(client, env, None, notice, sms())
    user(client, env, "old", sms_marketing="SUBSCRIBED", kakao_marketing="SUBSCRIBED")
    user(client, env, "soon", phone="010-2222-3333", sms_marketing="SUBSCRIBED")
    user(client, env, "fresh", phone="010-2222-4444", sms_marketing="SUBSCRIBED")
    user(client, env, "gone", phone="010-2222-5555", sms_marketing="UNSUBSCRIBED")
    _age_consent(client, env, "old", "sms", 800)
    _age_consent(client, env, "old", "kakao", 800)
    _age_consent(client, env, "soon", "sms", 715)
    _age_consent(client, env, "gone", "sms", 800)
    url = f"/admin/v1/environments/{env.name}/consent-reconfirmations"
    report = client.get(url + "?channel=sms&withinDays=30", headers=env.admin).json()
    assert [(d["userId"], d["channel"]) for d in report["due"]] == [("old", "sms"), ("soon", "sms")]
    every = client.get(url + "?withinDays=0", headers=env.admin).json()
    assert sorted((d["userId"], d["channel"]) for d in every["due"]) == [("old", "kakao"), ("old", "sms")]
    assert client.post(url + "/send", json={"campaignKey": 12}, headers=env.admin).json()["code"] == "INVALID_REQUEST"
    unknown = client.post(url + "/send", json={"campaignKey": 99}, headers=env.admin)
    assert (unknown.status_code, unknown.json()["code"]) == (400, "CAMPAIGN_NOT_FOUND")
    sent = client.post(url + "/send", json={"campaignKey": 30, "withinDays": 30}, headers=env.admin).json()
    assert sent["recipients"] == 2 and len(sent["dispatchIds"]) == 1
    run(client)
    texts = sorted(m["message"]["text"] for m in inbox(client, env))
    assert len(texts) == 2 and all(t.endswith("에 동의하신 광고 수신을 유지하고 있습니다") for t in texts)
    assert all(t.startswith("20") for t in texts)


def test_a_worker_that_lost_its_lease_leaves_the_batch_to_the_new_owner(
    client: AppClient, env: Env, nhn: FakeNhn
) -> None:
    setup(client, env, {"smsGateway": "nhn", "providers": {"nhn": nhn.config()}}, sms(purpose="INFORMATION"))
    user(client, env, "u1")
    dispatch_id = send(client, env, "sms", 12, [{"userId": "u1"}])
    stalled = make_dispatcher(client, clock=FakeClock(NOON))
    taker = make_dispatcher(client, clock=FakeClock(NOON + 3600))  # after the stalled one's lease lapsed
    try:
        [first] = client.run(stalled._claim(1))
        [again] = client.run(taker._claim(1))
        assert first.id == again.id
        client.run(stalled.process(first))
        assert nhn.accepted == []
        assert view(client, env, "sms", dispatch_id)["counts"]["PENDING"] == 1
        client.run(taker.process(again))
    finally:
        close_dispatcher(client, stalled)
        close_dispatcher(client, taker)
    assert len(nhn.accepted) == 1 and nhn.sent_twice() == []
    assert view(client, env, "sms", dispatch_id)["counts"]["SENT"] == 1
