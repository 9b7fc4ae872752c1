"""Experiments through the real app and worker: control group, variants, recorded arms, conversions."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from magpie.domain.campaigns import parse_campaign
from magpie.domain.events import Event
from magpie.domain.experiments import Control, Variant
from magpie.store.conversions import RecordExposures
from magpie.store.crypto import hash_secret
from magpie.store.events import StoreEvents
from magpie.store.writer import BatchRunner
from tests.dispatch.test_messages import run as run_messages
from tests.dispatch.test_messages import send as send_messages
from tests.dispatch.test_messages import setup as setup_messages
from tests.dispatch.test_messages import sms
from tests.dispatch.test_messages import user as add_user
from tests.dispatch.test_messages import view as view_messages
from tests.sdk.batches import send as send_events
from tests.sdk.batches import track_event
from tests.support import AppClient, Env, add_token, apply_campaign, dispatch, inbox, run_dispatcher, trigger

VARIANTS = [
    {"name": "A", "weight": 1, "message": {"title": "A for {{ user.id }}", "body": "a"}},
    {"name": "B", "weight": 1, "message": {"title": "B for {{ user.id }}", "body": "b"}},
]
EXPERIMENT: dict[str, Any] = {
    "goal": {"event": "purchase", "window": "1h", "value": "amount", "where": {"currency": "KRW"}},
    "controlGroup": 30,
    "variants": VARIANTS,
}


def _rows(client: AppClient, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    with client.app.db.transaction(write=False) as conn:
        return client.app.db.fetchall(conn, sql, params)


def _track(client: AppClient, env: Env, user_id: str, *, at: int, insert_id: str, **properties: Any) -> None:
    body = {
        "event": {"key": "purchase", "properties": properties},
        "user": {"userId": user_id},
        "timestamp": at,
        "insertId": insert_id,
    }
    response = client.post("/v1/track", json=body, headers=env.headers)
    assert response.status_code == 200, response.text


def _converted(client: AppClient, dispatch_id: str) -> set[str]:
    """The users of a dispatch with a conversion."""
    return {
        r[0]
        for r in _rows(
            client,
            "SELECT r.user_id FROM conversions c JOIN recipients r ON r.dispatch_id = c.dispatch_id "
            "AND r.idx = c.idx WHERE c.dispatch_id = ?",
            (dispatch_id,),
        )
    }


def _send(client: AppClient, env: Env, users: list[str]) -> tuple[str, dict[str, Any]]:
    for user in users:
        add_token(client, env, device_id=f"dev-{user}", token=f"tok-{user}", user_id=user)
    definition = apply_campaign(client, env, **EXPERIMENT)
    dispatch_id = trigger(client, env, [{"userId": u} for u in users[:50]])
    for start in range(50, len(users), 50):
        trigger(client, env, [{"userId": u} for u in users[start : start + 50]])
    run_dispatcher(client)
    return dispatch_id, definition


def test_experiment_control_is_excluded_and_variants_render_their_message(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(40)]
    dispatch_id, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    expected = {u: campaign.assign(user_key=f"u:{u}") for u in users}
    assert {type(a) for a in expected.values()} == {Control, Variant}, "the sample must hold both kinds"
    view = dispatch(client, env, dispatch_id)
    by_user = {r["userId"]: (r["outcome"], r["reason"]) for r in view["recipients"]}
    for user, arm in expected.items():
        if isinstance(arm, Control):
            assert by_user[user] == ("EXCLUDED", "CONTROL_GROUP")
        else:
            assert by_user[user] == ("SENT", None)
    titles = {m["message"]["title"] for m in inbox(client, env)}
    wanted = {f"{'AB'[a.index]} for {u}" for u, a in expected.items() if isinstance(a, Variant)}
    assert titles == wanted
    recorded = dict(_rows(client, "SELECT user_id, variant FROM recipients WHERE dispatch_id = ?", (dispatch_id,)))
    assert recorded == {u: (0 if isinstance(a, Control) else a.index + 1) for u, a in expected.items()}
    # Held out users are not counted against caps: no marketing reservation, no delivery row.
    held = [u for u, a in expected.items() if isinstance(a, Control)]
    assert not _rows(
        client,
        f"SELECT 1 FROM deliveries WHERE dispatch_id = ? AND user_key IN ({','.join('?' * len(held))})",
        (dispatch_id, *[f"u:{u}" for u in held]),
    )


def test_experiment_assignment_is_the_same_on_every_trigger(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(20)]
    first, _ = _send(client, env, users)
    second = trigger(client, env, [{"userId": u} for u in reversed(users)])
    run_dispatcher(client)
    one = dict(_rows(client, "SELECT user_id, variant FROM recipients WHERE dispatch_id = ?", (first,)))
    two = dict(_rows(client, "SELECT user_id, variant FROM recipients WHERE dispatch_id = ?", (second,)))
    assert one == two


def test_experiment_conversion_is_attributed_once_within_window_and_matching(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(30)]
    dispatch_id, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    (sent_at,) = _rows(client, "SELECT MIN(exposed_at) FROM exposures WHERE dispatch_id = ?", (dispatch_id,))[0]
    control = next(u for u in users if isinstance(campaign.assign(user_key=f"u:{u}"), Control))
    variant = next(u for u in users if isinstance(campaign.assign(user_key=f"u:{u}"), Variant))
    other = next(u for u in users if u not in (control, variant))
    _track(client, env, variant, at=sent_at + 1000, insert_id="e1", currency="KRW", amount=1500)
    _track(client, env, variant, at=sent_at + 2000, insert_id="e2", currency="KRW", amount=99)  # second: ignored
    _track(client, env, control, at=sent_at + 5000, insert_id="e3", currency="KRW", amount=700)
    _track(client, env, other, at=sent_at + 1000, insert_id="e4", currency="USD", amount=5)  # condition fails
    _track(client, env, other, at=sent_at + 3_600_000 + 1, insert_id="e5", currency="KRW")  # past the window
    _track(client, env, other, at=sent_at - 1, insert_id="e6", currency="KRW")  # before the send
    rows = _rows(
        client,
        "SELECT r.user_id, c.arm, c.insert_id, c.value FROM conversions c "
        "JOIN recipients r ON r.dispatch_id = c.dispatch_id AND r.idx = c.idx WHERE c.dispatch_id = ? ORDER BY 3",
        (dispatch_id,),
    )
    variant_arm = campaign.assign(user_key=f"u:{variant}")
    assert isinstance(variant_arm, Variant)
    assert rows == [(variant, variant_arm.index + 1, "e1", 1500.0), (control, 0, "e3", 700.0)]


def _report(client: AppClient, env: Env, key: int = 7, **params: str) -> Any:
    url = f"/admin/v1/environments/{env.name}/campaigns/{key}/experiment"
    response = client.get(url, params=params, headers=env.admin)
    assert response.status_code == 200, response.text
    return response.json() if not params else response.text


def test_experiment_report_counts_per_arm_with_intervals_and_csv(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(60)]
    _, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    arms = {u: campaign.assign(user_key=f"u:{u}").arm for u in users}  # type: ignore[union-attr]
    (sent_at,) = _rows(client, "SELECT MAX(exposed_at) FROM exposures WHERE env_id = ?", (env.id,))[0]
    converting = users[::3]
    for i, user in enumerate(converting):
        _track(client, env, user, at=sent_at + 10, insert_id=f"c{i}", currency="KRW", amount=100)
    report = _report(client, env)
    assert report["version"] == campaign.experiment.version  # type: ignore[union-attr]
    (version,) = report["versions"]
    by_arm = {a["arm"]: a for a in version["arms"]}
    for number in (0, 1, 2):
        members = [u for u in users if arms[u] == number]
        converted = [u for u in converting if arms[u] == number]
        arm = by_arm[number]
        assert (arm["exposed"], arm["conversions"], arm["revenue"]) == (
            len(members),
            len(converted),
            100.0 * len(converted),
        )
        assert arm["interval"][0] <= arm["conversionRate"] <= arm["interval"][1]
    assert [a["name"] for a in version["arms"]] == ["control", "A", "B"]
    assert "vsControl" in by_arm[2] and "vsFirst" in by_arm[2] and "vsFirst" not in by_arm[1]
    assert by_arm[1]["vsControl"]["difference"] == pytest.approx(
        by_arm[1]["conversionRate"] - by_arm[0]["conversionRate"], abs=1e-5
    )
    # The delivery statistics count the held-out users as excluded, and conversions nowhere else.
    stats = client.get("/v1/push-message/campaigns/7/stats", headers=env.headers).json()
    assert stats["excluded"] == {"CONTROL_GROUP": by_arm[0]["exposed"]}
    assert stats["sent"] == by_arm[1]["exposed"] + by_arm[2]["exposed"]
    lines = _report(client, env, format="csv").splitlines()
    assert lines[0].startswith("version,arm,name,exposed")
    assert [line.split(",")[2] for line in lines[1:]] == ["control", "A", "B"]


def test_experiment_apply_warns_of_unseen_goal_and_of_a_new_version(client: AppClient, env: Env) -> None:
    url = f"/admin/v1/environments/{env.name}/campaigns"
    base = apply_campaign(client, env)
    answer = client.post(url, json={**base, **EXPERIMENT}, headers=env.admin).json()
    assert any("goal.event 'purchase' has never been received" in w for w in answer["warnings"])
    _send(client, env, ["a1", "a2", "a3"])
    first = _report(client, env)["version"]
    _track(client, env, "a1", at=1, insert_id="seen", currency="KRW")
    changed = {**EXPERIMENT, "variants": [VARIANTS[0], {**VARIANTS[1], "weight": 3}]}
    answer = client.post(url, json={**base, **changed}, headers=env.admin).json()
    assert not any("never been received" in w for w in answer["warnings"])
    assert any(f"recipients of version {first} keep their own figures" in w for w in answer["warnings"])
    trigger(client, env, [{"userId": "a1"}])
    run_dispatcher(client)
    report = _report(client, env)
    assert [v["current"] for v in report["versions"]] == [True, False]
    assert report["versions"][1]["version"] == first
    assert sum(a["exposed"] for a in report["versions"][1]["arms"]) == 3


def test_experiment_bad_definition_changes_nothing(client: AppClient, env: Env) -> None:
    base = apply_campaign(client, env)
    url = f"/admin/v1/environments/{env.name}/campaigns"
    response = client.post(url, json={**base, "controlGroup": 80}, headers=env.admin)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_CAMPAIGN"
    assert "controlGroup must be a percentage from 0 to 50" in response.json()["message"]
    stored = client.get(f"{url}/7", headers=env.admin).json()
    assert "controlGroup" not in stored.get("definition", stored)


def test_experiment_device_only_events_convert_through_the_link_they_have_when_stored(
    client: AppClient, env: Env
) -> None:
    users = [f"user{i}" for i in range(20)]
    dispatch_id, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    sent = [u for u in users if isinstance(campaign.assign(user_key=f"u:{u}"), Variant)]
    first, second = sent[0], sent[1]
    (at,) = _rows(client, "SELECT MAX(exposed_at) FROM exposures WHERE env_id = ?", (env.id,))[0]
    purchase = {"currency": "KRW", "amount": 3}
    # The device _send registered for the first user is linked to it: its device-only event converts.
    send_events(client, env, track_event("purchase", device_id=f"dev-{first}", properties=purchase, timestamp=at + 1))
    # A device not linked yet: its event converts nobody, and linking it later does not go back to it.
    send_events(client, env, track_event("purchase", device_id="tablet", properties=purchase, timestamp=at + 2))
    add_token(client, env, device_id="tablet", token="tok-tablet", user_id=second)
    assert _converted(client, dispatch_id) == {first}
    # Once linked, the device's next event (still in the window) converts the second user.
    send_events(client, env, track_event("purchase", device_id="tablet", properties=purchase, timestamp=at + 3))
    assert _converted(client, dispatch_id) == {first, second}


def test_experiment_sms_campaign_holds_out_control_and_sends_each_variants_text(client: AppClient, env: Env) -> None:
    campaign = sms(
        provider="sandbox",
        purpose="INFORMATION",
        consentRule="SUBSCRIBED_OR_UNKNOWN",
        controlGroup=40,
        goal={"event": "purchase", "window": "1h"},
        variants=[{"name": "A", "message": {"text": "A text"}}, {"name": "B", "message": {"text": "B text"}}],
    )
    setup_messages(client, env, None, campaign)
    users = [f"phone-user{i}" for i in range(16)]
    for user_id in users:
        add_user(client, env, user_id)
    dispatch_id = send_messages(client, env, "sms", 12, [{"userId": u} for u in users])
    run_messages(client)
    parsed = parse_campaign(campaign)
    expected = {u: parsed.assign(user_key=f"u:{u}") for u in users}
    assert {type(a) for a in expected.values()} == {Control, Variant}
    outcomes = {
        r["userId"]: (r["outcome"], r["reason"]) for r in view_messages(client, env, "sms", dispatch_id)["recipients"]
    }
    assert outcomes == {
        u: ("EXCLUDED", "CONTROL_GROUP") if isinstance(a, Control) else ("SENT", None) for u, a in expected.items()
    }
    texts = sorted(m["message"]["text"] for m in inbox(client, env))
    assert texts == sorted(f"{'AB'[a.index]} text" for a in expected.values() if isinstance(a, Variant))
    (at,) = _rows(client, "SELECT MAX(exposed_at) FROM exposures WHERE env_id = ?", (env.id,))[0]
    for i, user in enumerate(users):
        _track(client, env, user, at=at + 1, insert_id=f"s{i}")
    assert _converted(client, dispatch_id) == set(users)


def test_experiment_control_group_takes_no_frequency_cap_room(client: AppClient, env: Env) -> None:
    settings = {"settings": {"frequencyCaps": [{"limit": 1, "windowHours": 24}]}}
    assert client.put(f"/admin/v1/environments/{env.name}", json=settings, headers=env.admin).status_code == 200
    users = [f"user{i}" for i in range(30)]
    for user in users:
        add_token(client, env, device_id=f"dev-{user}", token=f"tok-{user}", user_id=user)
        consent = {"userId": user, "marketingSubscriptionStatus": "SUBSCRIBED", "nightSubscriptionStatus": "SUBSCRIBED"}
        assert client.post("/v1/push-subscriptions", json=consent, headers=env.headers).status_code == 200
    definition = apply_campaign(client, env, purpose="MARKETING", **EXPERIMENT)
    campaign = parse_campaign(definition)
    held = {u for u in users if isinstance(campaign.assign(user_key=f"u:{u}"), Control)}
    assert held and held != set(users)
    first = trigger(client, env, [{"userId": u} for u in users])
    run_dispatcher(client)
    second = trigger(client, env, [{"userId": u} for u in users])
    run_dispatcher(client)
    reserved = {r[0] for r in _rows(client, "SELECT user_key FROM marketing_sends WHERE env_id = ?", (env.id,))}
    assert reserved == {f"u:{u}" for u in users if u not in held}
    for dispatch_id, others in ((first, ("SENT", None)), (second, ("EXCLUDED", "FREQUENCY_CAP"))):
        view = dispatch(client, env, dispatch_id)
        outcomes = {r["userId"]: (r["outcome"], r["reason"]) for r in view["recipients"]}
        assert outcomes == {u: ("EXCLUDED", "CONTROL_GROUP") if u in held else others for u in users}
    # A recipient the cap stopped was not exposed: only the control group is recorded the second time.
    exposed = {r[0] for r in _rows(client, "SELECT user_key FROM exposures WHERE dispatch_id = ?", (second,))}
    assert exposed == {f"u:{u}" for u in held}


def test_experiment_report_counts_attributed_clicks_per_arm(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(20)]
    dispatch_id, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    view = dispatch(client, env, dispatch_id)
    sent = [r for r in view["recipients"] if r["outcome"] == "SENT"]
    clicked = sent[0]
    arm = campaign.assign(user_key=f"u:{clicked['userId']}")
    assert isinstance(arm, Variant)
    delivery = clicked["deliveries"][0]["deliveryId"]
    click = {"push_message_key": 7, "push_message_delivery_id": delivery, "campaign_type": "PUSH_MESSAGE"}
    for _ in range(2):
        send_events(client, env, track_event("$push_click", user_id=clicked["userId"], properties=click))
    (version,) = _report(client, env)["versions"]
    by_arm = {a["arm"]: a for a in version["arms"]}
    assert (by_arm[arm.arm]["clicks"], by_arm[arm.arm]["uniqueClicks"]) == (2, 1)
    assert by_arm[arm.arm]["uniqueCtr"] == round(1 / by_arm[arm.arm]["exposed"], 6)
    assert all(a["clicks"] == 0 for n, a in by_arm.items() if n != arm.arm)


def test_experiment_conversions_are_counted_hourly_per_arm_and_the_report_reads_those_counts(
    client: AppClient, env: Env
) -> None:
    users = [f"user{i}" for i in range(40)]
    _, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    version = campaign.experiment.version  # type: ignore[union-attr]
    arms = {u: campaign.assign(user_key=f"u:{u}").arm for u in users}  # type: ignore[union-attr]
    (sent_at,) = _rows(client, "SELECT MAX(exposed_at) FROM exposures WHERE env_id = ?", (env.id,))[0]
    converting = users[::2]
    for i, user in enumerate(converting):
        _track(client, env, user, at=sent_at + 10 + (i % 2) * 60_000, insert_id=f"h{i}", currency="KRW", amount=i)
    _track(client, env, converting[0], at=sent_at + 20, insert_id="again", currency="KRW", amount=1000)  # once only
    expected: dict[int, tuple[int, float]] = {}
    for i, user in enumerate(converting):
        count, revenue = expected.get(arms[user], (0, 0.0))
        expected[arms[user]] = (count + 1, revenue + i)
    for key in (7, 0):  # the campaign's rows and the environment's
        rows = _rows(
            client,
            "SELECT metric, SUM(n), SUM(revenue) FROM campaign_counts WHERE env_id = ? AND campaign_key = ? "
            "AND metric LIKE ? GROUP BY metric",
            (env.id, key, "CONVERSION:%"),
        )
        assert {str(m): (int(n), float(r)) for m, n, r in rows} == {
            f"CONVERSION:{version}:{arm}": figures for arm, figures in expected.items()
        }
    stats = client.get("/v1/push-message/campaigns/7/stats", headers=env.headers).json()
    assert set(stats["excluded"]) == {"CONTROL_GROUP"} and stats["failed"] == 0
    before = _report(client, env)
    by_arm = {a["arm"]: a for a in before["versions"][0]["arms"]}
    assert {n: (a["conversions"], a["revenue"]) for n, a in by_arm.items() if a["conversions"]} == expected
    # The report reads the hourly counts: they alone decide its conversions.
    with client.app.db.transaction() as conn:
        client.app.db.execute(conn, "DELETE FROM conversions WHERE env_id = ?", (env.id,))
        client.app.db.execute(
            conn,
            "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n, revenue) VALUES (?, 7, ?, ?, 1, 5)",
            (env.id, sent_at - sent_at % 3_600_000 + 3 * 3_600_000, f"CONVERSION:{version}:1"),
        )
    after = {a["arm"]: a for a in _report(client, env)["versions"][0]["arms"]}
    count, revenue = expected.get(1, (0, 0.0))
    assert (after[1]["conversions"], after[1]["revenue"]) == (count + 1, revenue + 5)
    assert after[1]["cumulativeConversions"][-1][1] == count + 1


def test_experiment_report_counts_only_sent_variant_recipients_as_exposed(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(30)]
    dispatch_id, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    before = {a["arm"]: a["exposed"] for a in _report(client, env)["versions"][0]["arms"]}
    variant = next(u for u in users if isinstance(campaign.assign(user_key=f"u:{u}"), Variant))
    control = next(u for u in users if isinstance(campaign.assign(user_key=f"u:{u}"), Control))
    arm = campaign.assign(user_key=f"u:{variant}").arm  # type: ignore[union-attr]
    with client.app.db.transaction() as conn:
        # A variant recipient whose send failed is not exposed; the control group never is sent.
        for user, outcome in ((variant, "FAILED"), (control, "EXCLUDED")):
            client.app.db.execute(
                conn,
                "UPDATE recipients SET outcome = ? WHERE dispatch_id = ? AND user_id = ?",
                (outcome, dispatch_id, user),
            )
    after = {a["arm"]: a["exposed"] for a in _report(client, env)["versions"][0]["arms"]}
    assert after == {**before, arm: before[arm] - 1}


def _exposure_counts(client: AppClient, env: Env, key: int) -> dict[str, int]:
    rows = _rows(
        client,
        "SELECT metric, SUM(n) FROM campaign_counts WHERE env_id = ? AND campaign_key = ? AND metric LIKE ? "
        "GROUP BY metric",
        (env.id, key, "EXPOSED:%"),
    )
    return {str(m): int(n) for m, n in rows}


def test_experiment_report_reads_its_exposures_from_the_hourly_counts(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(40)]
    _, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    version = campaign.experiment.version  # type: ignore[union-attr]
    per_arm: dict[int, int] = {}
    for user in users:
        arm = campaign.assign(user_key=f"u:{user}").arm  # type: ignore[union-attr]
        per_arm[arm] = per_arm.get(arm, 0) + 1
    assert _exposure_counts(client, env, 7) == {f"EXPOSED:{version}:{arm}": n for arm, n in per_arm.items()}
    assert _exposure_counts(client, env, 0) == {}  # the campaign's own figure, not the environment's
    # Exposures are no outcome: the delivery statistics do not see them.
    stats = client.get("/v1/push-message/campaigns/7/stats", headers=env.headers).json()
    assert set(stats["excluded"]) == {"CONTROL_GROUP"} and stats["failed"] == 0
    before = {a["arm"]: a["exposed"] for a in _report(client, env)["versions"][0]["arms"]}
    assert before == per_arm
    (sent_at,) = _rows(client, "SELECT MAX(exposed_at) FROM exposures WHERE env_id = ?", (env.id,))[0]
    with client.app.db.transaction() as conn:
        client.app.db.execute(
            conn,
            "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n, revenue) VALUES (?, 7, ?, ?, 5, 0)",
            (env.id, sent_at - sent_at % 3_600_000 + 3_600_000, f"EXPOSED:{version}:0"),
        )
    after = {a["arm"]: a["exposed"] for a in _report(client, env)["versions"][0]["arms"]}
    assert after == {**before, 0: before[0] + 5}


def test_experiment_exposures_recorded_again_are_counted_once(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(20)]
    dispatch_id, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    counted = _exposure_counts(client, env, 7)
    recorded = _rows(
        client, "SELECT idx, arm, user_key FROM exposures WHERE dispatch_id = ? ORDER BY idx", (dispatch_id,)
    )
    assert sum(counted.values()) == len(recorded) == len(users)
    # A retried work item records the same recipients again, with one more that was not recorded.
    rows = [(int(i), int(a), str(k)) for i, a, k in recorded]
    dropped, dropped_arm, _ = rows[0]
    with client.app.db.transaction() as conn:
        client.app.db.execute(conn, "DELETE FROM exposures WHERE dispatch_id = ? AND idx = ?", (dispatch_id, dropped))
    runner = BatchRunner(db=client.app.db)
    try:
        job = RecordExposures(
            env_id=env.id,
            dispatch_id=dispatch_id,
            campaign_key=7,
            version=campaign.experiment.version,  # type: ignore[union-attr]
            rows=rows,
            now_ms=int(time.time() * 1000),
        )
        assert [failed for _, failed in runner.run_batch([job])] == [False]
    finally:
        runner.shutdown()
    again = _exposure_counts(client, env, 7)
    metric = f"EXPOSED:{campaign.experiment.version}:{dropped_arm}"  # type: ignore[union-attr]
    assert again == {**counted, metric: counted[metric] + 1}


def _goal_event(insert_id: str, user_id: str, *, at: int, amount: int) -> Event:
    return Event(
        insert_id=insert_id,
        key="purchase",
        timestamp=at,
        user_id=user_id,
        device_id=None,
        value=None,
        properties=json.dumps({"currency": "KRW", "amount": amount}),
        identifiers="{}",
        context="{}",
        effect=None,
        where="events[0]",
    )


def test_experiment_goal_events_of_one_commit_convert_once_in_time_order(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(30)]
    dispatch_id, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    (sent_at,) = _rows(client, "SELECT MIN(exposed_at) FROM exposures WHERE dispatch_id = ?", (dispatch_id,))[0]
    variant = next(u for u in users if isinstance(campaign.assign(user_key=f"u:{u}"), Variant))
    control = next(u for u in users if isinstance(campaign.assign(user_key=f"u:{u}"), Control))
    key_hash = hash_secret(env.key)
    # Two jobs in one transaction: the later job holds the user's earlier goal event, which converts.
    jobs = [
        StoreEvents(
            key_hash=key_hash,
            env_id=env.id,
            events=[
                _goal_event("j1", variant, at=sent_at + 9000, amount=9),
                _goal_event("j2", control, at=sent_at + 1000, amount=4),
            ],
        ),
        StoreEvents(key_hash=key_hash, env_id=env.id, events=[_goal_event("j3", variant, at=sent_at + 2000, amount=2)]),
    ]
    runner = BatchRunner(db=client.app.db)
    try:
        assert [failed for _, failed in runner.run_batch(jobs)] == [False, False]  # type: ignore[arg-type]
    finally:
        runner.shutdown()
    rows = _rows(
        client,
        "SELECT r.user_id, c.insert_id, c.value FROM conversions c "
        "JOIN recipients r ON r.dispatch_id = c.dispatch_id AND r.idx = c.idx WHERE c.dispatch_id = ? ORDER BY 2",
        (dispatch_id,),
    )
    assert rows == [(control, "j2", 4.0), (variant, "j3", 2.0)]
    counted = _rows(
        client,
        "SELECT SUM(n), SUM(revenue) FROM campaign_counts WHERE env_id = ? AND campaign_key = 7 AND metric LIKE ?",
        (env.id, "CONVERSION:%"),
    )
    assert [(int(n), float(r)) for n, r in counted] == [(2, 6.0)]
