"""System events from Hackle's SDKs change profiles exactly as the HTTP API does."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sdk.batches import by_key, events_of, send, track_event
from tests.support import (
    AppClient,
    Env,
    add_token,
    apply_campaign,
    dispatch,
    run_dispatcher,
    trigger,
)

_TABLES = ("events", "profiles", "push_tokens", "push_clicks")


def _stored(client: AppClient, env: Env) -> dict[str, int]:
    db = client.app.db
    with db.transaction(write=False) as conn:
        return {t: db.fetchone(conn, f"SELECT count(*) FROM {t} WHERE env_id = ?", (env.id,))[0] for t in _TABLES}


def _rejected(client: AppClient, env: Env, event: dict[str, Any]) -> None:
    """The batch is answered 400 and leaves no trace: no event, profile, token or click."""
    send(client, env, event, status=400)
    assert _stored(client, env) == dict.fromkeys(_TABLES, 0)


# -- $properties --------------------------------------------------------------------------------------

_START = {"$set": {"tags": ["a", "b", 1], "n": 1, "grade": "SILVER", "keep": "x", "s": "scalar"}}


@pytest.mark.parametrize(
    "operations",
    [
        pytest.param({"$set": {"grade": "GOLD", "age": 42}}, id="set"),
        pytest.param({"$setOnce": {"grade": "GOLD", "first": "2020-01-01"}}, id="set-once"),
        pytest.param({"$unset": {"grade": "-", "absent": "-"}}, id="unset"),
        pytest.param({"$increment": {"n": 2.5, "new": 3, "grade": 1}}, id="increment"),
        pytest.param({"$append": {"tags": ["b", "c"], "s": 2, "fresh": "v"}}, id="append"),
        pytest.param({"$appendOnce": {"tags": [1.0, "c", "c"]}}, id="append-once"),
        pytest.param({"$prepend": {"tags": ["z", "y"]}}, id="prepend"),
        pytest.param({"$prependOnce": {"tags": ["a", "q", "q"]}}, id="prepend-once"),
        pytest.param({"$remove": {"tags": ["a", 1]}}, id="remove"),
        pytest.param({"$clearAll": {"clearAll": "-"}}, id="clear-all"),
        pytest.param(
            {"$set": {"grade": "GOLD"}, "$setOnce": {"grade": "X", "k": 1}, "$unset": {"keep": "-"}},
            id="combined-first-operation-wins",
        ),
    ],
)
def test_properties_event_matches_http_properties(client: AppClient, env: Env, operations: dict[str, Any]) -> None:
    for user_id in ("http", "sdk"):
        send(client, env, track_event("$properties", user_id=user_id, properties=_START))
    response = client.post("/v1/properties", json={"userId": "http", "operations": operations}, headers=env.headers)
    assert response.status_code == 200, response.text
    send(client, env, track_event("$properties", user_id="sdk", properties=operations))
    assert client.user(env, "sdk")["properties"] == client.user(env, "http")["properties"]


def test_properties_event_for_device_then_link_merges_like_http(client: AppClient, env: Env) -> None:
    send(client, env, track_event("$properties", device_id="d1", properties={"$set": {"theme": "dark", "g": 1}}))
    send(client, env, track_event("$properties", user_id="u1", properties={"$set": {"g": 2}}))
    send(client, env, track_event("login", user_id="u1", device_id="d1"))
    assert client.user(env, "u1")["properties"] == {"g": 2, "theme": "dark"}


# -- $secured_properties ------------------------------------------------------------------------------


def test_secured_properties_set_and_unset_phone_number(client: AppClient, env: Env) -> None:
    secured = {"$set": {"$phone_number": "010-1234-5678"}}
    send(client, env, track_event("$secured_properties", user_id="u1", properties=secured))
    assert client.user(env, "u1")["phoneNumber"] == "+82 10-****-5678"
    stored = by_key(events_of(client, env, "u1"))["$secured_properties"]
    assert "1234" not in str(stored) and "12345678" not in str(stored)
    with client.app.db.transaction(write=False) as conn:
        rows = client.app.db.fetchall(conn, "SELECT properties FROM events WHERE env_id = ?", (env.id,))
    assert all("1234" not in r[0] for r in rows)
    unset = {"$unset": {"$phone_number": "-"}}
    send(client, env, track_event("$secured_properties", user_id="u1", properties=unset))
    assert client.user(env, "u1")["phoneNumber"] is None


@pytest.mark.parametrize(
    "properties",
    [
        pytest.param({"$set": {"email": "a@b.c"}}, id="not-a-secured-key"),
        pytest.param({"$increment": {"$phone_number": 1}}, id="unsupported-operation"),
        pytest.param({}, id="nothing"),
    ],
)
def test_secured_properties_invalid_is_400(client: AppClient, env: Env, properties: dict[str, Any]) -> None:
    _rejected(client, env, track_event("$secured_properties", user_id="u1", properties=properties))


# -- subscriptions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_key", "channel"),
    [
        pytest.param("$push_subscriptions", "push", id="push"),
        pytest.param("$sms_subscriptions", "sms", id="sms"),
        pytest.param("$kakao_subscriptions", "kakao", id="kakao"),
    ],
)
def test_subscription_events_record_consent(client: AppClient, env: Env, event_key: str, channel: str) -> None:
    statuses = {"$marketing": "UNSUBSCRIBED", "$information": "SUBSCRIBED", "chat": "UNKNOWN"}
    send(client, env, track_event(event_key, user_id="u1", properties=statuses))
    consents = client.user(env, "u1")["consents"][channel]
    assert set(consents) == {"marketing", "information"}
    assert (consents["marketing"]["status"], consents["information"]["status"]) == ("UNSUBSCRIBED", "SUBSCRIBED")
    send(client, env, track_event(event_key, user_id="u1", properties={"$marketing": "UNKNOWN"}))
    consents = client.user(env, "u1")["consents"][channel]
    assert (consents["marketing"]["status"], consents["information"]["status"]) == ("UNKNOWN", "SUBSCRIBED")


def test_subscription_event_matches_http_consent(client: AppClient, env: Env) -> None:
    body = {"userId": "http", "marketingSubscriptionStatus": "SUBSCRIBED"}
    assert client.post("/v1/kakao-subscriptions", json=body, headers=env.headers).status_code == 200
    send(client, env, track_event("$kakao_subscriptions", user_id="sdk", properties={"$marketing": "SUBSCRIBED"}))
    http, sdk = (client.user(env, u)["consents"]["kakao"]["marketing"] for u in ("http", "sdk"))
    assert http["status"] == sdk["status"] == "SUBSCRIBED"


def test_push_subscription_of_anonymous_device_then_linked(client: AppClient, env: Env) -> None:
    send(client, env, track_event("$push_subscriptions", device_id="d1", properties={"$marketing": "SUBSCRIBED"}))
    send(client, env, track_event("login", user_id="u1", device_id="d1"))
    assert client.user(env, "u1")["consents"]["push"]["marketing"]["status"] == "SUBSCRIBED"


def test_sms_subscription_through_a_linked_device_reaches_the_user(client: AppClient, env: Env) -> None:
    send(client, env, track_event("login", user_id="u1", device_id="d1"))
    send(client, env, track_event("$sms_subscriptions", device_id="d1", properties={"$information": "SUBSCRIBED"}))
    assert client.user(env, "u1")["consents"]["sms"]["information"]["status"] == "SUBSCRIBED"


# -- $push_token --------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["FCM", "APN"])
def test_push_token_event_registers_the_device_token(client: AppClient, env: Env, provider: str) -> None:
    token = f"{provider.lower()}-token-0123456789abcdef"
    properties = {"provider_type": provider, "token": token}
    send(client, env, track_event("$push_token", user_id="u1", device_id="d1", properties=properties))
    devices = client.user(env, "u1")["devices"]
    assert [d["deviceId"] for d in devices] == ["d1"]
    tokens = devices[0]["pushTokens"]
    assert [(t["providerType"], t["status"]) for t in tokens] == [(provider, "ACTIVE")]
    assert token not in str(events_of(client, env, "u1"))  # the stored event shows only its start


def test_push_token_event_of_anonymous_device_is_used_for_pushes(client: AppClient, env: Env) -> None:
    send(client, env, track_event("$push_token", device_id="d9", properties={"provider_type": "FCM", "token": "tok"}))
    with client.app.db.transaction(write=False) as conn:
        row = client.app.db.fetchone(
            conn,
            "SELECT device_id, provider_type, status FROM push_tokens WHERE env_id = ? AND token = 'tok'",
            (env.id,),
        )
    assert row == ("d9", "FCM", "ACTIVE")


def test_push_token_duplicate_event_registers_once(client: AppClient, env: Env) -> None:
    event = track_event("$push_token", device_id="d1", properties={"provider_type": "APN", "token": "tok"})
    send(client, env, event, dict(event))
    send(client, env, event)
    with client.app.db.transaction(write=False) as conn:
        rows = client.app.db.fetchall(conn, "SELECT token FROM push_tokens WHERE env_id = ?", (env.id,))
    assert rows == [("tok",)]


@pytest.mark.parametrize(
    "properties",
    [
        pytest.param({"provider_type": "HMS", "token": "t"}, id="unknown-provider"),
        pytest.param({"provider_type": "FCM", "token": ""}, id="empty-token"),
        pytest.param({"provider_type": "FCM", "token": "t" * 513}, id="token-too-long"),
    ],
)
def test_push_token_invalid_is_400(client: AppClient, env: Env, properties: dict[str, Any]) -> None:
    _rejected(client, env, track_event("$push_token", device_id="d1", properties=properties))


# -- $push_click --------------------------------------------------------------------------------------


def _sent_push(client: AppClient, env: Env) -> tuple[dict[str, Any], dict[str, Any]]:
    apply_campaign(client, env)
    add_token(client, env, device_id="d1", token="tok-1", user_id="u1")
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    run_dispatcher(client)
    view = dispatch(client, env, dispatch_id)
    delivery: dict[str, Any] = view["recipients"][0]["deliveries"][0]
    return view, delivery


def _click(view: dict[str, Any], delivery: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "push_message_id": view["campaignKey"],
        "push_message_key": view["campaignKey"],
        "push_message_execution_id": view["executionId"],
        "push_message_delivery_id": delivery["deliveryId"],
        "campaign_type": "PUSH_MESSAGE",
        "debug": False,
        **extra,
    }


def _stats(client: AppClient, env: Env) -> dict[str, Any]:
    response = client.get("/v1/push-message/campaigns/7/stats", headers=env.headers)
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


def test_push_click_counts_for_its_campaign_and_ctr(client: AppClient, env: Env) -> None:
    view, delivery = _sent_push(client, env)
    assert _stats(client, env)["sent"] == 1
    click = track_event("$push_click", user_id="u1", device_id="d1", properties=_click(view, delivery))
    send(client, env, click, dict(click))
    send(client, env, click)
    stats = _stats(client, env)
    assert (stats["clicks"], stats["ctr"]) == (1, 1.0)
    with client.app.db.transaction(write=False) as conn:
        row = client.app.db.fetchone(
            conn, "SELECT campaign_key, dispatch_id, delivery_id FROM push_clicks WHERE env_id = ?", (env.id,)
        )
    assert row == (7, view["dispatchId"], delivery["deliveryId"])


def test_push_click_with_string_ids_as_some_sdks_send(client: AppClient, env: Env) -> None:
    view, delivery = _sent_push(client, env)
    properties = {k: str(v) for k, v in _click(view, delivery).items()}
    send(client, env, track_event("$push_click", device_id="d1", properties=properties))
    assert _stats(client, env)["clicks"] == 1


def test_push_click_of_a_debug_push_is_not_counted(client: AppClient, env: Env) -> None:
    view, delivery = _sent_push(client, env)
    send(client, env, track_event("$push_click", device_id="d1", properties=_click(view, delivery, debug=True)))
    assert _stats(client, env)["clicks"] == 0
    assert "$push_click" in by_key(events_of(client, env, "u1"))


def test_push_click_naming_only_the_delivery_finds_its_campaign(client: AppClient, env: Env) -> None:
    _, delivery = _sent_push(client, env)
    properties = {"push_message_delivery_id": delivery["deliveryId"]}
    send(client, env, track_event("$push_click", device_id="d1", properties=properties))
    assert _stats(client, env)["clicks"] == 1


def test_push_click_without_campaign_is_400(client: AppClient, env: Env) -> None:
    _rejected(client, env, track_event("$push_click", device_id="d1", properties={"campaign_type": "PUSH"}))


# -- other events -------------------------------------------------------------------------------------


def test_unknown_system_events_and_sdk_decisions_are_stored_only(client: AppClient, env: Env) -> None:
    exposure = {
        "insertId": "x1",
        "timestamp": 1,
        "userId": "u1",
        "identifiers": {"$id": "u1"},
        "userProperties": {},
        "hackleProperties": {},
        "experimentId": 5,
        "experimentKey": 3,
        "experimentType": "AB_TEST",
        "experimentVersion": 1,
        "variationId": 9,
        "variationKey": "B",
        "decisionReason": "TRAFFIC_ALLOCATED",
        "properties": {"$experiment_version": 1},
    }
    body = {
        "exposureEvents": [exposure],
        "trackEvents": [track_event("$session_start", user_id="u1", properties={"$anything": {"x": 1}})],
        "remoteConfigEvents": [],
    }
    response = client.post("/api/v2/events", json=body, headers={"X-HACKLE-SDK-KEY": env.key})
    assert response.status_code == 200, response.text
    events = by_key(events_of(client, env, "u1"))
    assert set(events) == {"$exposure", "$session_start"}
    assert events["$exposure"]["properties"]["$variation_key"] == "B"
    assert client.user(env, "u1")["properties"] == {}
