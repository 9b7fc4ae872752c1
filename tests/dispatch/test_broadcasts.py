"""Broadcasts end to end on both engines: occurrences planned into dispatches the worker delivers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import (
    AppClient,
    Env,
    FakeClock,
    add_token,
    apply_campaign,
    close_dispatcher,
    drain,
    inbox,
    make_dispatcher,
    run_dispatcher,
    trigger,
)


def _users(client: AppClient, env: Env, n: int, *, with_token: int) -> list[str]:
    ids = [f"user-{i:04d}" for i in range(n)]
    for i, user_id in enumerate(ids):
        response = client.post(
            "/v1/properties",
            json={"userId": user_id, "operations": {"$set": {"grade": "GOLD" if i % 2 else "SILVER"}}},
            headers=env.headers,
        )
        assert response.status_code == 200, response.text
        if i < with_token:
            add_token(client, env, device_id=f"dev-{i}", token=f"tok-{i}", user_id=user_id)
    return ids


def _scheduler(client: AppClient, clock: Any = None, **settings: Any) -> Any:
    import time

    from magpie.dispatch.scheduler import Scheduler

    ctx = client.app.ctx
    assert ctx is not None
    merged = client.settings.with_(**settings) if settings else client.settings

    async def build() -> Any:
        return Scheduler(ctx.runtime, settings=merged, clock=clock or time.time)

    return client.run(build())


def _occurrence(client: AppClient, env: Env, occurrence_id: int) -> dict[str, Any]:
    response = client.get(f"/admin/v1/environments/{env.name}/occurrences/{occurrence_id}", headers=env.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_send_now_reaches_each_reachable_user_once(client: AppClient, env: Env) -> None:
    _users(client, env, 12, with_token=8)
    apply_campaign(client, env)
    reach = client.get(f"/admin/v1/environments/{env.name}/campaigns/7/reach", headers=env.admin).json()
    assert reach == {
        "channel": "push",
        "users": 12,
        "audience": 12,
        "reachable": 8,
        "unreachable": {"NO_PUSH_TOKEN": 4},
    }
    started = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin)
    assert started.status_code == 200, started.text
    occurrence_id = started.json()["occurrence"]["id"]
    scheduler = _scheduler(client, broadcast_page_size=3)
    client.run(scheduler.tick())
    planned = _occurrence(client, env, occurrence_id)
    assert planned["occurrence"]["state"] == "sending"
    assert planned["progress"]["planned"] == 8
    assert planned["occurrence"]["unreachable"] == {"NO_PUSH_TOKEN": 4}
    dispatcher = make_dispatcher(client)
    try:
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    client.run(scheduler.tick())
    done = _occurrence(client, env, occurrence_id)
    assert done["occurrence"]["state"] == "completed"
    assert done["progress"]["sent"] == 8 and done["progress"]["remaining"] == 0
    tokens = sorted(m["token"] for m in inbox(client, env))
    assert tokens == sorted(f"tok-{i}" for i in range(8))
    base = f"/admin/v1/environments/{env.name}/campaigns/7/occurrence-statistics"
    stats = client.get(base, headers=env.admin).json()["occurrences"]
    assert [
        (s["occurrence"]["id"], s["progress"]["planned"], s["progress"]["sent"], s["progress"]["remaining"])
        for s in stats
    ] == [(occurrence_id, 8, 8, 0)]
    exported = client.get(base + "?format=csv", headers=env.admin)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    import csv

    (row,) = list(csv.DictReader(exported.text.splitlines()))
    assert (row["occurrence"], row["state"], row["planned"], row["sent"], row["remaining"]) == (
        str(occurrence_id),
        "completed",
        "8",
        "8",
        "0",
    )
    assert row["not_reachable"] == "NO_PUSH_TOKEN 4" and row["finished_at"].endswith("Z")
    refused = client.get(base + "?format=xml", headers=env.admin)
    assert refused.status_code == 400 and "format" in refused.json()["message"]


def _planned_users(client: AppClient, occurrence_id: int) -> list[str]:
    db = client.app.db
    with db.transaction(write=False) as conn:
        rows = db.fetchall(conn, "SELECT user_id FROM broadcast_recipients WHERE occurrence_id = ?", (occurrence_id,))
        users: list[str] = []
        for (dispatch_id,) in db.fetchall(
            conn, "SELECT dispatch_id FROM broadcast_dispatches WHERE occurrence_id = ?", (occurrence_id,)
        ):
            row = db.fetchone(conn, "SELECT users FROM dispatches WHERE id = ?", (dispatch_id,))
            assert row is not None
            import json

            users += [u["userId"] for u in json.loads(row[0])]
    assert sorted(r[0] for r in rows) == sorted(users)
    return users


def test_replanning_after_a_lost_lease_never_adds_a_user_twice(client: AppClient, env: Env) -> None:
    from magpie.store.broadcasts import ClaimOccurrence, CreateOccurrence, OccurrenceKind, PlanPage

    ids = _users(client, env, 10, with_token=10)
    apply_campaign(client, env)
    writer = client.app.ctx.runtime.writer  # type: ignore[union-attr]
    occurrence_id = writer.run_sync(
        CreateOccurrence(env_id=env.id, campaign_key=7, slot_ms=1, channel="push", kind=OccurrenceKind.NOW)
    )
    # A first planner enqueues one page, then dies (its lease lapses) before moving on.
    first = writer.run_sync(ClaimOccurrence(owner="a", now_ms=10, lease_ms=5))
    assert first is not None and first.id == occurrence_id
    page = {
        "occurrence_id": occurrence_id,
        "env_id": env.id,
        "campaign_key": 7,
        "channel": "push",
        "unreachable": {},
        "lease_ms": 5,
    }
    assert (writer.run_sync(PlanPage(owner="a", users=ids[:4], last=ids[3], **page))) == 4  # type: ignore[arg-type]
    # A second planner takes over; even asked to plan the same users again, it adds only the others.
    second = writer.run_sync(ClaimOccurrence(owner="b", now_ms=2**50, lease_ms=60_000))
    assert second is not None and second.cursor == ids[3]
    assert (writer.run_sync(PlanPage(owner="b", users=ids, last=ids[-1], **page))) == 6  # type: ignore[arg-type]
    # The first planner, back from the dead, may write nothing.
    assert (writer.run_sync(PlanPage(owner="a", users=ids, last=ids[-1], **page))) is None  # type: ignore[arg-type]
    assert sorted(_planned_users(client, occurrence_id)) == ids


def test_cancel_sends_nothing_more_and_gives_every_recipient_an_outcome(client: AppClient, env: Env) -> None:
    _users(client, env, 6, with_token=6)
    apply_campaign(client, env)
    occurrence_id = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin).json()[
        "occurrence"
    ]["id"]
    client.run(_scheduler(client, broadcast_page_size=2).tick())
    cancelled = client.post(f"/admin/v1/environments/{env.name}/occurrences/{occurrence_id}/cancel", headers=env.admin)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["occurrence"]["state"] == "cancelled"
    assert body["progress"]["excludedBy"] == {"BROADCAST_CANCELLED": 6} and body["progress"]["remaining"] == 0
    db = client.app.db
    with db.transaction(write=False) as conn:
        assert db.fetchall(conn, "SELECT id FROM work_items WHERE env_id = ? AND done = 0", (env.id,)) == []
    dispatcher = make_dispatcher(client)
    try:
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    assert inbox(client, env) == []
    stats = client.get(f"/admin/v1/environments/{env.name}/campaigns/7/stats", headers=env.admin).json()
    # The campaign's statistics count the occurrence with the same definitions as triggers.
    assert (stats["requested"], stats["excluded"], stats["pending"]) == (6, {"BROADCAST_CANCELLED": 6}, 0)
    again = client.post(f"/admin/v1/environments/{env.name}/occurrences/{occurrence_id}/resume", headers=env.admin)
    assert again.status_code == 409 and again.json()["code"] == "CONFLICT"


def test_pause_holds_waiting_batches_until_resumed(client: AppClient, env: Env) -> None:
    _users(client, env, 4, with_token=4)
    apply_campaign(client, env)
    occurrence_id = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin).json()[
        "occurrence"
    ]["id"]
    client.run(_scheduler(client).tick())
    url = f"/admin/v1/environments/{env.name}/occurrences/{occurrence_id}"
    assert client.post(url + "/pause", headers=env.admin).json()["occurrence"]["state"] == "paused"
    dispatcher = make_dispatcher(client)
    try:
        drain(client, dispatcher)
        assert inbox(client, env) == []
        resumed = client.post(url + "/resume", headers=env.admin).json()
        assert resumed["occurrence"]["state"] == "sending"
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    assert _occurrence(client, env, occurrence_id)["progress"]["sent"] == 4


def test_test_send_goes_to_named_users_only_and_at_most_five(client: AppClient, env: Env) -> None:
    _users(client, env, 8, with_token=8)
    apply_campaign(client, env)
    url = f"/admin/v1/environments/{env.name}/campaigns/7/test-send"
    too_many = client.post(url, json={"userIds": [f"user-{i:04d}" for i in range(6)]}, headers=env.admin)
    assert too_many.status_code == 400 and too_many.json()["code"] == "INVALID_REQUEST"
    sent = client.post(url, json={"userIds": ["user-0001", "user-0002"]}, headers=env.admin)
    assert sent.status_code == 200, sent.text
    assert sent.json()["occurrence"]["kind"] == "TEST" and sent.json()["progress"]["planned"] == 2
    dispatcher = make_dispatcher(client)
    try:
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    sandbox = inbox(client, env)
    assert sorted(m["token"] for m in sandbox) == ["tok-1", "tok-2"]
    assert [m["message"]["hackle"]["test"] for m in sandbox] == [True, True]
    # The same campaign sent for real carries no test mark.
    trigger(client, env, [{"userId": "user-0003"}])
    run_dispatcher(client)
    (real,) = [m for m in inbox(client, env) if m["token"] == "tok-3"]
    assert "test" not in real["message"]["hackle"]


def test_test_send_is_marked_in_the_request_fcm_receives(client: AppClient, env: Env) -> None:
    import json

    from tests.fakes.fcm import FakeFcm
    from tests.support import provider_settings

    with FakeFcm() as fcm:
        providers = {"settings": {"providers": provider_settings(fcm=fcm)}}
        assert client.put(f"/admin/v1/environments/{env.name}", json=providers, headers=env.admin).status_code == 200
        _users(client, env, 2, with_token=2)
        apply_campaign(client, env, provider="push")
        sent = client.post(
            f"/admin/v1/environments/{env.name}/campaigns/7/test-send",
            json={"userIds": ["user-0000"]},
            headers=env.admin,
        )
        assert sent.status_code == 200, sent.text
        run_dispatcher(client)
        trigger(client, env, [{"userId": "user-0001"}])
        run_dispatcher(client)
        marks = {
            r.json["message"]["token"]: json.loads(r.json["message"]["data"]["hackle"]).get("test")
            for r in fcm.requests
        }
    assert marks == {"tok-0": True, "tok-1": None}


def test_kakao_reach_counts_users_without_a_phone_number(client: AppClient, env: Env) -> None:
    _users(client, env, 3, with_token=0)
    phone = client.post(
        "/v1/properties/phone-numbers",
        json={"userId": "user-0000", "phoneNumber": "010-1234-5678"},
        headers=env.headers,
    )
    assert phone.status_code == 200, phone.text
    apply_campaign(
        client,
        env,
        key=8,
        channel="kakao",
        type="alimtalk",
        provider="sandbox",
        message={"templateCode": "T1", "text": "안녕하세요"},
    )
    reach = client.get(f"/admin/v1/environments/{env.name}/campaigns/8/reach", headers=env.admin).json()
    assert reach["channel"] == "kakao" and reach["reachable"] == 1 and reach["unreachable"] == {"NO_PHONE_NUMBER": 2}


def test_audience_conditions_select_who_is_planned(client: AppClient, env: Env) -> None:
    _users(client, env, 6, with_token=6)
    gold = {
        "targets": [
            {
                "conditions": [
                    {
                        "key": {"type": "USER_PROPERTY", "name": "grade"},
                        "match": {"type": "MATCH", "operator": "IN", "valueType": "STRING", "values": ["GOLD"]},
                    }
                ]
            }
        ]
    }
    apply_campaign(client, env, audience=gold)
    reach = client.get(f"/admin/v1/environments/{env.name}/campaigns/7/reach", headers=env.admin).json()
    assert reach["audience"] == 3 and reach["reachable"] == 3


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        pytest.param({"type": "once", "at": "2020-01-01T10:00"}, "in the past", id="past"),
        pytest.param({"type": "daily", "time": "10:00", "timezone": "Mars/Base"}, "unknown time zone", id="zone"),
        pytest.param({"type": "cron", "cron": "0 0 31 4 *"}, "never fires", id="never"),
    ],
)
def test_apply_refuses_a_bad_schedule_and_changes_nothing(
    client: AppClient, env: Env, schedule: dict[str, Any], message: str
) -> None:
    definition = {
        "key": 9,
        "name": "Winter sale",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "provider": "sandbox",
        "message": {"title": "t", "body": "b"},
        "schedule": schedule,
    }
    response = client.post(f"/admin/v1/environments/{env.name}/campaigns", json=definition, headers=env.admin)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_CAMPAIGN" and message in response.json()["message"]
    assert client.get(f"/admin/v1/environments/{env.name}/campaigns/9", headers=env.admin).status_code == 404


def test_apply_refuses_a_scheduled_push_campaign_without_a_provider(client: AppClient, env: Env) -> None:
    definition = {
        "key": 9,
        "name": "Winter sale",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "provider": "push",
        "message": {"title": "t", "body": "b"},
        "schedule": {"type": "daily", "time": "10:00"},
    }
    response = client.post(f"/admin/v1/environments/{env.name}/campaigns", json=definition, headers=env.admin)
    assert response.status_code == 400 and "no fcm or apns" in response.json()["message"]


@pytest.mark.pg
@pytest.mark.parametrize("backend", [pytest.param("pg", id="pg")])
def test_two_schedulers_racing_create_one_occurrence_per_slot(client: AppClient, env: Env, backend: str) -> None:
    """Two schedulers, each with its own runtime (writer, connections), on one PostgreSQL."""
    import asyncio
    import time

    from magpie.dispatch.scheduler import Scheduler
    from magpie.runtime import Runtime

    _users(client, env, 5, with_token=5)
    apply_campaign(client, env, schedule={"type": "cron", "cron": "* * * * *"})
    db = client.app.db
    with db.transaction() as conn:  # applied a while ago, so that missed minutes are due
        db.execute(
            conn, "UPDATE campaigns SET updated_at = ? WHERE env_id = ?", (int(time.time() * 1000) - 3_600_000, env.id)
        )
    settings = client.settings.with_(broadcast_catch_up="all")

    async def race() -> list[list[int]]:
        runtimes = [Runtime.open(settings, migrate=False) for _ in range(2)]
        try:
            schedulers = [Scheduler(r, settings=settings) for r in runtimes]
            created = await asyncio.gather(*(s.create_due() for s in schedulers))
            await asyncio.gather(*(s.plan_one() for s in schedulers))
            await asyncio.gather(*(s.plan_one() for s in schedulers))
            return list(created)
        finally:
            for r in runtimes:
                await r.close()

    created = client.run(race())
    with db.transaction(write=False) as conn:
        slots = db.fetchall(
            conn, "SELECT slot_ms, COUNT(*) FROM broadcast_occurrences WHERE env_id = ? GROUP BY slot_ms", (env.id,)
        )
    assert len(slots) >= 59 and all(n == 1 for _, n in slots)
    assert sorted(created[0] + created[1]) == sorted(set(created[0] + created[1]))
    assert len(created[0]) + len(created[1]) == len(slots)


def test_rate_per_minute_hands_the_workers_no_more_than_the_rate(client: AppClient, env: Env) -> None:
    _users(client, env, 25, with_token=25)
    apply_campaign(client, env, schedule={"type": "daily", "time": "10:00", "ratePerMinute": 60})
    occurrence_id = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin).json()[
        "occurrence"
    ]["id"]
    client.run(_scheduler(client).tick())
    planned = _occurrence(client, env, occurrence_id)
    assert (planned["occurrence"]["state"], planned["progress"]["planned"]) == ("sending", 25), planned
    db = client.app.db
    with db.transaction(write=False) as conn:
        started = db.fetchone(conn, "SELECT started_at FROM broadcast_occurrences WHERE id = ?", (occurrence_id,))
        items = db.fetchall(
            conn,
            "SELECT b.size, w.available_at FROM work_items w JOIN broadcast_dispatches b "
            "ON b.dispatch_id = w.dispatch_id "
            "WHERE b.occurrence_id = ? ORDER BY w.available_at",
            (occurrence_id,),
        )
    assert started is not None
    # 60 a minute: ten users each ten seconds.
    assert [size for size, _ in items] == [10, 10, 5]
    offsets = [at - started[0] for _, at in items]
    assert offsets[0] < 10_000 and offsets[1:] == [10_000, 20_000]
    # One second after the start, however long planning took here: only the first ten are due.
    dispatcher = make_dispatcher(client, clock=FakeClock(started[0] / 1000 + 1))
    try:
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    assert len(inbox(client, env)) == 10


def test_an_occurrence_running_into_the_night_holds_its_marketing_remainder(client: AppClient, env: Env) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from tests.support import FakeClock

    ids = _users(client, env, 4, with_token=4)
    for user_id in ids:
        consent = {"userId": user_id, "marketingSubscriptionStatus": "SUBSCRIBED"}
        assert client.post("/v1/push-subscriptions", json=consent, headers=env.headers).status_code == 200
    apply_campaign(client, env, purpose="MARKETING", consentRule="SUBSCRIBED_ONLY")
    occurrence_id = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin).json()[
        "occurrence"
    ]["id"]
    client.run(_scheduler(client).tick())
    # The next 22:30 in Seoul: later than the work items' availability, inside the night window.
    seoul = ZoneInfo("Asia/Seoul")
    today = datetime.now(seoul)
    night = today.replace(hour=22, minute=30, second=0, microsecond=0).timestamp()
    if night <= today.timestamp():
        night += 86_400
    dispatcher = make_dispatcher(client, clock=FakeClock(night))
    try:
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    progress = _occurrence(client, env, occurrence_id)["progress"]
    assert progress["sent"] == 0, progress
    assert progress["held"] == 4 and progress["remaining"] == 4, progress
    assert inbox(client, env) == []


def test_a_test_send_held_for_the_night_keeps_its_test_mark(client: AppClient, env: Env) -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from tests.support import FakeClock

    _users(client, env, 2, with_token=2)
    for user_id in ("user-0000", "user-0001"):
        consent = {"userId": user_id, "marketingSubscriptionStatus": "SUBSCRIBED"}
        assert client.post("/v1/push-subscriptions", json=consent, headers=env.headers).status_code == 200
    apply_campaign(client, env, purpose="MARKETING", consentRule="SUBSCRIBED_ONLY")
    sent = client.post(
        f"/admin/v1/environments/{env.name}/campaigns/7/test-send",
        json={"userIds": ["user-0000"]},
        headers=env.admin,
    )
    assert sent.status_code == 200, sent.text
    seoul = ZoneInfo("Asia/Seoul")
    today = datetime.now(seoul)
    night = today.replace(hour=22, minute=30, second=0, microsecond=0)
    if night.timestamp() <= today.timestamp():
        night += timedelta(days=1)
    clock = FakeClock(night.timestamp())
    dispatcher = make_dispatcher(client, clock=clock)
    try:
        drain(client, dispatcher)
        assert inbox(client, env) == []  # held for the night
        clock.now = (night + timedelta(hours=12)).timestamp()  # the next morning
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    (message,) = inbox(client, env)
    assert message["token"] == "tok-0" and message["message"]["hackle"]["test"] is True


def test_a_due_slot_becomes_one_scheduled_occurrence_and_is_planned(client: AppClient, env: Env) -> None:
    import time

    _users(client, env, 3, with_token=3)
    apply_campaign(client, env, schedule={"type": "cron", "cron": "* * * * *"})
    db = client.app.db
    with db.transaction() as conn:  # applied three minutes ago: three slots missed
        db.execute(
            conn, "UPDATE campaigns SET updated_at = ? WHERE env_id = ?", (int(time.time() * 1000) - 180_000, env.id)
        )
    now = time.time()
    scheduler = _scheduler(client, clock=lambda: now, broadcast_catch_up="latest")
    client.run(scheduler.tick())
    client.run(scheduler.tick())  # a second look creates nothing more
    listed = client.get(f"/admin/v1/environments/{env.name}/campaigns/7/occurrences", headers=env.admin).json()
    assert [(o["kind"], o["state"], o["planned"]) for o in listed["occurrences"]] == [("SCHEDULED", "sending", 3)]
    assert listed["occurrences"][0]["slot"] % 60_000 == 0


def test_a_cohort_audience_reaches_its_members_by_user_or_device_id(client: AppClient, env: Env) -> None:
    _users(client, env, 6, with_token=6)
    cohort = {"members": ["user-0001", "dev-4", "someone-else"]}
    assert (
        client.put(f"/admin/v1/environments/{env.name}/cohorts/vip", json=cohort, headers=env.admin).status_code == 200
    )
    vip = {
        "targets": [
            {
                "conditions": [
                    {
                        "key": {"type": "COHORT"},
                        "match": {"type": "MATCH", "operator": "IN", "valueType": "STRING", "values": ["vip"]},
                    }
                ]
            }
        ]
    }
    apply_campaign(client, env, audience=vip)
    reach = client.get(f"/admin/v1/environments/{env.name}/campaigns/7/reach", headers=env.admin).json()
    assert (reach["audience"], reach["reachable"]) == (2, 2)


def test_apply_warns_when_a_scheduled_campaign_reaches_nobody(client: AppClient, env: Env) -> None:
    _users(client, env, 2, with_token=0)
    definition = {
        "key": 9,
        "name": "Nobody",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "provider": "sandbox",
        "message": {"title": "t", "body": "b"},
        "schedule": {"type": "daily", "time": "10:00"},
    }
    response = client.post(f"/admin/v1/environments/{env.name}/campaigns", json=definition, headers=env.admin)
    assert response.status_code == 200, response.text
    [warning] = response.json()["warnings"]
    assert "reaches nobody on push" in warning and "NO_PUSH_TOKEN 2" in warning
    unscheduled = {**definition, "key": 10}
    del unscheduled["schedule"]
    response = client.post(f"/admin/v1/environments/{env.name}/campaigns", json=unscheduled, headers=env.admin)
    assert response.json()["warnings"] == []


def _grade(operator: str, value_type: str, values: list[Any], match: str = "MATCH") -> dict[str, Any]:
    condition = {
        "key": {"type": "USER_PROPERTY", "name": "grade"},
        "match": {"type": match, "operator": operator, "valueType": value_type, "values": values},
    }
    return {"targets": [{"conditions": [condition]}]}


def _user_by_user(db: Any, env_id: int, campaign: Any) -> Any:
    """The reachable count from the source tables (profiles, devices, tokens, cohorts), user by user."""
    import msgspec

    from magpie.domain import delivery
    from magpie.domain.audience import Recipient
    from magpie.store.reach import Reach

    with db.transaction(write=False) as conn:
        profiles = {
            ident: (msgspec.json.decode(props), msgspec.json.decode(crm), phone is not None)
            for ident, props, crm, phone in db.fetchall(
                conn,
                "SELECT ident, properties, crm, phone_enc FROM profiles WHERE env_id = ? AND kind = 'u'",
                (env_id,),
            )
        }
        devices: dict[str, list[str]] = {}
        for ident, user in db.fetchall(
            conn,
            "SELECT ident, linked_user FROM profiles WHERE env_id = ? AND kind = 'd' AND linked_user IS NOT NULL",
            (env_id,),
        ):
            devices.setdefault(user, []).append(ident)
        live = {
            device
            for (device,) in db.fetchall(
                conn, "SELECT device_id FROM push_tokens WHERE env_id = ? AND status = 'ACTIVE'", (env_id,)
            )
        }
        members = set(db.fetchall(conn, "SELECT cohort, member FROM cohort_members WHERE env_id = ?", (env_id,)))
    users = audience = reachable = 0
    unreachable: dict[str, int] = {}
    for user in sorted({*profiles, *devices}):
        properties, crm, has_phone = profiles.get(user, ({}, {}, False))
        device_ids = tuple(devices.get(user, ()))
        known = {user, *device_ids}
        decision = delivery.decide(
            campaign=campaign,
            recipient=Recipient(user_id=user, device_ids=device_ids, properties=properties),
            crm=crm,
            has_push_token=any(d in live for d in device_ids),
            has_phone=has_phone,
            in_cohort=lambda name, known=known: any((name, i) in members for i in known),  # type: ignore[misc]
            now_ms=0,
            night=delivery.NightRule(),
        )
        users += 1
        if isinstance(decision, delivery.Exclude) and decision.reason == delivery.NOT_IN_AUDIENCE:
            continue
        audience += 1
        if isinstance(decision, delivery.Exclude) and decision.reason != delivery.NIGHT_TIME_DROPPED:
            unreachable[decision.reason] = unreachable.get(decision.reason, 0) + 1
        else:
            reachable += 1
    return Reach(channel=campaign.channel, users=users, audience=audience, reachable=reachable, unreachable=unreachable)


_VIP = {
    "targets": [
        {
            "conditions": [
                {
                    "key": {"type": "COHORT"},
                    "match": {"type": "MATCH", "operator": "IN", "valueType": "STRING", "values": ["vip"]},
                },
                {
                    "key": {"type": "USER_PROPERTY", "name": "grade"},
                    "match": {"type": "NOT_MATCH", "operator": "IN", "valueType": "STRING", "values": ["SILVER"]},
                },
            ]
        }
    ]
}


# A property whose name a JSON path cannot quote.
_QUOTED = {
    "targets": [
        {
            "conditions": [
                {
                    "key": {"type": "USER_PROPERTY", "name": 'say "hi"'},
                    "match": {"type": "MATCH", "operator": "GTE", "valueType": "NUMBER", "values": [1]},
                }
            ]
        }
    ]
}


@pytest.mark.parametrize(
    "campaign",
    [
        {"purpose": "MARKETING", "consentRule": "SUBSCRIBED_ONLY"},
        {"purpose": "MARKETING", "consentRule": "SUBSCRIBED_OR_UNKNOWN"},
        {"purpose": "INFORMATION", "audience": _grade("IN", "STRING", ["GOLD"], match="NOT_MATCH")},
        {"purpose": "MARKETING", "audience": _grade("GTE", "NUMBER", [3])},
        {"purpose": "INFORMATION", "audience": _VIP},
        {"purpose": "INFORMATION", "audience": _QUOTED},
        {
            "key": 8,
            "channel": "kakao",
            "type": "brand",
            "purpose": "MARKETING",
            "provider": "sandbox",
            "message": {"text": "겨울 세일"},
            "audience": _grade("IN", "STRING", ["GOLD", "VIP"]),
        },
        {
            "key": 8,
            "channel": "sms",
            "purpose": "INFORMATION",
            "provider": "sandbox",
            "message": {"text": "배송 안내"},
        },
    ],
    ids=[
        "subscribed-only",
        "all-but-unsubscribed",
        "not-gold",
        "number-gte",
        "cohort",
        "quoted-name",
        "kakao-brand",
        "sms",
    ],
)
def test_the_grouped_reach_counts_as_the_rules_do_user_by_user(
    client: AppClient, env: Env, campaign: dict[str, Any]
) -> None:
    from magpie.domain.campaigns import parse_campaign
    from magpie.store import broadcasts

    grades: list[Any] = ["GOLD", "SILVER", 3, "5", ["GOLD", "VIP"], None, 1.5, True]
    consent = [None, "SUBSCRIBED", "UNSUBSCRIBED"]

    def set_consent(user_id: str, status: str, *, information: bool) -> None:
        body = {"userId": user_id, "marketingSubscriptionStatus": status}
        if information:
            body["informationSubscriptionStatus"] = status
        for path in ("/v1/push-subscriptions", "/v1/kakao-subscriptions", "/v1/sms-subscriptions"):
            response = client.post(path, json=body, headers=env.headers)
            assert response.status_code == 200, response.text

    for i in range(24):
        user_id = f"user-{i:04d}"
        props = {} if grades[i % len(grades)] is None else {"grade": grades[i % len(grades)]}
        props['say "hi"'] = i % 3
        response = client.post(
            "/v1/properties", json={"userId": user_id, "operations": {"$set": props}}, headers=env.headers
        )
        assert response.status_code == 200, response.text
        status = consent[i % 3]
        if status is not None:
            set_consent(user_id, status, information=bool(i % 2))
        if i % 4:
            add_token(client, env, device_id=f"dev-{i}", token=f"tok-{i}", user_id=user_id)
        if i % 5 == 1:
            phone = client.post(
                "/v1/properties/phone-numbers",
                json={"userId": user_id, "phoneNumber": f"010-1234-{i:04d}"},
                headers=env.headers,
            )
            assert phone.status_code == 200, phone.text
    # A user id only a device was linked to, with a live token.
    add_token(client, env, device_id="dev-only", token="tok-only", user_id="user-devices-only")
    cohort = {"members": ["user-0001", "user-0002", "user-0012", "dev-5", "dev-6", "dev-only", "someone-else"]}
    assert (
        client.put(f"/admin/v1/environments/{env.name}/cohorts/vip", json=cohort, headers=env.admin).status_code == 200
    )
    raw = apply_campaign(client, env, **campaign)
    parsed = parse_campaign(raw)
    db = client.app.db
    reader = client.app.ctx.runtime.reader  # type: ignore[union-attr]

    def counts() -> tuple[Any, Any, Any]:
        grouped = reader.read_here(
            lambda conn: broadcasts.grouped_reach(conn, db=db, env_id=env.id, campaign=parsed, now_ms=0)
        )
        paged = broadcasts.reach(reader.read_here, db, env_id=env.id, campaign=parsed, now_ms=0, grouped=False)
        return grouped, paged, _user_by_user(db, env.id, parsed)

    grouped, paged, reference = counts()
    assert grouped == paged == reference
    assert grouped.users == 25 and grouped.reachable > 0 and sum(grouped.unreachable.values()) > 0
    # Consent, numbers, tokens and links change: the count follows, user for user.
    set_consent("user-0002", "SUBSCRIBED", information=True)  # was UNSUBSCRIBED
    set_consent("user-0004", "UNSUBSCRIBED", information=True)  # was SUBSCRIBED
    gone = client.delete("/v1/properties/phone-numbers", params={"userId": "user-0001"}, headers=env.headers)
    assert gone.status_code == 200, gone.text
    added = client.post(
        "/v1/properties/phone-numbers",
        json={"userId": "user-0002", "phoneNumber": "010-9999-0002"},
        headers=env.headers,
    )
    assert added.status_code == 200, added.text
    with db.transaction() as conn:  # as a provider's "unregistered" answer retires it
        db.execute(
            conn,
            "UPDATE push_tokens SET status = 'RETIRED', retired_reason = 'UNREGISTERED' WHERE env_id = ? AND token = ?",
            (env.id, "tok-1"),
        )
    add_token(client, env, device_id="dev-new", token="tok-2", user_id="user-0008")  # the token moves
    add_token(client, env, device_id="dev-3", token="tok-3", user_id="user-0012")  # the device moves
    add_token(client, env, device_id="dev-only", token="tok-only", user_id="user-0000")  # its user is gone
    grouped, paged, reference = counts()
    assert grouped == paged == reference
    assert grouped.users == 24


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "paged"])
def test_reach_counts_users_at_a_frequency_cap_as_not_reachable(client: AppClient, env: Env, grouped: bool) -> None:
    from magpie.domain.campaigns import parse_campaign
    from magpie.store import broadcasts

    settings = {"settings": {"frequencyCaps": [{"limit": 1, "windowHours": 24}]}}
    assert client.put(f"/admin/v1/environments/{env.name}", json=settings, headers=env.admin).status_code == 200
    users = [f"user-{i}" for i in range(5)]
    for user in users:
        add_token(client, env, device_id=f"dev-{user}", token=f"tok-{user}", user_id=user)
        consent = {"userId": user, "marketingSubscriptionStatus": "SUBSCRIBED", "nightSubscriptionStatus": "SUBSCRIBED"}
        assert client.post("/v1/push-subscriptions", json=consent, headers=env.headers).status_code == 200
    apply_campaign(client, env, purpose="MARKETING")
    # Two users get a marketing push now: one more would break the cap of one a day.
    trigger(client, env, [{"userId": u} for u in users[:2]])
    run_dispatcher(client)
    assert sorted(m["token"] for m in inbox(client, env)) == ["tok-user-0", "tok-user-1"]
    other = apply_campaign(client, env, key=9, purpose="MARKETING")
    reader = client.app.ctx.runtime.reader  # type: ignore[union-attr]
    import time

    found = broadcasts.reach(
        reader.read_here,
        client.app.db,
        env_id=env.id,
        campaign=parse_campaign(other),
        now_ms=int(time.time() * 1000),
        grouped=grouped,
    )
    assert (found.reachable, found.unreachable) == (3, {"FREQUENCY_CAP": 2})
    # An information push counts against no cap.
    info = apply_campaign(client, env, key=10, purpose="INFORMATION")
    reach = client.get(f"/admin/v1/environments/{env.name}/campaigns/10/reach", headers=env.admin).json()
    assert info["key"] == 10 and (reach["reachable"], reach["unreachable"]) == (5, {})


def test_the_gateway_limit_of_the_environment_throttles_an_occurrence_below_its_campaign_rate(
    client: AppClient, env: Env
) -> None:
    refused = client.put(
        f"/admin/v1/environments/{env.name}",
        json={"settings": {"gatewayRatePerMinute": {"fcm": 60}}},
        headers=env.admin,
    )
    assert refused.status_code == 400 and "gatewayRatePerMinute.fcm" in refused.json()["message"]
    limited = {"settings": {"gatewayRatePerMinute": {"sandbox": 60}}}
    assert client.put(f"/admin/v1/environments/{env.name}", json=limited, headers=env.admin).status_code == 200
    _users(client, env, 25, with_token=25)
    # The campaign allows 600 a minute; its gateway (the sandbox) 60: the lower one applies.
    apply_campaign(client, env, schedule={"type": "daily", "time": "10:00", "ratePerMinute": 600})
    started = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin)
    occurrence_id = started.json()["occurrence"]["id"]
    client.run(_scheduler(client).tick())
    db = client.app.db
    with db.transaction(write=False) as conn:
        (begun,) = db.fetchone(conn, "SELECT started_at FROM broadcast_occurrences WHERE id = ?", (occurrence_id,))
        items = db.fetchall(
            conn,
            "SELECT b.size, w.available_at FROM work_items w JOIN broadcast_dispatches b "
            "ON b.dispatch_id = w.dispatch_id WHERE b.occurrence_id = ? ORDER BY w.available_at",
            (occurrence_id,),
        )
    assert [size for size, _ in items] == [10, 10, 5]
    offsets = [at - begun for _, at in items]
    assert offsets[0] < 10_000 and offsets[1:] == [10_000, 20_000]
    # Without a gateway limit the campaign's own rate applies: 100 users each ten seconds, one slice.
    assert client.put(f"/admin/v1/environments/{env.name}", json={"settings": {}}, headers=env.admin).status_code == 200
    again = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin)
    client.run(_scheduler(client).tick())
    with db.transaction(write=False) as conn:
        sizes = db.fetchall(
            conn,
            "SELECT size FROM broadcast_dispatches WHERE occurrence_id = ?",
            (again.json()["occurrence"]["id"],),
        )
    assert [s for (s,) in sizes] == [25]


def test_an_outage_while_planning_leaves_the_occurrence_to_a_later_tick(
    client: AppClient, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from magpie.errors import ServiceUnavailable
    from magpie.store.broadcasts import PlanPage

    _users(client, env, 6, with_token=6)
    apply_campaign(client, env)
    occurrence_id = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin).json()[
        "occurrence"
    ]["id"]
    real_run = PlanPage.run

    def down(self: PlanPage, tx: Any) -> Any:
        raise ServiceUnavailable()

    monkeypatch.setattr(PlanPage, "run", down)
    with pytest.raises(ServiceUnavailable):
        client.run(_scheduler(client).tick())
    # Not the occurrence's fault: it is not failed, only waiting for its planner's lease to end.
    assert _occurrence(client, env, occurrence_id)["occurrence"]["state"] == "planning"
    monkeypatch.setattr(PlanPage, "run", real_run)
    later = _scheduler(client, clock=lambda: time.time() + client.settings.lease_seconds + 1)
    client.run(later.tick())
    again = _occurrence(client, env, occurrence_id)
    assert (again["occurrence"]["state"], again["progress"]["planned"]) == ("sending", 6), again


def test_an_api_only_process_plans_no_broadcast(settings: Any) -> None:
    """`MAGPIE_WORKERS=0`: no scheduler beside the API (one runs with the dispatch workers only)."""
    import time

    from tests.support import make_env

    for workers, planned in ((0, False), (1, True)):
        with AppClient(settings.with_(workers=workers, broadcast_poll_seconds=0.1)) as client:
            env = make_env(client.app.db)
            _users(client, env, 2, with_token=2)
            apply_campaign(client, env)
            sent = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin)
            occurrence_id = sent.json()["occurrence"]["id"]
            deadline = time.monotonic() + (1.0 if not planned else 20.0)
            state = "scheduled"
            while time.monotonic() < deadline and state == "scheduled":
                time.sleep(0.1)
                state = _occurrence(client, env, occurrence_id)["occurrence"]["state"]
            assert (state != "scheduled") == planned, (workers, state)
