"""Every dashboard page of every channel, found by following links, in Debian's Chromium.

A real ``magpie serve`` gets one campaign of every channel and type (push, AlimTalk, brand message,
marketing SMS, informational LMS through a gateway, MMS) and recipients in every outcome: SENT,
FAILED, EXCLUDED, SCHEDULED (held for night time) and UNKNOWN (a fake NHN Cloud on loopback that
takes a batch and never says what it took). Then the test starts at the overview and follows every
``/dashboard/…`` link breadth-first, opening each page at desktop and phone width: each answers 200,
logs no console error and has no horizontal overflow. A new page type linked from anywhere is covered
without a new test. Screenshots of each campaign page go to build/screenshots/ (not tracked).
"""

from __future__ import annotations

import base64
import re
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pytest

from tests.chromium import DESKTOP, PHONE
from tests.dashboard.served import Magpie, served
from tests.dashboard.test_browser_messages import CAMPAIGNS as MESSAGE_CAMPAIGNS
from tests.fakes.nhn import FakeNhn

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
MAX_PAGES = 400
# A 1x1 JPEG a browser decodes (the MMS image, served by the fake gateway on loopback).
PIXEL = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////"
    "////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA="
)
USER, NIGHT_OWL, NO_NUMBER = "u-minji", "u-owl", "u-nonumber"


def _zone_at(hour: int) -> tuple[str, int]:
    """A fixed-offset zone where it is about ``hour`` o'clock now, and the local hour there."""
    now = datetime.now(UTC)
    offset = (hour - now.hour + 12) % 24 - 12
    zone = "UTC" if offset == 0 else (f"Etc/GMT-{offset}" if offset > 0 else f"Etc/GMT+{-offset}")
    return zone, (now + timedelta(hours=offset)).hour


ZONE, LOCAL_HOUR = _zone_at(12)


def _campaigns(image_url: str) -> list[dict[str, Any]]:
    alimtalk, brand, marketing_sms, lms = (dict(c) for c in MESSAGE_CAMPAIGNS)
    return [
        {
            "key": 20,
            "name": "주말 할인 푸시",
            "status": "ACTIVE",
            "purpose": "MARKETING",
            "provider": "sandbox",
            "tags": ["sale"],
            "message": {
                "title": "{{ user_properties.name | default: '고객' }}님, 지금 주문하면 "
                "{{ api_properties.discount }}% 할인",
                "body": "주말에만 드리는 혜택",
                "clickAction": "DEEP_LINK",
                "link": "shop://sale/{{ api_properties.discount }}",
            },
        },
        {  # FCM is not configured: its recipients end FAILED PROVIDER_NOT_CONFIGURED.
            "key": 21,
            "name": "Order update",
            "status": "ACTIVE",
            "purpose": "INFORMATION",
            "provider": "push",
            "message": {"title": "주문 {{ api_properties.orderNo }}", "body": "배송이 시작됐어요"},
        },
        {**alimtalk, "provider": "sandbox"},
        {**brand, "provider": "sandbox"},
        {**marketing_sms, "provider": "sandbox"},
        # The informational LMS goes through the (fake) NHN Cloud gateway, which leaves it UNKNOWN.
        {**lms, "provider": "gateway"},
        {
            "key": 15,
            "name": "New arrivals",
            "status": "ACTIVE",
            "channel": "sms",
            "purpose": "INFORMATION",
            "provider": "sandbox",
            "message": {
                "title": "신상품 입고",
                "text": "{{ user_properties.name }}님, 새 상품을 확인하세요.",
                "imageUrls": [image_url],
            },
        },
    ]


@pytest.fixture(scope="module")
def nhn() -> Iterator[FakeNhn]:
    with FakeNhn() as fake:
        yield fake


@pytest.fixture(scope="module")
def magpie(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Magpie]:
    # One attempt per delivery: a gateway that never answers settles as UNKNOWN at once.
    with served(tmp_path_factory.mktemp("crawl") / "data", env={"MAGPIE_MAX_DELIVERY_ATTEMPTS": "1"}) as instance:
        yield instance


def _wait(magpie: Magpie, dispatch_id: str, channel: str, status: str) -> dict[str, Any]:
    """Poll a dispatch until the in-process worker brings it to ``status``."""
    deadline = time.monotonic() + 20
    while True:
        view: dict[str, Any] = magpie.http.get(
            f"/v1/{channel}-message/dispatches/{dispatch_id}", headers=magpie.headers()
        ).json()
        if view["status"] == status or time.monotonic() > deadline:
            assert view["status"] == status, view
            return view
        time.sleep(0.1)


@pytest.fixture(scope="module")
def outcomes(magpie: Magpie, nhn: FakeNhn) -> dict[str, Any]:
    """Every channel and type sent, with recipients in every outcome; returns the outcomes seen
    (``seen``) and the dispatch held for night time (``held``)."""
    settings: dict[str, Any] = {
        "smsOptOutNumber": "080-123-4567",
        "smsSender": "02-1234-5678",
        "senderName": "magpie shop",
        "smsGateway": "nhn",
        "providers": {"nhn": nhn.config()},
        "frequencyCaps": [
            {"limit": 1, "windowHours": 24, "channel": "sms"},
            {"limit": 3, "windowHours": 168, "channel": "push"},
        ],
    }
    magpie.admin("PUT", "", {"settings": settings, "timezone": ZONE})
    for campaign in _campaigns(nhn.image_url("new.jpg", PIXEL)):
        magpie.admin("POST", "/campaigns", campaign)
    for user, phone in ((USER, "010-1234-5678"), (NIGHT_OWL, "010-2222-3333"), (NO_NUMBER, None)):
        magpie.ok("/v1/properties", {"userId": user, "operations": {"$set": {"name": "김민지", "grade": "GOLD"}}})
        if phone:
            magpie.ok("/v1/properties/phone-numbers", {"userId": user, "phoneNumber": phone})
        consent = {"userId": user, "marketingSubscriptionStatus": "SUBSCRIBED"}
        for channel in ("push", "kakao", "sms"):
            magpie.ok(f"/v1/{channel}-subscriptions", consent)
        token = {"userId": user, "deviceId": f"phone-{user}", "providerType": "FCM", "token": f"fcm-{user}-0123456789"}
        magpie.ok("/v1/push-tokens", token)
    nhn.drop_after_accept = nhn.fail_queries = 100  # takes the LMS batch, never answers, cannot be asked
    seen: dict[str, int] = {}
    everyone = [{"userId": USER}, {"userId": NO_NUMBER}, {"userId": "ghost"}]
    day = [
        ("push", 20, everyone, {"discount": 20}),
        ("push", 21, [{"userId": USER}], {"orderNo": "A-1024"}),
        ("kakao", 10, everyone, {"orderNo": "A-1024"}),
        ("kakao", 11, [{"userId": USER}], {}),
        ("sms", 12, everyone, {}),
        ("sms", 14, [{"userId": USER}], {}),
        ("sms", 15, [{"userId": USER}], {}),
    ]
    for channel, key, users, properties in day:
        body = {"campaignKey": key, "users": [{**u, "apiProperties": properties} for u in users]}
        dispatch_id = magpie.ok(f"/v1/{channel}-message/trigger/send", body)["dispatchId"]
        for r in _wait(magpie, dispatch_id, channel, "COMPLETED")["recipients"]:
            seen[r["outcome"]] = seen.get(r["outcome"], 0) + 1
    # Night time now (the environment's window around this hour): a marketing push waits for morning.
    night = {**settings, "nightStart": f"{(LOCAL_HOUR - 1) % 24:02d}:00", "nightEnd": f"{(LOCAL_HOUR + 2) % 24:02d}:00"}
    magpie.admin("PUT", "", {"settings": night, "timezone": ZONE})
    body = {"campaignKey": 20, "users": [{"userId": NIGHT_OWL, "apiProperties": {"discount": 30}}]}
    held = magpie.ok("/v1/push-message/trigger/send", body)["dispatchId"]
    assert _wait(magpie, held, "push", "SCHEDULED")["counts"]["PENDING"] == 1
    seen["SCHEDULED"] = 1
    return {"seen": seen, "held": held}


def test_crawl_every_dashboard_page_of_every_channel_at_both_widths(
    magpie: Magpie, outcomes: dict[str, Any], browser: Any
) -> None:
    assert {"SENT", "FAILED", "EXCLUDED", "UNKNOWN", "SCHEDULED"} <= set(outcomes["seen"]), outcomes
    context = browser.new_context(viewport=DESKTOP, locale="ko-KR")
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"{page.url}: console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: problems.append(f"{page.url}: {e}"))
    magpie.sign_in(page)
    start = magpie.url + "/dashboard/development/"
    queue, seen = deque([start]), {start}
    visited: list[str] = []
    shot: set[str] = set()
    while queue:
        url = queue.popleft()
        visited.append(url)
        kind = _kind(url)
        for viewport in (DESKTOP, PHONE):
            page.set_viewport_size(viewport)
            response = page.goto(url)
            assert response is not None and response.status == 200, f"{url}: {response and response.status}"
            page.wait_for_load_state("load")
            width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if width[0] > width[1]:
                problems.append(f"{url} at {viewport['width']} px: {width[0]} px wide")
            if re.search(r"\bNone\b", page.inner_text("main")):
                problems.append(f"{url}: Python's None on the page")
            each = "/dispatches/" in url or "/users?" in url  # every dispatch and user, the first of the rest
            if kind not in shot or each:
                name = kind.strip("/").replace("/", "-").replace("…", "x") or "overview"
                if each:
                    name += "-" + re.sub(r"[^\w-]", "_", urlsplit(url).path.rsplit("/", 1)[1][:8] + urlsplit(url).query)
                SHOTS.mkdir(parents=True, exist_ok=True)
                suffix = "-phone" if viewport is PHONE else ""
                page.screenshot(path=str(SHOTS / f"crawl-{name}{suffix}.png"), full_page=True)
        shot.add(kind)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            link = urldefrag(href)[0]
            parts = urlsplit(link)
            if (
                parts.netloc == urlsplit(magpie.url).netloc
                and parts.path.startswith("/dashboard/")
                and link not in seen
            ):
                if "/static/" not in parts.path and len(seen) < MAX_PAGES:
                    seen.add(link)
                    queue.append(link)
    assert not problems, "\n".join(problems)
    assert len(visited) >= 30, visited
    kinds = {_kind(u) for u in visited}
    for expected in ("/campaigns/…", "/dispatches/…", "/users", "/inbox", "/consent", "/keys"):
        assert any(k.endswith(expected) for k in kinds), (expected, sorted(kinds))
    for key in (20, 21, 10, 11, 12, 14, 15):
        assert any(urlsplit(u).path.endswith(f"/campaigns/{key}") for u in visited), key
    context.close()


@pytest.mark.parametrize(
    ("key", "shows"),
    [
        pytest.param(20, ["(광고) magpie shop [name]님, 지금 주문하면 [discount]% 할인"], id="push"),
        pytest.param(
            10,
            [
                "ORDER_SHIPPED",
                "[name]님, 주문하신 상품이 출발했어요.",
                "주문번호: [orderNo]",
                "배송 조회",
                "If Kakao cannot",
            ],
            id="alimtalk",
        ),
        pytest.param(11, ["겨울 세일이 시작됐어요", "세일 보러 가기"], id="brand"),
        pytest.param(12, ["(광고)magpie shop", "무료수신거부 080-123-4567", "bytes in EUC-KR", "SMS"], id="sms"),
        pytest.param(14, ["LMS", "정기 점검 안내", "bytes in EUC-KR"], id="lms"),
        pytest.param(15, ["MMS", "신상품 입고"], id="mms"),
    ],
)
def test_campaign_page_previews_each_channel_as_the_phone_shows_it(
    magpie: Magpie, outcomes: dict[str, Any], page: Any, key: int, shows: list[str]
) -> None:
    assert outcomes
    magpie.sign_in(page, f"/dashboard/development/campaigns/{key}")
    preview = page.locator("#message ~ .phone, #message ~ div.phone").first.inner_text()
    for text in shows:
        assert text in preview, (text, preview)
    if key in (10, 11):  # Kakao counts characters: no EUC-KR byte count on the bubble itself
        assert "bytes in EUC-KR" not in page.locator(".bubble").inner_text()
    sample = page.locator("#message").locator("..").locator("details pre").inner_text()
    assert "\\u" not in sample
    page.get_by_label("Preview as user").fill(USER)
    page.get_by_role("button", name="Preview").click()
    page.wait_for_load_state()
    assert "김민지" in page.locator("#message").locator("..").locator(".phone").inner_text()
    _shoot(page, f"campaign-{key}")


def test_caps_on_a_push_campaign_are_the_push_caps_only(magpie: Magpie, outcomes: dict[str, Any], page: Any) -> None:
    assert outcomes
    magpie.sign_in(page, "/dashboard/development/campaigns/20")
    caps = page.locator("ul.caps").inner_text()
    assert "at most 3 marketing pushes per user in 7 days" in caps and "SMS" not in caps
    page.goto(magpie.url + "/dashboard/development/campaigns/12")
    assert "at most 1 marketing SMS per user in 1 day" in page.locator("ul.caps").inner_text()


def test_campaign_list_names_channel_type_and_gateway(magpie: Magpie, outcomes: dict[str, Any], page: Any) -> None:
    assert outcomes
    magpie.sign_in(page, "/dashboard/development/campaigns")

    def row(key: int) -> str:
        text: str = page.locator("table.campaigns tbody tr", has_text=f"#{key}").first.inner_text()
        return re.sub(r"\s+", " ", text)

    assert "SMS · LMS ACTIVE INFORMATION NHN Cloud" in row(14)
    assert "SMS · MMS ACTIVE INFORMATION sandbox" in row(15)
    assert "Kakao brand message" in row(11) and "Kakao AlimTalk" in row(10)
    assert "FCM / APNs" in row(21) and row(12).endswith("— —")  # no clicks, no CTR for an SMS
    page.get_by_label("Channel").select_option("kakao")
    page.get_by_role("button", name="Filter").click()
    listed = page.locator("table.campaigns tbody tr").all_inner_texts()
    assert len(listed) == 2 and all("Kakao" in r for r in listed), listed


def test_held_recipient_shows_when_it_is_released(magpie: Magpie, outcomes: dict[str, Any], page: Any) -> None:
    magpie.sign_in(page, f"/dashboard/development/dispatches/{outcomes['held']}")
    release = f"{(LOCAL_HOUR + 2) % 24:02d}:00"
    assert "SCHEDULED" in page.locator("h1").inner_text()
    row = page.locator("table.recipients tbody tr", has_text=NIGHT_OWL).inner_text()
    assert "SCHEDULED" in row and "released" in row and release in row
    assert "1 recipient held for the end of night time" in page.locator("main").inner_text()
    page.get_by_role("link", name=NIGHT_OWL).click()
    shown = page.locator("table.outcomes tbody tr", has_text="주말 할인 푸시").inner_text()
    assert "SCHEDULED" in shown and release in shown


def test_pause_and_activate_a_kakao_campaign_land_on_its_page(
    magpie: Magpie, outcomes: dict[str, Any], page: Any
) -> None:
    assert outcomes
    magpie.sign_in(page, "/dashboard/development/campaigns/11")
    for button, confirm, status in (
        ("Pause…", "Pause campaign", "PAUSED"),
        ("Activate…", "Activate campaign", "ACTIVE"),
    ):
        page.get_by_role("button", name=button).click()
        page.get_by_role("button", name=confirm).click()
        page.wait_for_load_state()
        assert page.url.endswith("/campaigns/11") and status in page.locator("h1").inner_text()
        assert "겨울 세일이 시작됐어요" in page.locator(".phone").inner_text()


def _kind(url: str) -> str:
    """A page's type: its path with ids and keys left out (``/dashboard/development/campaigns/…``)."""
    return re.sub(r"/[0-9a-f-]{36}|/\d+", "/…", urlsplit(url).path)


def _shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for viewport, suffix in ((DESKTOP, ""), (PHONE, "-phone")):
        page.set_viewport_size(viewport)
        page.screenshot(path=str(SHOTS / f"{name}{suffix}.png"), full_page=True)
        page.locator("#message").locator("..").screenshot(path=str(SHOTS / f"{name}-message{suffix}.png"))
    page.set_viewport_size(DESKTOP)
