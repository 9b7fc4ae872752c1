"""Figures against before on the overview and campaign pages, and two campaigns side by side, over the
real ASGI app on both engines."""

from __future__ import annotations

import re
import time

import pytest

from magpie.store.stats import DAY_MS
from tests.dashboard.test_session import _send, _sign_in
from tests.store.test_periods import add_counts
from tests.support import AppClient, Env, apply_campaign


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _table(html: str, table_id: str) -> str:
    found = re.search(rf'<table[^>]*id="{table_id}".*?</table>', html, re.S)
    assert found is not None, table_id
    return _text(found.group(0))


@pytest.fixture
def counted(client: AppClient, env: Env) -> None:
    """Two push campaigns; today so far, yesterday at the same hour, and four days ago."""
    apply_campaign(client, env, key=3, name="Spring sale")
    apply_campaign(client, env, key=4, name="Restock alert")
    now = int(time.time() * 1000)
    db = client.app.db
    add_counts(db, env, now, {"REQUESTED": 9, "SENT": 8, "UNIQUE_CLICK": 2, "EXCLUDED:NO_CONSENT": 1})
    add_counts(db, env, now - DAY_MS, {"REQUESTED": 4, "SENT": 4, "UNIQUE_CLICK": 2})
    add_counts(db, env, now - 4 * DAY_MS, {"REQUESTED": 10, "SENT": 10})
    add_counts(db, env, now - 10 * DAY_MS, {"REQUESTED": 5, "SENT": 5})  # the previous 7 days
    add_counts(db, env, now - DAY_MS, {"REQUESTED": 20, "SENT": 16, "FAILED:HTTP_500": 4}, campaign_key=4)


def _sms(client: AppClient, env: Env) -> None:
    """An informational SMS campaign (key 12) with 5 sent today: no clicks to count."""
    campaign = {
        "key": 12,
        "name": "Delivery notice",
        "status": "ACTIVE",
        "channel": "sms",
        "purpose": "INFORMATION",
        "message": {"text": "주문하신 상품이 도착했어요"},
    }
    response = client.post(f"/admin/v1/environments/{env.name}/campaigns", json=campaign, headers=env.admin)
    assert response.status_code == 200, response.text
    add_counts(client.app.db, env, int(time.time() * 1000), {"REQUESTED": 5, "SENT": 5}, campaign_key=12)


def test_overview_shows_today_against_yesterday_and_the_period_against_the_previous(
    client: AppClient, env: Env, counted: None
) -> None:
    cookies = _sign_in(client, env)
    response = _send(client, "GET", f"/dashboard/{env.name}/", cookies=cookies)
    assert response.status_code == 200, response.text[:2000]
    today = _table(response.text, "today-vs-yesterday")
    # Today 8 sent, yesterday 4 + 16 of the other campaign: -12, -60%.
    assert "Sent 8 20 -12 -60.0%" in today, today
    assert "Unknown 0 0 0 —" in today and "Excluded 1 0 +1 —" in today
    assert "CTR 25.0% 10.0% +15.0 pp +150.0%" in today, today
    week = _table(response.text, "period-vs-previous")
    assert "Sent 38 5 +33 +660.0%" in week, week
    # The last 24 hours start at yesterday's hour; the 24 hours before them end there.
    day = _send(client, "GET", f"/dashboard/{env.name}/?range=24h", cookies=cookies).text
    assert "Sent 28 0 +28 —" in _table(day, "period-vs-previous")


def test_overview_channel_filter_applies_to_its_comparisons(client: AppClient, env: Env, counted: None) -> None:
    _sms(client, env)
    cookies = _sign_in(client, env)
    every = _send(client, "GET", f"/dashboard/{env.name}/?range=7d", cookies=cookies).text
    # Push clicks over push sends only: 2 / 8, not 2 / (8 + 5 SMS).
    assert "Sent 13 20 -7 -35.0%" in _table(every, "today-vs-yesterday")
    assert "CTR 25.0% 10.0% +15.0 pp +150.0%" in _table(every, "today-vs-yesterday")
    sms = _send(client, "GET", f"/dashboard/{env.name}/?channel=sms&range=30d", cookies=cookies).text
    today = _table(sms, "today-vs-yesterday")
    assert "Sent 5 0 +5 —" in today and "CTR — — — —" in today and "Unique clicks — — — —" in today, today
    assert "Sent 5 0 +5 —" in _table(sms, "period-vs-previous")
    # Each form keeps the other's choice.
    assert '<input type="hidden" name="channel" value="sms">' in sms
    assert '<input type="hidden" name="range" value="30d">' in sms


def test_campaign_page_compares_its_own_range(client: AppClient, env: Env, counted: None) -> None:
    cookies = _sign_in(client, env)
    response = _send(client, "GET", f"/dashboard/{env.name}/campaigns/4?range=7d", cookies=cookies)
    assert response.status_code == 200, response.text[:2000]
    assert "Sent 0 16 -16 -100.0%" in _table(response.text, "today-vs-yesterday")
    period = _table(response.text, "period-vs-previous")
    assert "Sent 16 0 +16 —" in period and "Failed 4 0 +4 —" in period
    bad = _send(client, "GET", f"/dashboard/{env.name}/campaigns/4?from=0001-01-01&to=0001-01-02", cookies=cookies)
    assert bad.status_code == 400 and "INVALID_REQUEST" in bad.text


def test_compare_page_sets_two_campaigns_side_by_side(client: AppClient, env: Env, counted: None) -> None:
    cookies = _sign_in(client, env)
    e = f"/dashboard/{env.name}"
    empty = _send(client, "GET", e + "/compare", cookies=cookies)
    assert empty.status_code == 200 and "Choose two campaigns" in empty.text
    assert "#3 Spring sale (push)" in _text(empty.text) and f'href="{e}/compare"' in empty.text

    response = _send(client, "GET", e + "/compare?a=3&b=4&range=7d", cookies=cookies)
    assert response.status_code == 200, response.text[:2000]
    page = _text(response.text)
    assert "A · #3 Spring sale" in page and "B · #4 Restock alert" in page
    assert "Sent 22 16 -6 -27.3%" in page, page
    assert "Failed 0 4 +4 —" in page and "Channel push push" in page

    # An SMS campaign has no clicks: its click figures and CTR are absent, and so is their change.
    _sms(client, env)
    mixed = _text(_send(client, "GET", e + "/compare?a=3&b=12&range=7d", cookies=cookies).text)
    assert "Channel push sms" in mixed and "Sent 22 5 -17 -77.3%" in mixed, mixed
    assert re.search(r"CTR \d+\.\d% — — —", mixed) and "Unique clicks 4 — — —" in mixed, mixed

    for query, status in (("?a=3&b=x", 400), ("?a=3&b=999", 404), ("?a=3&b=4&from=2026-01-02&to=2026-01-01", 400)):
        assert _send(client, "GET", e + "/compare" + query, cookies=cookies).status_code == status, query
