"""The Gateways, Compare and against-before views and the CSV links, in Debian's Chromium against a
real ``magpie serve``: each page 200 at 1280 and 390 px, no console error, no horizontal overflow.

Screenshots land in build/screenshots/ (not in the repository); ``python -m
tests.dashboard.copy_screenshots`` copies the ones docs/dashboard.md shows into docs/img/.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import DESKTOP, PHONE
from tests.dashboard.served import Magpie, served
from tests.dashboard.test_browser_messages import daytime_zone

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
USERS = [f"user-{i}" for i in range(3)]
CAMPAIGNS: list[dict[str, Any]] = [
    {
        "key": 5,
        "name": "Restock alert",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "provider": "sandbox",
        "message": {"title": "{{ user_properties.name }}님, 재입고 알림", "body": "찜한 상품이 다시 들어왔어요"},
    },
    {
        "key": 6,
        "name": "Weekly picks",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "provider": "sandbox",
        "message": {"title": "이번 주 추천", "body": "{{ user_properties.name }}님을 위한 추천 상품"},
    },
    {
        "key": 12,
        "name": "Delivery notice",
        "status": "ACTIVE",
        "channel": "sms",
        "purpose": "INFORMATION",
        "message": {"text": "{{ user_properties.name }}님, 주문하신 상품이 도착했어요"},
    },
    {
        "key": 10,
        "name": "Order shipped",
        "status": "ACTIVE",
        "channel": "kakao",
        "type": "alimtalk",
        "message": {
            "templateCode": "ORDER_SHIPPED",
            "text": "#{고객명}님, 주문하신 상품이 출발했어요.",
            "variables": {"고객명": "{{ user_properties.name }}"},
        },
    },
]


@pytest.fixture(scope="module")
def magpie(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Magpie]:
    with served(tmp_path_factory.mktemp("reports") / "data") as instance:
        yield instance


@pytest.fixture(scope="module")
def sent(magpie: Magpie) -> dict[str, str]:
    """A push of each push campaign, an SMS and an AlimTalk through the sandbox; dispatch ids by name."""
    settings = {"smsOptOutNumber": "080-123-4567", "smsSender": "02-1234-5678", "paidMessagesDailyLimit": 500}
    magpie.admin("PUT", "", {"settings": settings, "timezone": daytime_zone()})
    for campaign in CAMPAIGNS:
        magpie.admin("POST", "/campaigns", campaign)
    for i, user in enumerate(USERS):
        magpie.ok("/v1/properties", {"userId": user, "operations": {"$set": {"name": f"고객{i}"}}})
        magpie.ok("/v1/properties/phone-numbers", {"userId": user, "phoneNumber": f"010-2222-000{i}"})
        token = {"userId": user, "deviceId": f"phone-{i}", "providerType": "FCM", "token": f"fcm-token-{i:04d}-abcdef"}
        magpie.ok("/v1/push-tokens", token)
    ids: dict[str, str] = {}
    for name, channel, key, users in (
        ("push", "push", 5, [*USERS, "nobody"]),
        ("push2", "push", 6, USERS[:2]),
        ("sms", "sms", 12, USERS),
        ("kakao", "kakao", 10, USERS[:1]),
    ):
        body = {"campaignKey": key, "users": [{"userId": u} for u in users]}
        dispatch_id = magpie.ok(f"/v1/{channel}-message/trigger/send", body)["dispatchId"]
        assert magpie.settle(dispatch_id, channel)["status"] == "COMPLETED"
        ids[name] = dispatch_id
    return ids


@pytest.fixture
def watched(page: Any) -> Iterator[tuple[Any, list[str]]]:
    """The page, and the console errors and page errors it reports."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # /favicon.ico is not this page's: answered here so that its 404 is not counted against the page.
    page.context.route("**/favicon.ico", lambda route: route.fulfill(status=204, body=b""))
    yield page, errors


def _look(page: Any, errors: list[str], path: str, name: str, magpie: Magpie) -> None:
    """Open ``path`` at both widths: 200, no console error, no horizontal overflow; screenshots."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size, suffix in ((DESKTOP, ""), (PHONE, "-phone")):
        page.set_viewport_size(size)
        response = page.goto(magpie.url + path)
        assert response is not None and response.status == 200, (path, response and response.status)
        page.wait_for_load_state("networkidle")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} overflows by {overflow}px at {size['width']}px"
        page.screenshot(path=str(SHOTS / f"{name}{suffix}.png"), full_page=True)
    assert errors == [], (path, errors)
    page.set_viewport_size(DESKTOP)


def test_gateways_page_in_the_browser(magpie: Magpie, sent: dict[str, str], watched: Any) -> None:
    page, errors = watched
    magpie.sign_in(page, "/dashboard/development/gateways")
    assert "Gateways" in page.locator("h1").inner_text()
    sms = page.locator("section.gateway", has=page.locator("h2", has_text="SMS")).inner_text()
    assert "sandbox" in sms and re.search(r"Sent\s+3\b", sms), sms
    assert page.locator("meter").get_attribute("max") == "500"
    per_day = page.locator("table.per-day").inner_text()
    assert "SMS" in per_day and "AlimTalk" in per_day and "alimtalk" not in per_day
    _look(page, errors, "/dashboard/development/gateways", "dashboard-gateways", magpie)
    page.get_by_role("link", name="Gateways").first.click()
    assert page.url.endswith("/dashboard/development/gateways")


def test_overview_and_campaign_show_figures_against_before(magpie: Magpie, sent: dict[str, str], watched: Any) -> None:
    page, errors = watched
    magpie.sign_in(page)
    today = page.locator("#today-vs-yesterday").inner_text()
    assert "Today" in today and "Yesterday" in today and "Sent" in today
    page.wait_for_function("() => document.querySelector('#overview-chart').width > 0 && window.Chart")
    _look(page, errors, "/dashboard/development/?range=30d", "dashboard-overview-against", magpie)
    page.get_by_label("Period").select_option("24h")
    page.get_by_role("button", name="Compare").click()
    assert "range=24h" in page.url and "Last 24 hours" in page.locator("#period-vs-previous").inner_text()
    _look(page, errors, "/dashboard/development/campaigns/5", "dashboard-campaign-against", magpie)
    period = page.locator("#period-vs-previous").inner_text()
    assert "Last 7 days" in period


def test_compare_page_in_the_browser(magpie: Magpie, sent: dict[str, str], watched: Any) -> None:
    page, errors = watched
    magpie.sign_in(page, "/dashboard/development/compare")
    page.get_by_label("Campaign A").select_option("5")
    page.get_by_label("Campaign B").select_option("6")
    page.get_by_role("button", name="Compare").click()
    table = page.locator("table.side-by-side").inner_text()
    assert "#5 Restock alert" in table and "#6 Weekly picks" in table
    _look(page, errors, "/dashboard/development/compare?a=5&b=6&range=7d", "dashboard-compare", magpie)


def test_csv_links_download_what_the_tables_show(magpie: Magpie, sent: dict[str, str], watched: Any) -> None:
    page, errors = watched
    magpie.sign_in(page, f"/dashboard/development/dispatches/{sent['push']}?outcome=EXCLUDED")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    saved = Path(download.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(saved)))
    assert [(r["userId"], r["outcome"], r["reason"]) for r in rows] == [("nobody", "EXCLUDED", "UNKNOWN_USER")]
    assert download.value.suggested_filename == f"dispatch-{sent['push']}-excluded.csv"

    page.goto(magpie.url + "/dashboard/development/campaigns/5?range=24h&grain=hour")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    figures = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8-sig"))))
    assert sum(int(r["sent"]) for r in figures) == 3 and sum(int(r["excluded"]) for r in figures) == 1
    assert errors == []
