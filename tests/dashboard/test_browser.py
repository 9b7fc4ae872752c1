"""The dashboard in Debian's Chromium against a real ``magpie serve``: every page, every form.

The tests share one server (module scope) and run in file order: the first one sends the seed's
trigger, the later ones look at what it left. Each test starts from a browser without cookies.
Screenshots of every page land in docs/img/ (desktop and phone width) for docs/dashboard.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_seeds import SEED_PHONE, SEED_PROPERTIES, SEED_PUSH
from tests.chromium import screenshot
from tests.dashboard.served import Magpie, served
from tests.dispatch.test_trigger import SEED_TRIGGER

pytestmark = pytest.mark.browser

SEED_USER = "eb24b2d8-21a3-4e95-b801-626ba0904e01"


@pytest.fixture(scope="module")
def magpie(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Magpie]:
    with served(tmp_path_factory.mktemp("dashboard") / "data") as instance:
        yield instance


@pytest.fixture(scope="module")
def seeded(magpie: Magpie) -> dict[str, Any]:
    """The seed's requests, a token for the seed's user, a click, and a few other recipients."""
    for path, body in (
        ("/v1/properties", SEED_PROPERTIES),
        ("/v1/properties/phone-numbers", SEED_PHONE),
        ("/v1/push-subscriptions", SEED_PUSH),
    ):
        assert magpie.post(path, body).status_code == 200
    assert magpie.post("/v1/properties", {"userId": SEED_USER, "operations": {"$set": {"name": "김민지"}}}).is_success
    token = {"userId": SEED_USER, "deviceId": "phone-1", "providerType": "FCM", "token": "fcm-token-0001-abcdef"}
    assert magpie.post("/v1/push-tokens", token).status_code == 200
    response = magpie.post("/v1/push-message/trigger/send", SEED_TRIGGER)
    assert response.status_code == 200, response.text
    dispatch_id = response.json()["dispatchId"]
    others = magpie.post(
        "/v1/push-message/trigger/send",
        {"campaignKey": 1, "users": [{"userId": "19285035"}, {"userId": "nobody-yet"}, {"deviceId": "ae2182e0"}]},
    )
    assert others.status_code == 200
    view = magpie.settle(dispatch_id)
    magpie.settle(others.json()["dispatchId"])
    delivery = view["recipients"][0]["deliveries"][0]
    click = {
        "insertId": "click-0001",
        "timestamp": int(time.time() * 1000),
        "userId": None,
        "identifiers": {"$userId": SEED_USER, "$deviceId": "phone-1"},
        "userProperties": {},
        "hackleProperties": {},
        "eventTypeId": 0,
        "eventTypeKey": "$push_click",
        "value": None,
        "properties": {
            "push_message_id": 1,
            "push_message_key": 1,
            "push_message_execution_id": view["executionId"],
            "push_message_delivery_id": delivery["deliveryId"],
            "campaign_type": "PUSH_MESSAGE",
            "debug": False,
        },
    }
    purchase = {**click, "insertId": "purchase-0001", "eventTypeKey": "purchase", "properties": {"amount": 12000}}
    purchase["identifiers"] = {"$userId": "19285035"}
    for event in (click, {**click, "insertId": "click-0002"}, purchase):
        batch = {"exposureEvents": [], "trackEvents": [event], "remoteConfigEvents": []}
        sent = magpie.http.post("/api/v2/events", json=batch, headers={"X-HACKLE-SDK-KEY": magpie.key})
        assert sent.status_code == 200, sent.text
    return {"dispatchId": dispatch_id, "view": view}


def test_dashboard_page_without_session_redirects_to_sign_in(magpie: Magpie, page: Any) -> None:
    page.goto(magpie.url + "/dashboard/development/campaigns")
    assert page.url.startswith(magpie.url + "/dashboard/login?next=")
    assert page.get_by_label("Admin token").is_visible()
    screenshot(page, "dashboard-login")
    page.get_by_label("Admin token").fill("mga_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    assert "not valid" in page.get_by_role("alert").inner_text()


def test_dashboard_sign_in_and_out_with_the_printed_admin_token(magpie: Magpie, page: Any) -> None:
    magpie.sign_in(page, "/dashboard/development/keys")
    assert page.url == magpie.url + "/dashboard/development/keys"
    cookie = next(c for c in page.context.cookies() if c["name"] == "magpie_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/dashboard/login$"))
    page.goto(magpie.url + "/dashboard/development/")
    assert "/dashboard/login" in page.url


def test_dashboard_seed_trigger_counts_on_overview_campaign_and_dispatch(
    magpie: Magpie, seeded: dict[str, Any], page: Any
) -> None:
    magpie.sign_in(page)
    numbers = page.locator("table.numbers")
    assert _cell(numbers, "Requested", 0) == "4"  # the seed's user, plus three others
    assert _cell(numbers, "Sent", 0) == "1"
    assert _cell(numbers, "Excluded", 0) == "3"
    assert _cell(numbers, "Unique clicks", 0) == "1" and _cell(numbers, "Total clicks", 0) == "2"
    assert _cell(numbers, "CTR", 0) == "100.0%"
    page.wait_for_function("() => document.querySelector('#overview-chart').width > 0 && window.Chart")
    screenshot(page, "dashboard-overview")

    page.get_by_role("link", name="Campaigns").click()
    row = page.locator("table.campaigns tbody tr", has_text="Demo")
    assert "ACTIVE" in row.inner_text() and "100.0%" in row.inner_text()
    screenshot(page, "dashboard-campaigns")

    page.get_by_role("link", name=re.compile("Demo")).first.click()
    funnel = page.locator("ol.funnel").inner_text()
    assert re.search(r"Requested\s+4", funnel) and re.search(r"Sent\s+1", funnel), funnel
    assert "NO_PUSH_TOKEN" in funnel and "UNKNOWN_USER" in funnel
    # Sample data from the template's own properties, then the seed's user as herself.
    assert "[name]님, 기다리던 상품이 입고됐어요" in page.locator(".notification").inner_text()
    page.get_by_label("Preview as user").fill(SEED_USER)
    page.get_by_role("button", name="Preview").click()
    assert "김민지님, 기다리던 상품이 입고됐어요" in page.locator(".notification").inner_text()
    page.wait_for_function("() => document.querySelector('#campaign-chart').width > 0 && window.Chart")
    screenshot(page, "dashboard-campaign")

    page.goto(magpie.url + f"/dashboard/development/dispatches/{seeded['dispatchId']}")
    assert SEED_USER in page.locator("table.recipients").inner_text()
    assert "SENT" in page.locator("table.recipients").inner_text()
    screenshot(page, "dashboard-dispatch")


def test_dashboard_dispatch_filters_by_outcome(magpie: Magpie, seeded: dict[str, Any], page: Any) -> None:
    magpie.sign_in(page)
    page.goto(magpie.url + "/dashboard/development/")
    page.locator("table").filter(has_text="Accepted").locator("tbody tr").first.get_by_role("link").first.click()
    page.get_by_label("Outcome").select_option("EXCLUDED")
    page.get_by_role("button", name="Filter").click()
    text = page.locator("table.recipients").inner_text()
    assert "nobody-yet" in text and "19285035" in text and "SENT" not in text


def test_dashboard_user_lookup_shows_the_event_snapshot(magpie: Magpie, seeded: dict[str, Any], page: Any) -> None:
    magpie.sign_in(page)
    page.get_by_role("link", name="Users").click()
    page.get_by_label("User id or device id").fill("ae2182e0")  # a device: finds the user it is linked to
    page.get_by_role("button", name="Look up").click()
    assert "19285035" in page.locator("h2").inner_text()
    page.locator("details.event", has_text="purchase").locator("summary").click()
    snapshot = page.locator("details.event", has_text="purchase").inner_text()
    assert '"grade": "GOLD"' in snapshot and '"amount": 12000' in snapshot
    consents = page.locator("#consents ~ div table").inner_text()
    assert re.search(r"push\s+marketing\s+UNSUBSCRIBED", consents) and re.search(
        r"push\s+information\s+SUBSCRIBED", consents
    )
    profile = page.locator("main").inner_text()
    assert "+821012345678" not in profile and "5678" in profile  # the phone number, masked
    screenshot(page, "dashboard-user")
    page.get_by_label("User id or device id").fill(SEED_USER)
    page.get_by_role("button", name="Look up").click()
    assert "attributed" in page.locator("details.event", has_text="$push_click").first.inner_text()
    assert "fcm-toke…" in page.locator("#devices ~ div table").inner_text()


def test_dashboard_sandbox_inbox_shows_the_push_like_a_phone(magpie: Magpie, seeded: dict[str, Any], page: Any) -> None:
    magpie.sign_in(page)
    page.get_by_role("link", name="Inbox").click()
    notification = page.locator("article.notification").first
    assert "김민지님, 기다리던 상품이 입고됐어요" in notification.inner_text()
    assert "상품 123 지금 확인해 보세요." in notification.inner_text()
    assert "magpie-demo://products/123" in notification.inner_text()
    screenshot(page, "dashboard-inbox")


def test_dashboard_key_created_then_revoked_is_rejected(magpie: Magpie, page: Any) -> None:
    magpie.sign_in(page)
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Name").fill("backend")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("The new API key").input_value()
    assert key.startswith("mgp_")
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied").wait_for()
    screenshot(page, "dashboard-keys")
    body = {"userId": "key-check", "operations": {"$set": {"a": 1}}}
    assert magpie.post("/v1/properties", body, key=key).status_code == 200

    page.goto(magpie.url + "/dashboard/development/keys")
    page.locator("tr", has_text="backend").get_by_role("link", name="Revoke…").click()
    screenshot(page, "dashboard-key-revoke")
    page.get_by_role("button", name="Revoke key").click()
    assert "REVOKED" in page.locator("tr", has_text="backend").inner_text()
    rejected = magpie.post("/v1/properties", body, key=key)
    assert (rejected.status_code, rejected.json()["code"]) == (401, "INVALID_API_KEY")


def test_dashboard_forged_post_without_csrf_is_refused(magpie: Magpie, page: Any) -> None:
    magpie.sign_in(page)
    url = magpie.url + "/dashboard/development/campaigns/1/status"
    for form in ({"to": "PAUSED"}, {"to": "PAUSED", "csrf": "guessed"}):
        response = page.request.post(url, form=form)
        assert response.status == 403, form
    page.goto(magpie.url + "/dashboard/development/campaigns/1")
    assert "ACTIVE" in page.locator("h1").inner_text()


def test_dashboard_pause_makes_triggers_campaign_not_found(magpie: Magpie, seeded: dict[str, Any], page: Any) -> None:
    magpie.sign_in(page)
    page.goto(magpie.url + "/dashboard/development/campaigns/1")
    page.get_by_role("button", name="Pause…").click()
    screenshot(page, "dashboard-campaign-pause")
    page.get_by_role("button", name="Pause campaign").click()
    assert "PAUSED" in page.locator("h1").inner_text()
    changes = page.locator("#who ~ ul").last.inner_text()
    assert f"({magpie.token[:12]}…) · status → PAUSED" in changes, changes
    refused = magpie.post("/v1/push-message/trigger/send", SEED_TRIGGER)
    assert (refused.status_code, refused.json()["code"]) == (400, "CAMPAIGN_NOT_FOUND")

    page.get_by_role("button", name="Activate…").click()
    page.get_by_role("button", name="Activate campaign").click()
    assert "ACTIVE" in page.locator("h1").inner_text()
    assert magpie.post("/v1/push-message/trigger/send", SEED_TRIGGER).status_code == 200


def _cell(table: Any, row: str, column: int) -> str:
    text: str = (
        table.locator("tr", has=table.page.locator(f"th:text-is('{row}')")).locator("td").nth(column).inner_text()
    )
    return text.strip()


def test_dashboard_screenshots_exist_at_both_widths() -> None:
    shots = Path(__file__).resolve().parents[2] / "docs" / "img"
    for name in ("login", "overview", "campaigns", "campaign", "dispatch", "user", "inbox", "keys"):
        assert (shots / f"dashboard-{name}.png").exists() and (shots / f"dashboard-{name}-phone.png").exists(), name
