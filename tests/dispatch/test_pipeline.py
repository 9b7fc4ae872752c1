"""The dispatch pipeline on the sandbox provider: outcomes, compliance, caps, personalization."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support import (
    AppClient,
    Env,
    FakeClock,
    add_token,
    apply_campaign,
    dispatch,
    inbox,
    outcomes,
    run_dispatcher,
    trigger,
)

SEOUL = ZoneInfo("Asia/Seoul")


def _at(hour: int, minute: int = 0) -> float:
    # Far in the future: work accepted now (real time) is always available by then.
    return datetime(2030, 1, 15, hour, minute, tzinfo=SEOUL).timestamp()


def _props(client: AppClient, env: Env, user_id: str, **values: Any) -> None:
    body = {"userId": user_id, "operations": {"$set": values}}
    assert client.post("/v1/properties", json=body, headers=env.headers).status_code == 200


def _consent(client: AppClient, env: Env, user_id: str, **statuses: str) -> None:
    body = {"userId": user_id, **statuses}
    assert client.post("/v1/push-subscriptions", json=body, headers=env.headers).status_code == 200


def _settings(client: AppClient, env: Env, **settings: Any) -> None:
    response = client.put(f"/admin/v1/environments/{env.name}", json={"settings": settings}, headers=env.admin)
    assert response.status_code == 200, response.text


def test_pipeline_sandbox_delivery_lands_in_inbox_with_hackle_payload(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    add_token(client, env, device_id="d1", user_id="u1", token="tok-1")
    dispatch_id = trigger(client, env, [{"userId": "u1", "apiProperties": {"n": 5}}])
    run_dispatcher(client)
    view = dispatch(client, env, dispatch_id)
    assert view["status"] == "COMPLETED"
    assert outcomes(view) == [("SENT", None)]
    assert view["counts"] == {"SENT": 1, "FAILED": 0, "EXCLUDED": 0, "PENDING": 0}
    (delivery,) = view["recipients"][0]["deliveries"]
    assert delivery["provider"] == "sandbox" and delivery["status"] == "SENT" and delivery["attempts"] == 1
    (message,) = inbox(client, env)
    assert message["token"] == "tok-1"
    assert message["message"]["title"] == "Hello u1"
    assert message["message"]["body"] == "Body 5"
    hackle = message["message"]["hackle"]
    assert hackle["pushMessageKey"] == 7
    assert hackle["pushMessageDeliveryId"] == delivery["deliveryId"]
    assert hackle["pushMessageExecutionId"] == view["executionId"]
    assert hackle["clickAction"] == "APP_OPEN"
    assert hackle["campaignType"] == "PUSH_MESSAGE"
    assert delivery["providerMessageId"] == f"sandbox-{message['id']}"


def test_pipeline_each_exclusion_reason(client: AppClient, env: Env) -> None:
    apply_campaign(
        client,
        env,
        purpose="MARKETING",
        consentRule="SUBSCRIBED_ONLY",
        audience={
            "targets": [
                {
                    "conditions": [
                        {
                            "key": {"type": "USER_PROPERTY", "name": "grade"},
                            "match": {
                                "type": "MATCH",
                                "operator": "IN",
                                "valueType": "STRING",
                                "values": ["GOLD"],
                            },
                        }
                    ]
                }
            ]
        },
    )
    _settings(client, env, nightPolicy="DROP")
    for user in ("in", "silver", "noconsent", "notoken", "night"):
        _props(client, env, user, grade="SILVER" if user == "silver" else "GOLD")
        if user != "noconsent":
            _consent(client, env, user, marketingSubscriptionStatus="SUBSCRIBED")
        if user != "notoken":
            add_token(client, env, device_id=f"dev-{user}", user_id=user, token=f"tok-{user}")
    _consent(client, env, "in", nightSubscriptionStatus="SUBSCRIBED")
    users = [{"userId": u} for u in ("in", "silver", "noconsent", "notoken", "night", "ghost")]
    dispatch_id = trigger(client, env, users)
    run_dispatcher(client, clock=FakeClock(_at(22, 30)))
    assert outcomes(dispatch(client, env, dispatch_id)) == [
        ("SENT", None),
        ("EXCLUDED", "NOT_IN_AUDIENCE"),
        ("EXCLUDED", "NO_CONSENT"),
        ("EXCLUDED", "NO_PUSH_TOKEN"),
        ("EXCLUDED", "NIGHT_TIME_DROPPED"),
        ("EXCLUDED", "UNKNOWN_USER"),
    ]
    view = dispatch(client, env, dispatch_id)
    assert view["excluded"] == {
        "NOT_IN_AUDIENCE": 1,
        "NO_CONSENT": 1,
        "NO_PUSH_TOKEN": 1,
        "NIGHT_TIME_DROPPED": 1,
        "UNKNOWN_USER": 1,
    }


@pytest.mark.parametrize(
    ("purpose", "rule", "marketing", "information", "expected"),
    [
        pytest.param("MARKETING", "SUBSCRIBED_ONLY", None, None, "NO_CONSENT", id="mkt-only-unknown"),
        pytest.param("MARKETING", "SUBSCRIBED_OR_UNKNOWN", None, None, "SENT", id="mkt-or-unknown-unknown"),
        pytest.param("MARKETING", "SUBSCRIBED_OR_UNKNOWN", "UNSUBSCRIBED", None, "NO_CONSENT", id="mkt-unsubscribed"),
        pytest.param("MARKETING", "SUBSCRIBED_ONLY", "SUBSCRIBED", "UNSUBSCRIBED", "SENT", id="mkt-ignores-info"),
        pytest.param("INFORMATION", "SUBSCRIBED_ONLY", "UNSUBSCRIBED", None, "SENT", id="info-ignores-mkt"),
        pytest.param("INFORMATION", "SUBSCRIBED_ONLY", None, "UNSUBSCRIBED", "NO_CONSENT", id="info-unsubscribed"),
    ],
)
def test_pipeline_consent_rules(
    client: AppClient,
    env: Env,
    purpose: str,
    rule: str,
    marketing: str | None,
    information: str | None,
    expected: str,
) -> None:
    apply_campaign(client, env, purpose=purpose, consentRule=rule)
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    statuses = {}
    if marketing:
        statuses["marketingSubscriptionStatus"] = marketing
    if information:
        statuses["informationSubscriptionStatus"] = information
    if statuses:
        _consent(client, env, "u1", **statuses)
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client, clock=FakeClock(_at(12)))
    (outcome,) = outcomes(dispatch(client, env, dispatch_id))
    assert outcome == (("SENT", None) if expected == "SENT" else ("EXCLUDED", expected))


def test_pipeline_marketing_title_gets_ad_prefix_sender_and_opt_out(client: AppClient, env: Env) -> None:
    apply_campaign(client, env, purpose="MARKETING", message={"title": "봄 세일", "body": "최대 50%"})
    _settings(client, env, senderName="magpie shop", optOutText="수신거부: 설정 > 알림")
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    _consent(client, env, "u1", marketingSubscriptionStatus="SUBSCRIBED")
    trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client, clock=FakeClock(_at(12)))
    (message,) = inbox(client, env)
    assert message["message"]["title"] == "(광고) magpie shop 봄 세일"
    assert message["message"]["body"] == "최대 50%\n수신거부: 설정 > 알림"
    assert message["message"]["hackle"]["title"] == "(광고) magpie shop 봄 세일"


def test_pipeline_marketing_title_already_compliant_is_left_alone(client: AppClient, env: Env) -> None:
    apply_campaign(
        client,
        env,
        purpose="MARKETING",
        message={"title": "(광고) magpie shop 세일", "body": "세일\n수신거부: 설정 > 알림"},
    )
    _settings(client, env, senderName="magpie shop", optOutText="수신거부: 설정 > 알림")
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    _consent(client, env, "u1", marketingSubscriptionStatus="SUBSCRIBED")
    trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client, clock=FakeClock(_at(12)))
    (message,) = inbox(client, env)
    assert message["message"]["title"] == "(광고) magpie shop 세일"
    assert message["message"]["body"] == "세일\n수신거부: 설정 > 알림"


def test_pipeline_information_push_has_no_ad_prefix(client: AppClient, env: Env) -> None:
    apply_campaign(client, env, message={"title": "배송 시작", "body": "출발했어요"})
    _settings(client, env, senderName="magpie shop")
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client, clock=FakeClock(_at(23)))
    (message,) = inbox(client, env)
    assert message["message"]["title"] == "배송 시작"


def test_pipeline_night_marketing_is_held_until_eight(client: AppClient, env: Env) -> None:
    apply_campaign(client, env, purpose="MARKETING")
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    add_token(client, env, device_id="d2", user_id="owl", token="t2")
    _consent(client, env, "u1", marketingSubscriptionStatus="SUBSCRIBED")
    _consent(client, env, "owl", marketingSubscriptionStatus="SUBSCRIBED", nightSubscriptionStatus="SUBSCRIBED")
    clock = FakeClock(_at(23, 10))
    dispatch_id = trigger(client, env, [{"userId": "u1"}, {"userId": "owl"}])
    run_dispatcher(client, clock=clock)
    view = dispatch(client, env, dispatch_id)
    assert outcomes(view) == [("PENDING", None), ("SENT", None)]
    assert view["status"] != "COMPLETED"
    clock.now = _at(7, 59) + 86_400
    run_dispatcher(client, clock=clock)
    assert outcomes(dispatch(client, env, dispatch_id))[0] == ("PENDING", None)
    clock.now = _at(8, 0) + 86_400
    run_dispatcher(client, clock=clock)
    view = dispatch(client, env, dispatch_id)
    assert outcomes(view) == [("SENT", None), ("SENT", None)]
    assert view["status"] == "COMPLETED"


def test_pipeline_night_window_uses_environment_time_zone(client: AppClient, env: Env) -> None:
    response = client.put(
        f"/admin/v1/environments/{env.name}",
        json={"timezone": "UTC", "settings": {"nightPolicy": "DROP"}},
        headers=env.admin,
    )
    assert response.status_code == 200
    apply_campaign(client, env, purpose="MARKETING")
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client, clock=FakeClock(_at(23)))  # 23:00 in Seoul is 14:00 UTC: daytime there
    assert outcomes(dispatch(client, env, dispatch_id)) == [("SENT", None)]


def test_pipeline_frequency_cap_applies_across_dispatches(client: AppClient, env: Env) -> None:
    apply_campaign(client, env, purpose="MARKETING", tags=["promo"])
    _settings(client, env, frequencyCaps=[{"limit": 2, "windowHours": 24}])
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    clock = FakeClock(_at(12))
    results = []
    for _ in range(3):
        dispatch_id = trigger(client, env, [{"userId": "u1"}])
        run_dispatcher(client, clock=clock)
        results.extend(outcomes(dispatch(client, env, dispatch_id)))
        clock.advance(60)
    assert results == [("SENT", None), ("SENT", None), ("EXCLUDED", "FREQUENCY_CAP")]
    clock.advance(86_400)
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client, clock=clock)
    assert outcomes(dispatch(client, env, dispatch_id)) == [("SENT", None)]


def test_pipeline_frequency_cap_per_tag_only_counts_tagged_pushes(client: AppClient, env: Env) -> None:
    _settings(client, env, frequencyCaps=[{"limit": 1, "windowHours": 720, "tag": "promo"}])
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    clock = FakeClock(_at(12))
    seen: list[tuple[str, str | None]] = []
    for key, tags in ((7, ["promo"]), (8, ["news"]), (7, ["promo"]), (8, ["news"])):
        apply_campaign(client, env, key=key, purpose="MARKETING", tags=tags)
        dispatch_id = trigger(client, env, [{"userId": "u1"}], key=key)
        run_dispatcher(client, clock=clock)
        seen.extend(outcomes(dispatch(client, env, dispatch_id)))
    assert seen == [("SENT", None), ("SENT", None), ("EXCLUDED", "FREQUENCY_CAP"), ("SENT", None)]


def test_pipeline_information_pushes_ignore_frequency_caps(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    _settings(client, env, frequencyCaps=[{"limit": 1, "windowHours": 24}])
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    ids = [trigger(client, env, [{"userId": "u1"}]) for _ in range(3)]
    run_dispatcher(client)
    assert [outcomes(dispatch(client, env, i)) for i in ids] == [[("SENT", None)]] * 3


def test_pipeline_personalization_renders_liquid_per_recipient(client: AppClient, env: Env) -> None:
    apply_campaign(
        client,
        env,
        message={
            "title": '{{ user_properties["name"] | default: "고객" }}님',
            "body": "상품 {{ api_properties.productNumber }} / {{ user.id }}",
            "clickAction": "DEEP_LINK",
            "link": "shop://p/{{ api_properties.productNumber }}",
        },
    )
    _props(client, env, "kim", name="김철수")
    add_token(client, env, device_id="d1", user_id="kim", token="t-kim")
    add_token(client, env, device_id="d2", user_id="anon", token="t-anon")
    trigger(
        client,
        env,
        [
            {"userId": "kim", "apiProperties": {"productNumber": "123"}},
            {"userId": "anon", "apiProperties": {"productNumber": 456}},
        ],
    )
    run_dispatcher(client)
    by_token = {m["token"]: m["message"] for m in inbox(client, env)}
    assert (by_token["t-kim"]["title"], by_token["t-kim"]["body"], by_token["t-kim"]["link"]) == (
        "김철수님",
        "상품 123 / kim",
        "shop://p/123",
    )
    assert (by_token["t-anon"]["title"], by_token["t-anon"]["body"]) == ("고객님", "상품 456 / anon")
    assert by_token["t-anon"]["hackle"]["clickAction"] == "DEEP_LINK"
    assert by_token["t-anon"]["hackle"]["link"] == "shop://p/456"


def test_pipeline_multi_device_user_gets_every_valid_token(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    add_token(client, env, device_id="phone", user_id="u1", token="t-phone")
    add_token(client, env, device_id="tablet", user_id="u1", token="t-tablet", provider="APN")
    add_token(client, env, device_id="tablet", user_id="u1", token="t-tablet-2")
    add_token(client, env, device_id="other", user_id="u2", token="t-other")
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    view = dispatch(client, env, dispatch_id)
    assert sorted(m["token"] for m in inbox(client, env)) == ["t-phone", "t-tablet", "t-tablet-2"]
    assert len(view["recipients"][0]["deliveries"]) == 3


def test_pipeline_device_only_recipient_uses_linked_user(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    add_token(client, env, device_id="d2", user_id="u1", token="t2")
    add_token(client, env, device_id="anon", token="t-anon")
    dispatch_id = trigger(client, env, [{"deviceId": "d1"}, {"deviceId": "anon"}])
    run_dispatcher(client)
    assert outcomes(dispatch(client, env, dispatch_id)) == [("SENT", None), ("SENT", None)]
    assert sorted(m["token"] for m in inbox(client, env)) == ["t-anon", "t1", "t2"]


def test_pipeline_cohort_audience(client: AppClient, env: Env) -> None:
    assert (
        client.put(
            f"/admin/v1/environments/{env.name}/cohorts/vip",
            json={"members": ["u1", "u3"]},
            headers=env.admin,
        ).status_code
        == 200
    )
    apply_campaign(
        client,
        env,
        audience={
            "targets": [
                {
                    "conditions": [
                        {
                            "key": {"type": "COHORT"},
                            "match": {
                                "type": "MATCH",
                                "operator": "IN",
                                "valueType": "STRING",
                                "values": ["vip"],
                            },
                        }
                    ]
                }
            ]
        },
    )
    for user in ("u1", "u2", "u3"):
        add_token(client, env, device_id=f"d-{user}", user_id=user, token=f"t-{user}")
    dispatch_id = trigger(client, env, [{"userId": u} for u in ("u1", "u2", "u3")])
    run_dispatcher(client)
    assert outcomes(dispatch(client, env, dispatch_id)) == [
        ("SENT", None),
        ("EXCLUDED", "NOT_IN_AUDIENCE"),
        ("SENT", None),
    ]


def test_pipeline_campaign_paused_after_acceptance_fails_visibly(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    apply_campaign(client, env, status="PAUSED")
    run_dispatcher(client)
    view = dispatch(client, env, dispatch_id)
    assert outcomes(view) == [("FAILED", "CAMPAIGN_INACTIVE")]
    assert view["status"] == "COMPLETED"


def test_pipeline_push_provider_without_settings_fails_recipient(client: AppClient, env: Env) -> None:
    apply_campaign(client, env, provider="push")
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    assert outcomes(dispatch(client, env, dispatch_id)) == [("FAILED", "PROVIDER_NOT_CONFIGURED")]


def test_pipeline_campaign_stats_count_outcomes(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    trigger(client, env, [{"userId": "u1"}, {"userId": "ghost"}])
    trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    response = client.get("/v1/push-message/campaigns/7/stats", headers=env.headers)
    assert response.status_code == 200
    stats = response.json()
    assert (stats["dispatches"], stats["requested"], stats["sent"], stats["failed"]) == (2, 3, 2, 0)
    assert stats["excluded"] == {"UNKNOWN_USER": 1}
    assert stats["clicks"] == 0 and stats["ctr"] == 0.0
    admin = client.get(f"/admin/v1/environments/{env.name}/campaigns/7/stats", headers=env.admin).json()
    assert admin["sent"] == 2
