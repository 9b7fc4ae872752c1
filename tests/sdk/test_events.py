"""The event store: snapshots that are never rewritten, insertId idempotency, whole-batch rejection."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from magpie.config import Settings
from magpie.store.events import purge_expired
from tests.sdk.batches import batch, by_key, events_of, eventually, sdk_headers, send, track_event
from tests.support import AppClient, Env


def _set(client: AppClient, env: Env, user_id: str, **values: Any) -> None:
    body = {"userId": user_id, "operations": {"$set": values}}
    response = client.post("/v1/properties", json=body, headers=env.headers)
    assert response.status_code == 200, response.text


def _track(client: AppClient, env: Env, key: str, **user: Any) -> None:
    response = client.post("/v1/track", json={"event": {"key": key}, "user": user}, headers=env.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "success"}


# -- non-retroactivity --------------------------------------------------------------------------------


def test_snapshot_not_retroactive_through_http_api(client: AppClient, env: Env) -> None:
    _set(client, env, "u1", grade="SILVER")
    _track(client, env, "A", userId="u1")
    _set(client, env, "u1", grade="GOLD")
    _track(client, env, "B", userId="u1")
    events = by_key(events_of(client, env, "u1"))
    assert events["A"]["userProperties"] == {"grade": "SILVER"}
    assert events["B"]["userProperties"] == {"grade": "GOLD"}
    assert client.user(env, "u1")["properties"] == {"grade": "GOLD"}


@pytest.mark.parametrize("same_millisecond", [pytest.param(False, id="ascending"), pytest.param(True, id="same-ms")])
def test_snapshot_not_retroactive_within_one_sdk_batch(client: AppClient, env: Env, same_millisecond: bool) -> None:
    at = int(time.time() * 1000) if same_millisecond else None
    send(
        client,
        env,
        track_event("$properties", user_id="u1", properties={"$set": {"grade": "SILVER"}}, timestamp=at),
        track_event("A", user_id="u1", timestamp=at),
        track_event("$properties", user_id="u1", properties={"$set": {"grade": "GOLD"}}, timestamp=at),
        track_event("B", user_id="u1", timestamp=at),
    )
    events = by_key(events_of(client, env, "u1"))
    assert events["A"]["userProperties"] == {"grade": "SILVER"}
    assert events["B"]["userProperties"] == {"grade": "GOLD"}


def test_snapshot_follows_event_time_across_the_three_lists(client: AppClient, env: Env) -> None:
    base = int(time.time() * 1000)

    def decision(insert_id: str, timestamp: int) -> dict[str, Any]:
        common = {"insertId": insert_id, "timestamp": timestamp, "userId": None, "identifiers": {"$userId": "u1"}}
        return {**common, "userProperties": {}, "hackleProperties": {}, "properties": {}}

    body = {
        "exposureEvents": [decision("before", base), decision("after", base + 20)],
        "trackEvents": [track_event("$properties", user_id="u1", properties={"$set": {"g": 1}}, timestamp=base + 10)],
        "remoteConfigEvents": [decision("later", base + 30)],
    }
    assert client.post("/api/v2/events", json=body, headers=sdk_headers(env)).status_code == 200
    snapshots = {e["insertId"]: e["userProperties"] for e in events_of(client, env, "u1")["events"]}
    assert (snapshots["before"], snapshots["after"], snapshots["later"]) == ({}, {"g": 1}, {"g": 1})


def test_snapshot_survives_later_updates_and_clear_all(client: AppClient, env: Env) -> None:
    _set(client, env, "u1", grade="SILVER", age=30)
    send(client, env, track_event("purchase", user_id="u1", value=12.5, properties={"sku": "p-1"}))
    response = client.post(
        "/v1/properties", json={"userId": "u1", "operations": {"$clearAll": {"x": "-"}}}, headers=env.headers
    )
    assert response.status_code == 200
    event = by_key(events_of(client, env, "u1"))["purchase"]
    assert event["userProperties"] == {"grade": "SILVER", "age": 30}
    assert (event["value"], event["properties"], event["identifiers"]) == (12.5, {"sku": "p-1"}, {"$userId": "u1"})


def test_snapshot_keeps_the_sdk_user_properties_apart(client: AppClient, env: Env) -> None:
    _set(client, env, "u1", grade="SILVER")
    event = track_event("A", user_id="u1")
    event["userProperties"] = {"grade": "sent-by-sdk"}
    event["hackleProperties"] = {"platform": "server"}
    send(client, env, event)
    stored = by_key(events_of(client, env, "u1"))["A"]
    assert stored["userProperties"] == {"grade": "SILVER"}
    assert stored["context"] == {"userProperties": {"grade": "sent-by-sdk"}, "hackleProperties": {"platform": "server"}}


# -- identity -----------------------------------------------------------------------------------------


def test_events_of_a_linked_device_resolve_to_its_user(client: AppClient, env: Env) -> None:
    send(client, env, track_event("first", user_id="u1", device_id="d1"))
    send(client, env, track_event("later", device_id="d1"))
    events = by_key(events_of(client, env, "u1"))
    assert set(events) == {"first", "later"}
    assert events["later"]["identifiers"] == {"$deviceId": "d1"}
    assert [d["deviceId"] for d in client.user(env, "u1")["devices"]] == ["d1"]


def test_events_hackle_id_without_user_or_device_is_the_user(client: AppClient, env: Env) -> None:
    event = track_event("A")
    event["userId"] = "hackle-id"
    event["identifiers"] = {"$id": "hackle-id"}
    send(client, env, event)
    assert [e["key"] for e in events_of(client, env, "hackle-id")["events"]] == ["A"]


def test_events_track_creates_the_profile(client: AppClient, env: Env) -> None:
    _track(client, env, "signup", userId="new-user", deviceId="new-device")
    user = client.user(env, "new-user")
    assert user["properties"] == {}
    assert [d["deviceId"] for d in user["devices"]] == ["new-device"]


# -- idempotency --------------------------------------------------------------------------------------


def test_events_duplicate_insert_ids_counted_once(client: AppClient, env: Env) -> None:
    increment = track_event("$properties", user_id="u1", properties={"$increment": {"n": 1}}, insert_id="same")
    send(client, env, increment, dict(increment), track_event("A", user_id="u1", insert_id="a"))
    send(client, env, increment, track_event("A", user_id="u1", insert_id="a"))
    assert client.user(env, "u1")["properties"] == {"n": 1}
    assert sorted(e["insertId"] for e in events_of(client, env, "u1")["events"]) == ["a", "same"]


def test_events_concurrent_duplicate_batches_applied_once(client: AppClient, env: Env) -> None:
    events = [
        track_event("$properties", user_id="u1", properties={"$increment": {"n": 1}}, insert_id=f"inc-{i}")
        for i in range(5)
    ]
    call = ("POST", "/api/v2/events", {"json": batch(*events), "headers": sdk_headers(env)})
    responses = client.gather([call] * 30)
    assert {r.status_code for r in responses} == {200}
    assert client.user(env, "u1")["properties"] == {"n": 5}
    assert len(events_of(client, env, "u1")["events"]) == 5


def test_track_insert_id_makes_the_http_call_idempotent(client: AppClient, env: Env) -> None:
    body = {"insertId": "once", "event": {"key": "A", "value": 2}, "user": {"userId": "u1"}}
    for _ in range(3):
        assert client.post("/v1/track", json=body, headers=env.headers).status_code == 200
    events = events_of(client, env, "u1")["events"]
    assert [(e["insertId"], e["value"]) for e in events] == [("once", 2.0)]


# -- rejection ----------------------------------------------------------------------------------------

_GOOD = {"$set": {"a": 1}}


def _bad(**changes: Any) -> dict[str, Any]:
    event = track_event("$properties", user_id="u1", properties={"$set": {"b": 2}})
    event.update(changes)
    return event


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        pytest.param(_bad(insertId=7), "INVALID_REQUEST", id="insert-id-not-string"),
        pytest.param(_bad(insertId=""), "INVALID_REQUEST", id="insert-id-empty"),
        pytest.param(_bad(timestamp="now"), "INVALID_REQUEST", id="timestamp-not-number"),
        pytest.param(_bad(eventTypeKey=None), "INVALID_REQUEST", id="no-event-key"),
        pytest.param(_bad(eventTypeKey="x" * 257), "INVALID_REQUEST", id="event-key-too-long"),
        pytest.param(_bad(value="12"), "INVALID_REQUEST", id="value-not-number"),
        pytest.param(_bad(timestamp=2**63), "INVALID_REQUEST", id="timestamp-out-of-range"),
        pytest.param(_bad(insertId="a\x00b"), "INVALID_REQUEST", id="insert-id-nul"),
        pytest.param(_bad(identifiers={"$userId": "u\x00"}), "INVALID_REQUEST", id="user-id-nul"),
        pytest.param(_bad(identifiers={}), "EMPTY_IDENTIFIER", id="names-nobody"),
        pytest.param(_bad(identifiers={"$userId": "u" * 300}), "INVALID_REQUEST", id="user-id-too-long"),
        pytest.param(_bad(properties={"$rename": {"a": "b"}}), "INVALID_REQUEST", id="unknown-operation"),
        pytest.param(_bad(properties={"$set": {"a": {"nested": 1}}}), "INVALID_REQUEST", id="object-value"),
        pytest.param(_bad(properties={"$set": {"$a": 1}}), "INVALID_REQUEST", id="reserved-key"),
        pytest.param(
            _bad(eventTypeKey="purchase", properties={"k": {"nested": 1}}), "INVALID_REQUEST", id="track-object"
        ),
        pytest.param(
            _bad(eventTypeKey="$push_subscriptions", properties={"$marketing": "YES"}),
            "INVALID_REQUEST",
            id="bad-consent-status",
        ),
        pytest.param(
            _bad(eventTypeKey="$secured_properties", properties={"$set": {"$phone_number": "12"}}),
            "INVALID_PHONE_NUMBER",
            id="bad-phone",
        ),
        pytest.param(
            _bad(eventTypeKey="$push_token", properties={"provider_type": "FCM", "token": "t"}),
            "INVALID_REQUEST",
            id="token-without-device",
        ),
        pytest.param(
            _bad(eventTypeKey="$push_click", properties={"push_message_key": "seven"}),
            "INVALID_REQUEST",
            id="click-bad-key",
        ),
        pytest.param(
            _bad(eventTypeKey="$push_click", properties={"push_message_key": 2**40}),
            "INVALID_REQUEST",
            id="click-key-out-of-range",
        ),
        # Rejected inside the writer job, after the earlier event changed the profile in memory.
        pytest.param(
            _bad(properties={"$set": {f"p{i}": i for i in range(128)}}), "INVALID_REQUEST", id="over-128-properties"
        ),
        pytest.param(
            _bad(
                identifiers={"$deviceId": "anonymous"},
                eventTypeKey="$sms_subscriptions",
                properties={"$marketing": "SUBSCRIBED"},
            ),
            "EMPTY_IDENTIFIER",
            id="sms-consent-without-user",
        ),
    ],
)
def test_events_bad_batch_rejected_whole(client: AppClient, env: Env, bad: dict[str, Any], code: str) -> None:
    good = track_event("$properties", user_id="u1", properties=_GOOD, insert_id="good")
    tracked = track_event("seen", user_id="u1")
    response = client.post("/api/v2/events", json=batch(good, tracked, bad), headers=sdk_headers(env))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert client.get(f"/admin/v1/environments/{env.name}/users/u1", headers=env.admin).status_code == 404
    assert events_of(client, env, "u1")["events"] == []
    # The same good events, alone, are accepted afterwards: nothing of them was left behind.
    send(client, env, good, tracked)
    assert client.user(env, "u1")["properties"] == {"a": 1}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{not json", id="malformed"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'{"trackEvents": {}}', id="track-events-not-list"),
    ],
)
def test_events_malformed_body_is_400(client: AppClient, env: Env, body: bytes) -> None:
    response = client.post("/api/v2/events", content=body, headers=sdk_headers(env))
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_REQUEST"


def test_events_batch_over_limit_is_400(client: AppClient, env: Env) -> None:
    events = [track_event("A", user_id="u1") for _ in range(1001)]
    response = client.post("/api/v2/events", json=batch(*events), headers=sdk_headers(env))
    assert response.status_code == 400
    assert "1000" in response.json()["message"]


def test_events_empty_batch_is_accepted(client: AppClient, env: Env) -> None:
    assert send(client, env) == {"message": "success"}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, "API_KEY_NOT_FOUND", id="missing"),
        pytest.param({"X-HACKLE-SDK-KEY": "nope"}, "INVALID_API_KEY", id="unknown-sdk-key"),
        pytest.param({"X-HACKLE-API-KEY": "nope"}, "INVALID_API_KEY", id="unknown-api-key"),
    ],
)
@pytest.mark.parametrize("path", ["/api/v2/events", "/v1/track"])
def test_events_need_the_environment_key(
    client: AppClient, env: Env, path: str, headers: dict[str, str], code: str
) -> None:
    response = client.post(path, json=batch(), headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == code


def test_events_accept_the_key_as_api_key_too(client: AppClient, env: Env) -> None:
    response = client.post("/api/v2/events", json=batch(track_event("A", user_id="u1")), headers=env.headers)
    assert response.status_code == 200
    assert [e["key"] for e in events_of(client, env, "u1")["events"]] == ["A"]


def test_events_key_of_another_environment_sees_nothing(client: AppClient, env: Env) -> None:
    from tests.support import make_env

    other = make_env(client.app.db)
    send(client, other, track_event("A", user_id="u1"))
    assert events_of(client, env, "u1")["events"] == []
    assert len(events_of(client, other, "u1")["events"]) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"event": {"key": "A"}, "user": {}}, "EMPTY_IDENTIFIER", id="no-identifier"),
        pytest.param({"event": {"key": ""}, "user": {"userId": "u"}}, "INVALID_REQUEST", id="empty-key"),
        pytest.param({"event": {"value": 1}, "user": {"userId": "u"}}, "INVALID_REQUEST", id="no-key"),
        pytest.param({"user": {"userId": "u"}}, "INVALID_REQUEST", id="no-event"),
        pytest.param({"event": {"key": "A"}, "user": {"userId": 5}}, "INVALID_REQUEST", id="user-id-number"),
    ],
)
def test_track_invalid_body_is_400(client: AppClient, env: Env, body: dict[str, Any], code: str) -> None:
    response = client.post("/v1/track", json=body, headers=env.headers)
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_track_applies_system_events_like_the_sdk(client: AppClient, env: Env) -> None:
    body = {"event": {"key": "$properties", "properties": {"$set": {"grade": "GOLD"}}}, "user": {"userId": "u1"}}
    assert client.post("/v1/track", json=body, headers=env.headers).status_code == 200
    assert client.user(env, "u1")["properties"] == {"grade": "GOLD"}


# -- reads --------------------------------------------------------------------------------------------


def test_admin_events_are_newest_first_and_paginated(client: AppClient, env: Env) -> None:
    base = int(time.time() * 1000)
    send(client, env, *[track_event(f"e{i}", user_id="u1", timestamp=base + i) for i in range(5)])
    send(client, env, track_event("tie", user_id="u1", timestamp=base + 2, insert_id="zzz"))
    seen: list[str] = []
    cursor = None
    while True:
        page = events_of(client, env, "u1", limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(page["events"]) <= 2
        seen.extend(e["key"] for e in page["events"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ["e4", "e3", "tie", "e2", "e1", "e0"]


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "x"}, {"cursor": "nonsense"}])
def test_admin_events_bad_query_is_400(client: AppClient, env: Env, query: dict[str, str]) -> None:
    response = client.get(f"/admin/v1/environments/{env.name}/users/u1/events", params=query, headers=env.admin)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_REQUEST"


def test_admin_events_need_the_admin_token(client: AppClient, env: Env) -> None:
    response = client.get(f"/admin/v1/environments/{env.name}/users/u1/events", headers=env.headers)
    assert response.status_code == 401


# -- retention ----------------------------------------------------------------------------------------


def test_retention_purge_deletes_only_events_past_retention(client: AppClient, env: Env) -> None:
    send(client, env, track_event("A", user_id="u1"))
    ctx = client.app.ctx
    assert ctx is not None
    now = int(time.time() * 1000)
    kept = client.run(purge_expired(writer=ctx.writer, retention_days=30, now_ms=now + 29 * 86_400_000))
    assert kept == 0
    assert len(events_of(client, env, "u1")["events"]) == 1
    # Small chunks, so that the purge takes several; the store is shared with the rest of the suite (on PostgreSQL),
    # whose events are all past retention at that time too: one event a chunk would take minutes.
    purged = client.run(purge_expired(writer=ctx.writer, retention_days=30, now_ms=now + 31 * 86_400_000, chunk=64))
    assert purged >= 1
    assert events_of(client, env, "u1")["events"] == []
    assert client.user(env, "u1")["userId"] == "u1"  # the profile is not an event: it stays


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_retention_runs_periodically_in_the_server(settings: Settings, writer: str) -> None:
    from tests.support import make_env

    configured = settings.with_(event_retention_days=1, event_purge_interval_seconds=0.05, writer=writer)
    with AppClient(configured) as client:
        env = make_env(client.app.db)
        send(client, env, track_event("old", user_id="u1"))
        ctx = client.app.ctx
        assert ctx is not None
        assert ctx.runtime.retention.running
        reads: list[float] = []

        def real_time() -> float:
            reads.append(time.time())
            return reads[-1]

        # Each purge reads the clock once before it runs: a second read means a purge has finished.
        ctx.runtime.clock = real_time
        eventually(lambda: len(reads) >= 2)
        assert len(events_of(client, env, "u1")["events"]) == 1  # younger than a day: kept
        ctx.runtime.clock = lambda: time.time() + 2 * 86_400
        eventually(lambda: events_of(client, env, "u1")["events"] == [])


def test_retention_disabled_with_zero_days(settings: Settings) -> None:
    with AppClient(settings.with_(event_retention_days=0, event_purge_interval_seconds=0.01)) as client:
        ctx = client.app.ctx
        assert ctx is not None
        assert not ctx.runtime.retention.running


def test_unique_insert_ids_per_environment(client: AppClient, env: Env) -> None:
    from tests.support import make_env

    other = make_env(client.app.db)
    insert_id = str(uuid.uuid4())
    send(client, env, track_event("A", user_id="u1", insert_id=insert_id))
    send(client, other, track_event("A", user_id="u1", insert_id=insert_id))
    assert len(events_of(client, other, "u1")["events"]) == 1
