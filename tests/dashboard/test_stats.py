"""Campaign statistics from hourly counts: attributed clicks only, unique vs total, unknown keys."""

from __future__ import annotations

from typing import Any

import pytest

from magpie.api import views
from magpie.store.stats import CampaignStats, Totals
from tests.sdk.batches import send, track_event
from tests.support import (
    AppClient,
    Env,
    add_token,
    apply_campaign,
    dispatch,
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
