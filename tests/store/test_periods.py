"""Comparisons on both engines: a period against the previous one of equal length, today against
yesterday until the same time, read from the hourly counts; and the local date ranges they take."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from magpie.errors import InvalidRequest
from magpie.store.db import Database
from magpie.store.periods import Change, compare_periods, day_range, today_vs_yesterday
from magpie.store.stats import ALL, DAY_MS, HOUR_MS
from tests.support import AppClient, Env, apply_campaign

SEOUL = ZoneInfo("Asia/Seoul")
NOW = int(datetime(2026, 3, 10, 15, 30, tzinfo=SEOUL).timestamp() * 1000)  # Tuesday 15:30 in Seoul


def add_counts(db: Database, env: Env, at_ms: int, counts: dict[str, int], *, campaign_key: int = 3) -> None:
    """Hourly counts as the writer keeps them: the campaign's row and the environment's (``ALL``)."""
    hour = at_ms - at_ms % HOUR_MS
    with db.transaction() as conn:
        for key in (campaign_key, ALL):
            db.executemany(
                conn,
                "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (env_id, campaign_key, hour, metric) DO UPDATE SET n = campaign_counts.n + excluded.n",
                [(env.id, key, hour, metric, n) for metric, n in counts.items()],
            )


def test_period_against_the_previous_one_of_equal_length(client: AppClient, env: Env) -> None:
    db = client.app.db
    apply_campaign(client, env, key=3)
    apply_campaign(client, env, key=4)
    week = 7 * DAY_MS
    since, until = NOW - NOW % HOUR_MS - week, NOW - NOW % HOUR_MS
    add_counts(db, env, NOW - 2 * DAY_MS, {"REQUESTED": 130, "SENT": 120, "UNKNOWN:GATEWAY_UNCONFIRMED": 3})
    add_counts(db, env, NOW - 2 * DAY_MS, {"UNIQUE_CLICK": 12, "CLICK": 20, "EXCLUDED:NO_CONSENT": 7})
    add_counts(db, env, NOW - 9 * DAY_MS, {"REQUESTED": 105, "SENT": 100, "FAILED:HTTP_500": 5, "UNIQUE_CLICK": 5})
    add_counts(db, env, NOW - 20 * DAY_MS, {"SENT": 999})  # before both periods
    add_counts(db, env, NOW - 2 * DAY_MS, {"SENT": 50}, campaign_key=4)  # another campaign

    with db.transaction(write=False) as conn:
        found = compare_periods(conn, db, env_id=env.id, since=since, until=until, campaign_key=3)
        everything = compare_periods(conn, db, env_id=env.id, since=since, until=until)
    assert (found.previous_since, found.previous_until) == (since - week, since)
    c = found.changes
    assert c["sent"] == Change(current=120, previous=100)
    assert (c["sent"].absolute, c["sent"].percent) == (20, 0.2)
    assert c["failed"] is not None and (c["failed"].absolute, c["failed"].percent) == (-5, -1.0)
    assert c["unknown"] is not None and (c["unknown"].absolute, c["unknown"].percent) == (3, None)  # nothing before
    assert c["excluded"] is not None and c["excluded"].current == 7
    assert c["requested"] is not None and (c["requested"].current, c["requested"].previous) == (130, 105)
    ctr = c["ctr"]
    assert ctr is not None and (ctr.current, ctr.previous, ctr.absolute, ctr.percent) == (0.1, 0.05, 0.05, 1.0)
    # The environment's rows hold every campaign.
    assert everything.changes["sent"] == Change(current=170, previous=100)


def test_ctr_change_is_absent_without_sends(client: AppClient, env: Env) -> None:
    db = client.app.db
    apply_campaign(client, env, key=3)
    add_counts(db, env, NOW - DAY_MS, {"SENT": 10, "UNIQUE_CLICK": 1})
    with db.transaction(write=False) as conn:
        found = compare_periods(conn, db, env_id=env.id, since=NOW - 2 * DAY_MS, until=NOW)
    assert found.changes["ctr"] is None  # nothing was sent in the previous period: no rate to compare
    assert found.changes["sent"] == Change(current=10, previous=0) and found.changes["sent"].percent is None


def test_environment_ctr_counts_push_sends_only_and_a_channel_keeps_to_its_campaigns(
    client: AppClient, env: Env
) -> None:
    db = client.app.db
    apply_campaign(client, env, key=3)
    apply_campaign(client, env, key=12, channel="sms", message={"text": "notice"}, consentRule="SUBSCRIBED_OR_UNKNOWN")
    add_counts(db, env, NOW - DAY_MS, {"SENT": 10, "UNIQUE_CLICK": 1})
    add_counts(db, env, NOW - DAY_MS, {"SENT": 90, "FAILED:HTTP_500": 2}, campaign_key=12)
    add_counts(db, env, NOW - 3 * DAY_MS, {"SENT": 20, "UNIQUE_CLICK": 1})
    with db.transaction(write=False) as conn:
        every = compare_periods(conn, db, env_id=env.id, since=NOW - 2 * DAY_MS, until=NOW)
        sms = compare_periods(conn, db, env_id=env.id, since=NOW - 2 * DAY_MS, until=NOW, channel="sms")
        push = compare_periods(conn, db, env_id=env.id, since=NOW - 2 * DAY_MS, until=NOW, channel="push")
    # CTR divides push clicks by push sends, not by the SMS sent beside them.
    assert every.changes["ctr"] == Change(current=0.1, previous=0.05)
    assert every.changes["sent"] == Change(current=100, previous=20)
    assert (sms.current.sent, sms.current.failed_total, sms.current.ctr, sms.changes["ctr"]) == (90, 2, None, None)
    assert (push.current.sent, push.previous.sent, push.current.failed_total) == (10, 20, 0)


def test_today_against_yesterday_until_the_same_time(client: AppClient, env: Env) -> None:
    db = client.app.db
    today_9 = int(datetime(2026, 3, 10, 9, 0, tzinfo=SEOUL).timestamp() * 1000)
    add_counts(db, env, today_9, {"SENT": 8})
    add_counts(db, env, today_9 - DAY_MS, {"SENT": 4})  # yesterday 09:00: counted
    add_counts(db, env, today_9 - DAY_MS + 11 * HOUR_MS, {"SENT": 100})  # yesterday 20:00: after 15:30
    add_counts(db, env, today_9 - 2 * DAY_MS, {"SENT": 100})  # the day before
    with db.transaction(write=False) as conn:
        found = today_vs_yesterday(conn, db, env_id=env.id, timezone="Asia/Seoul", now_ms=NOW, campaign_key=3)
    midnight = int(datetime(2026, 3, 10, tzinfo=SEOUL).timestamp() * 1000)
    assert (found.since, found.previous_since) == (midnight, midnight - DAY_MS)
    assert found.previous_until - found.previous_since == found.until - found.since
    assert found.changes["sent"] == Change(current=8, previous=4)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        pytest.param("2026-02-30", "2026-03-01", "from must be a date", id="no-such-day"),
        pytest.param("0001-01-01", "0001-12-31", "between 1970 and 9998", id="year-one"),
        pytest.param("2026-01-01", "9999-12-31", "between 1970 and 9998", id="year-9999"),
        pytest.param("2026-03-02", "2026-03-01", "on or after", id="reversed"),
        pytest.param("2025-01-01", "2026-01-02", "at most 366 days", id="too-long"),
        pytest.param("yesterday", "today", "YYYY-MM-DD", id="words"),
    ],
)
def test_day_range_refuses_bad_dates(start: str, end: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        day_range(start, end, timezone="Asia/Seoul")


def test_day_range_is_local_days_both_included() -> None:
    since, until = day_range("2026-03-01", "2026-03-02", timezone="Asia/Seoul")
    assert datetime.fromtimestamp(since / 1000, SEOUL) == datetime(2026, 3, 1, tzinfo=SEOUL)
    assert until - since == 2 * DAY_MS
