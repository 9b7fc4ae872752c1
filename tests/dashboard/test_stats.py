"""Campaign statistics from hourly counts: attributed clicks only, unique vs total, unknown keys."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from magpie.api.hackle import views
from magpie.store.stats import CampaignStats, Totals
from tests.dashboard.test_pages import _page, _text
from tests.dashboard.test_session import _sign_in
from tests.dispatch.test_messages import NIGHT, brand, setup, sms
from tests.dispatch.test_messages import run as run_messages
from tests.dispatch.test_messages import send as send_messages
from tests.dispatch.test_messages import user as add_user
from tests.fakes.nhn import FakeNhn
from tests.sdk.batches import send, track_event
from tests.support import (
    AppClient,
    Env,
    add_token,
    apply_campaign,
    dispatch,
    magpie_cli,
    run_dispatcher,
    trigger,
)


def _run(client: AppClient) -> None:
    run_dispatcher(client)


def _stats(client: AppClient, env: Env, key: int) -> dict[str, Any]:
    response = client.get(f"/v1/push-message/campaigns/{key}/stats", headers=env.headers)
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


def _click(delivery_id: int | None, key: int | None = None, **extra: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {"campaign_type": "PUSH_MESSAGE", "debug": False, **extra}
    if key is not None:
        properties["push_message_key"] = key
    if delivery_id is not None:
        properties["push_message_delivery_id"] = delivery_id
    return properties


@pytest.fixture
def two_campaigns(client: AppClient, env: Env) -> tuple[int, int]:
    """Campaign 1 sent to u1 (device d1), campaign 12 sent to u2 (device d2); their delivery ids."""
    apply_campaign(client, env, key=1)
    apply_campaign(client, env, key=12)
    add_token(client, env, device_id="d1", token="tok-1", user_id="u1")
    add_token(client, env, device_id="d2", token="tok-2", user_id="u2")
    first = trigger(client, env, [{"userId": "u1"}], key=1)
    second = trigger(client, env, [{"userId": "u2"}], key=12)
    run_dispatcher(client)
    ids = [dispatch(client, env, d)["recipients"][0]["deliveries"][0]["deliveryId"] for d in (first, second)]
    return ids[0], ids[1]


def test_stats_click_on_another_campaigns_delivery_is_not_counted(
    client: AppClient, env: Env, two_campaigns: tuple[int, int]
) -> None:
    of_campaign_1, _ = two_campaigns
    send(client, env, track_event("$push_click", user_id="u1", properties=_click(of_campaign_1, key=12)))
    assert (_stats(client, env, 12)["totalClicks"], _stats(client, env, 1)["totalClicks"]) == (0, 0)


@pytest.mark.parametrize(
    "properties",
    [
        pytest.param(_click(99999, key=12), id="unknown-delivery"),
        pytest.param(_click(None, key=12), id="campaign-key-only"),
    ],
)
def test_stats_unattributable_click_is_stored_but_not_counted(
    client: AppClient, env: Env, two_campaigns: tuple[int, int], properties: dict[str, Any]
) -> None:
    send(client, env, track_event("$push_click", user_id="u2", properties=properties))
    stats = _stats(client, env, 12)
    assert (stats["uniqueClicks"], stats["totalClicks"], stats["ctr"]) == (0, 0, 0.0)
    with client.app.db.transaction(write=False) as conn:
        rows = client.app.db.fetchall(conn, "SELECT attributed FROM push_clicks WHERE env_id = ?", (env.id,))
    assert rows == [(0,)]


def test_stats_click_from_someone_else_is_not_counted(
    client: AppClient, env: Env, two_campaigns: tuple[int, int]
) -> None:
    _, of_campaign_12 = two_campaigns
    send(client, env, track_event("$push_click", user_id="u1", properties=_click(of_campaign_12, key=12)))
    assert _stats(client, env, 12)["totalClicks"] == 0


def test_stats_repeated_clicks_are_one_unique_click_and_ctr_stays_at_most_one(
    client: AppClient, env: Env, two_campaigns: tuple[int, int]
) -> None:
    _, of_campaign_12 = two_campaigns
    for _ in range(3):
        send(client, env, track_event("$push_click", device_id="d2", properties=_click(of_campaign_12, key=12)))
    stats = _stats(client, env, 12)
    assert (stats["sent"], stats["uniqueClicks"], stats["totalClicks"], stats["ctr"]) == (1, 1, 3, 1.0)


def test_stats_unknown_campaign_is_campaign_not_found(client: AppClient, env: Env) -> None:
    response = client.get("/v1/push-message/campaigns/4242/stats", headers=env.headers)
    assert response.status_code == 400
    assert response.json()["code"] == "CAMPAIGN_NOT_FOUND"
    admin = client.get(f"/admin/v1/environments/{env.name}/campaigns/4242/stats", headers=env.admin)
    assert (admin.status_code, admin.json()["code"]) == (400, "CAMPAIGN_NOT_FOUND")


def test_stats_counts_match_the_recipients_they_summarise(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    trigger(client, env, [{"userId": "u1"}, {"userId": "ghost"}, {"deviceId": "nobody"}])
    run_dispatcher(client)
    with client.app.db.transaction(write=False) as conn:
        recipients = client.app.db.fetchall(
            conn, "SELECT outcome, COUNT(*) FROM recipients WHERE env_id = ? GROUP BY outcome", (env.id,)
        )
    stats = _stats(client, env, 7)
    assert dict(recipients) == {"SENT": stats["sent"], "EXCLUDED": stats["excludedTotal"]}
    assert (stats["requested"], stats["pending"], stats["excluded"]) == (3, 0, {"UNKNOWN_USER": 2})


def test_stats_click_properties_are_documented_in_openapi(client: AppClient) -> None:
    document = client.get("/openapi.json").json()
    track = document["paths"]["/api/v2/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    text = str(track)
    for name in ("push_message_delivery_id", "push_message_key", "push_message_execution_id", "debug"):
        assert name in text, name
    stats = document["paths"]["/v1/push-message/campaigns/{campaignKey}/stats"]["get"]
    schema = stats["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"uniqueClicks", "totalClicks", "ctr"} <= set(schema["properties"])
    assert "CAMPAIGN_NOT_FOUND" in str(stats["responses"]["400"])


def test_stats_failures_count_with_their_reason(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    add_token(client, env, device_id="d1", user_id="u1", token="t1")
    trigger(client, env, [{"userId": "u1"}, {"userId": "u2"}])
    apply_campaign(client, env, status="PAUSED")  # paused after acceptance: the dispatch fails visibly
    run_dispatcher(client)
    stats = _stats(client, env, 7)
    assert (stats["requested"], stats["failed"], stats["pending"]) == (2, 2, 0)
    assert stats["failures"] == {"CAMPAIGN_INACTIVE": 2}


def test_stats_json_derives_every_figure_from_the_same_totals_as_the_dashboard() -> None:
    totals = Totals(channel="push")
    for metric, n in [
        ("REQUESTED", 20),
        ("SENT", 8),
        ("FAILED:TOKEN_INVALID", 2),
        ("FAILED:", 1),
        ("EXCLUDED:UNKNOWN_USER", 3),
        ("UNIQUE_CLICK", 2),
        ("CLICK", 5),
    ]:
        totals.add(metric, n)
    body = views.campaign_stats(CampaignStats(campaign_key=7, since=0, until=10, dispatches=2, totals=totals))
    assert body == {
        "campaignKey": 7,
        "channel": "push",
        "from": 0,
        "to": 10,
        "dispatches": 2,
        "requested": 20,
        "sent": 8,
        "failed": 3,
        "failures": {"TOKEN_INVALID": 2, "UNKNOWN": 1},
        "excluded": {"UNKNOWN_USER": 3},
        "unknown": 0,
        "excludedTotal": 3,
        "pending": 6,
        "sentRate": round(8 / 11, 4),
        "uniqueClicks": 2,
        "totalClicks": 5,
        "clicks": 2,
        "ctr": 0.25,
    }
    # The dashboard reads the same object: the API's figures are the dashboard's.
    assert (totals.failed_total, totals.excluded_total, totals.pending, totals.ctr) == (3, 3, 6, 0.25)
    assert totals.sent_rate == body["sentRate"]


# -- one table of outcomes per channel, asserted on every surface ----------------------------------

# What the recipients below end as: SCHEDULED is held for the end of night time (pending until then).
TABLE: dict[str, dict[str, int]] = {
    "push": {"SENT": 1, "FAILED": 1, "EXCLUDED": 1, "SCHEDULED": 1, "UNKNOWN": 0},
    "kakao": {"SENT": 1, "FAILED": 1, "EXCLUDED": 1, "SCHEDULED": 1, "UNKNOWN": 1},
    "sms": {"SENT": 2, "FAILED": 1, "EXCLUDED": 1, "SCHEDULED": 1, "UNKNOWN": 1},
}
KEYS = {"push": 7, "kakao": 11, "sms": 12}


def _recipients(channel: str) -> dict[str, list[dict[str, Any]]]:
    """Who to trigger in which run for the channel's row of ``TABLE``."""
    row = TABLE[channel]
    return {
        "day": [{"userId": f"u-sent-{i}"} for i in range(row["SENT"])]
        + [{"userId": f"ghost-{i}"} for i in range(row["EXCLUDED"])],
        "unknown": [{"userId": f"u-unknown-{i}"} for i in range(row["UNKNOWN"])],
        "failed": [{"userId": f"u-failed-{i}"} for i in range(row["FAILED"])],
        "night": [{"userId": f"u-night-{i}"} for i in range(row["SCHEDULED"])],
    }


def _status(client: AppClient, env: Env, channel: str, status: str) -> None:
    campaign = {"push": _PUSH, "kakao": brand(), "sms": sms()}[channel]
    response = client.post(
        f"/admin/v1/environments/{env.name}/campaigns", json={**campaign, "status": status}, headers=env.admin
    )
    assert response.status_code == 200, response.text


_PUSH: dict[str, Any] = {
    "key": 7,
    "name": "Weekend sale",
    "status": "ACTIVE",
    "purpose": "MARKETING",
    "provider": "sandbox",
    "consentRule": "SUBSCRIBED_OR_UNKNOWN",
    "message": {"title": "{{ user_properties.name }}님 할인", "body": "주말 할인"},
}


@pytest.fixture
def nhn() -> Iterator[FakeNhn]:
    with FakeNhn() as fake:
        yield fake


@pytest.fixture
def every_outcome(client: AppClient, env: Env, nhn: FakeNhn) -> dict[str, list[str]]:
    """``TABLE`` made real: push through the sandbox, a brand message and a marketing SMS through a fake
    NHN Cloud; returns each channel's dispatch ids."""
    setup(client, env, {"kakaoGateway": "nhn", "smsGateway": "nhn", "providers": {"nhn": nhn.config()}}, brand(), sms())
    apply_campaign(client, env, **_PUSH)
    runs = {channel: _recipients(channel) for channel in TABLE}
    people = {
        r["userId"] for c in runs.values() for rs in c.values() for r in rs if not r["userId"].startswith("ghost")
    }
    for n, user_id in enumerate(sorted(people)):
        add_user(
            client, env, user_id, phone=f"010-5555-{n:04d}", kakao_marketing="SUBSCRIBED", sms_marketing="SUBSCRIBED"
        )
        add_token(client, env, device_id=f"d-{user_id}", user_id=user_id, token=f"tok-{user_id}-0123456789")
    dispatches: dict[str, list[str]] = {channel: [] for channel in TABLE}

    def trigger_all(stage: str) -> None:
        for channel, stages in runs.items():
            if stages[stage]:
                dispatches[channel].append(send_messages(client, env, channel, KEYS[channel], stages[stage]))

    trigger_all("day")
    run_messages(client)
    nhn.drop_after_accept = nhn.fail_queries = 100  # takes the batch, never answers, cannot be asked
    trigger_all("unknown")
    run_messages(client, max_delivery_attempts=1)
    nhn.drop_after_accept = nhn.fail_queries = 0
    trigger_all("failed")
    for channel in TABLE:  # paused after acceptance: those recipients fail CAMPAIGN_INACTIVE
        _status(client, env, channel, "PAUSED")
    run_messages(client)
    for channel in TABLE:
        _status(client, env, channel, "ACTIVE")
    trigger_all("night")
    run_messages(client, at=NIGHT)  # marketing at night, without night consent: held until morning
    return dispatches


def _expected(channel: str) -> dict[str, int]:
    row = TABLE[channel]
    return {
        "requested": sum(row.values()),
        "sent": row["SENT"],
        "failed": row["FAILED"],
        "unknown": row["UNKNOWN"],
        "excludedTotal": row["EXCLUDED"],
        "pending": row["SCHEDULED"],
    }


def _figures(stats: dict[str, Any]) -> dict[str, int]:
    return {k: stats[k] for k in ("requested", "sent", "failed", "unknown", "excludedTotal", "pending")}


def test_stats_every_outcome_of_every_channel_is_the_same_on_every_surface(
    client: AppClient, env: Env, every_outcome: dict[str, list[str]]
) -> None:
    cli = {"data_dir": client.settings.data_dir, "database_url": client.settings.database_url_override}
    cookies = _sign_in(client, env)
    for channel, key in KEYS.items():
        expected = _expected(channel)
        public = client.get(f"/v1/{channel}-message/campaigns/{key}/stats", headers=env.headers).json()
        admin = client.get(f"/admin/v1/environments/{env.name}/campaigns/{key}/stats", headers=env.admin).json()
        shown = magpie_cli("stats", "campaign", str(key), "--env", env.name, "--json", **cli)
        assert shown.returncode == 0, shown.stderr
        text = magpie_cli("stats", "campaign", str(key), "--env", env.name, **cli).stdout
        e = expected
        assert (
            f"sent {e['sent']}, failed {e['failed']}, unknown {e['unknown']}, excluded {e['excludedTotal']}, "
            f"pending {e['pending']}"
        ) in text, text
        assert ("CTR" in text) == (channel == "push"), text
        for surface, stats in (("api", public), ("admin", admin), ("cli", json.loads(shown.stdout))):
            assert (surface, _figures(stats)) == (surface, expected)
            # CTR only where clicks exist; the sent rate counts UNKNOWN as not (yet) sent.
            assert stats["ctr"] == (0.0 if channel == "push" else None), (surface, stats["ctr"])
            row = TABLE[channel]
            assert stats["sentRate"] == round(row["SENT"] / (row["SENT"] + row["FAILED"] + row["UNKNOWN"]), 4)

        # Every dispatch of the channel, through the API, the CLI and its dashboard page, adds up to the row.
        outcomes = {"SENT": 0, "FAILED": 0, "EXCLUDED": 0, "PENDING": 0, "UNKNOWN": 0}
        cli_outcomes = dict.fromkeys(outcomes, 0)
        page_outcomes = dict.fromkeys(outcomes, 0)
        for dispatch_id in every_outcome[channel]:
            view = client.get(f"/v1/{channel}-message/dispatches/{dispatch_id}", headers=env.headers).json()
            by_cli = magpie_cli("stats", "dispatch", dispatch_id, "--env", env.name, "--json", **cli)
            assert by_cli.returncode == 0, by_cli.stderr
            html = _page(client, cookies, f"/dashboard/{env.name}/dispatches/{dispatch_id}").text
            for o in outcomes:
                outcomes[o] += view["counts"].get(o, 0)
                cli_outcomes[o] += json.loads(by_cli.stdout)["counts"].get(o, 0)
            for o, n in re.findall(r'badge (\w+)">\w+</span></span> <strong>([\d,]+)</strong>', html):
                page_outcomes[o.upper()] += int(n.replace(",", ""))
        row = TABLE[channel]
        wanted = {"SENT": row["SENT"], "FAILED": row["FAILED"], "EXCLUDED": row["EXCLUDED"]}
        wanted |= {"PENDING": row["SCHEDULED"], "UNKNOWN": row["UNKNOWN"]}
        assert (channel, outcomes, cli_outcomes, page_outcomes) == (channel, wanted, wanted, wanted)

        # The campaign page's funnel.
        html = _page(client, cookies, f"/dashboard/{env.name}/campaigns/{key}").text
        funnel = {label: int(n.replace(",", "")) for label, n in re.findall(_FUNNEL, html)}
        assert funnel == {
            "Requested": expected["requested"],
            "Sent": expected["sent"],
            "Failed": expected["failed"],
            "Unknown": expected["unknown"],
            "Excluded": expected["excludedTotal"],
            "Pending": expected["pending"],
            **({"Clicked (unique)": 0} if channel == "push" else {}),
        }

    # The overview: one row per channel, and the environment's totals.
    overview = _text(_page(client, cookies, f"/dashboard/{env.name}/").text)
    for channel, label in (("push", "Push"), ("kakao", "Kakao"), ("sms", "SMS")):
        e = _expected(channel)
        cells = [e["requested"], e["sent"], e["failed"], e["unknown"], e["excludedTotal"], e["pending"]]
        assert f"{label} {' '.join(str(n) for n in cells)} " in overview, (label, cells)
    everything = {k: sum(_expected(c)[k] for c in TABLE) for k in _expected("push")}
    for label, key in (("Requested", "requested"), ("Unknown", "unknown"), ("Pending", "pending")):
        n = everything[key]
        assert f"{label} {n} {n} {n}" in overview, label
    assert "CTR 0.0% 0.0% 0.0%" in overview  # over the push sent, not over every channel's
    for channel in TABLE:
        e = _expected(channel)
        filtered = _text(_page(client, cookies, f"/dashboard/{env.name}/?channel={channel}").text)
        assert f"Requested {e['requested']} {e['requested']} {e['requested']}" in filtered, channel
        assert f"Unknown {e['unknown']} {e['unknown']} {e['unknown']}" in filtered, channel
        assert ("CTR 0.0% 0.0% 0.0%" if channel == "push" else "CTR — — —") in filtered, channel


_FUNNEL = re.compile(r'<span class="label">([\w ()]+)</span><strong>([\d,]+)</strong>')
