"""The sandbox inbox draws Kakao and text messages, in Debian's Chromium against a real ``magpie serve``.

An AlimTalk with buttons and an SMS fallback, a brand message, a marketing SMS and an LMS go through
Hackle's Kakao trigger and magpie's SMS trigger to the sandbox gateways; the inbox page shows each
as a bubble with its type, purpose, byte count and masked number. The screenshot lands in
docs/img/inbox-messages.png for docs/dashboard.md.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.chromium import screenshot
from tests.dashboard.served import Magpie, served

pytestmark = pytest.mark.browser

TEMPLATE = "#{고객명}님, 주문하신 상품이 출발했어요.\n주문번호: #{주문번호}"
LMS_TEXT = (
    "{{ user_properties.name }}님, 12월 정기 점검 안내입니다.\n"
    "12월 3일(수) 02:00부터 04:00까지 주문과 결제가 잠시 멈춥니다. "
    "점검 중 결제하신 주문은 점검이 끝난 뒤 순서대로 처리됩니다."
)
CAMPAIGNS: list[dict[str, Any]] = [
    {
        "key": 10,
        "name": "Order shipped",
        "status": "ACTIVE",
        "channel": "kakao",
        "type": "alimtalk",
        "message": {
            "templateCode": "ORDER_SHIPPED",
            "text": TEMPLATE,
            "variables": {"고객명": "{{ user_properties.name }}", "주문번호": "{{ api_properties.orderNo }}"},
            "buttons": [
                {"type": "WL", "name": "배송 조회", "linkMo": "https://shop.example/track/#{주문번호}"},
                {"type": "WL", "name": "주문 상세", "linkMo": "https://shop.example/orders/#{주문번호}"},
            ],
            "fallback": {"text": "[magpie shop] 주문 #{주문번호} 출발"},
        },
    },
    {
        "key": 11,
        "name": "Winter sale",
        "status": "ACTIVE",
        "channel": "kakao",
        "type": "brand",
        "message": {
            "text": "{{ user_properties.name }}님, 겨울 세일이 시작됐어요. 오늘만 전 품목 20% 할인!",
            "buttons": [{"type": "WL", "name": "세일 보러 가기", "linkMo": "https://shop.example/sale"}],
        },
    },
    {
        "key": 12,
        "name": "Spring sale",
        "status": "ACTIVE",
        "channel": "sms",
        "purpose": "MARKETING",
        "message": {"text": "{{ user_properties.name }}님 봄 세일 20%"},
    },
    {
        "key": 14,
        "name": "Maintenance notice",
        "status": "ACTIVE",
        "channel": "sms",
        "purpose": "INFORMATION",
        "message": {"title": "정기 점검 안내", "text": LMS_TEXT},
    },
]
USER = "u-minji"


def daytime_zone() -> str:
    """A fixed-offset zone where it is about noon now: brand messages and marketing SMS are not held for the night."""
    offset = 12 - datetime.now(UTC).hour
    if offset == 0:
        return "UTC"
    return f"Etc/GMT-{offset}" if offset > 0 else f"Etc/GMT+{-offset}"  # POSIX signs: Etc/GMT-9 is UTC+9


@pytest.fixture(scope="module")
def magpie(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Magpie]:
    with served(tmp_path_factory.mktemp("inbox") / "data") as instance:
        yield instance


@pytest.fixture(scope="module")
def sent(magpie: Magpie) -> dict[str, dict[str, Any]]:
    """The four messages, sent and recorded; returns the inbox API's entries by type."""
    settings = {"smsOptOutNumber": "080-123-4567", "smsSender": "02-1234-5678", "senderName": "magpie shop"}
    magpie.admin("PUT", "", {"settings": settings, "timezone": daytime_zone()})
    for campaign in CAMPAIGNS:
        magpie.admin("POST", "/campaigns", campaign)
    magpie.ok("/v1/properties", {"userId": USER, "operations": {"$set": {"name": "김민지"}}})
    magpie.ok("/v1/properties/phone-numbers", {"userId": USER, "phoneNumber": "010-1234-5678"})
    consent = {"userId": USER, "marketingSubscriptionStatus": "SUBSCRIBED"}
    magpie.ok("/v1/kakao-subscriptions", consent)
    magpie.ok("/v1/sms-subscriptions", consent)
    for channel, key, properties in (
        ("sms", 14, {}),
        ("sms", 12, {}),
        ("kakao", 11, {}),
        ("kakao", 10, {"orderNo": "A-1024"}),
    ):
        user = {"userId": USER, "apiProperties": properties} if properties else {"userId": USER}
        dispatch_id = magpie.ok(f"/v1/{channel}-message/trigger/send", {"campaignKey": key, "users": [user]})
        view = magpie.settle(dispatch_id["dispatchId"], channel)
        assert view["counts"].get("SENT") == 1, view
    messages = magpie.admin("GET", "/inbox")["messages"]
    return {m["message"]["type"]: m["message"] for m in messages}


def test_inbox_draws_kakao_and_text_messages_as_bubbles(
    magpie: Magpie, sent: dict[str, dict[str, Any]], page: Any
) -> None:
    assert set(sent) == {"alimtalk", "brand", "SMS", "LMS"}
    magpie.sign_in(page, "/dashboard/development/inbox")

    alimtalk = page.locator("article.kakao", has_text="AlimTalk")
    text = alimtalk.inner_text()
    assert "ORDER_SHIPPED" in text and "김민지님, 주문하신 상품이 출발했어요." in text and "주문번호: A-1024" in text
    assert "Informational" in text
    assert alimtalk.get_by_role("button", name="배송 조회").is_visible()
    assert (
        alimtalk.get_by_role("button", name="주문 상세").get_attribute("title") == "https://shop.example/orders/A-1024"
    )
    fallback = alimtalk.get_by_label("SMS fallback").inner_text()
    assert "SMS" in fallback and "[magpie shop] 주문 A-1024 출발" in fallback
    assert sent["alimtalk"]["bytes"] == len(sent["alimtalk"]["text"].encode("euc-kr"))
    assert f"{sent['alimtalk']['bytes']} bytes in EUC-KR" in text

    brand = page.locator("article.kakao", has_text="Brand message")
    assert "김민지님, 겨울 세일이 시작됐어요." in brand.inner_text() and "Marketing" in brand.inner_text()
    assert brand.get_by_role("button", name="세일 보러 가기").is_visible()

    sms = page.locator("article.sms", has=page.locator(".kind", has_text=re.compile("^SMS$")))
    shown = sms.locator(".bubble").inner_text()
    assert shown.startswith("(광고)magpie shop") and shown.rstrip().endswith("무료수신거부 080-123-4567")
    recorded = sent["SMS"]["bytes"]
    assert recorded == len(sent["SMS"]["text"].encode("euc-kr"))
    assert f"{recorded} bytes in EUC-KR" in sms.inner_text() and "Marketing" in sms.inner_text()

    lms = page.locator("article.sms", has=page.locator(".kind", has_text=re.compile("^LMS$")))
    assert lms.locator(".title").inner_text() == "정기 점검 안내"
    assert "김민지님, 12월 정기 점검 안내입니다." in lms.locator(".body").inner_text()
    assert f"{sent['LMS']['bytes']:,} bytes in EUC-KR" in lms.inner_text() and sent["LMS"]["bytes"] > 90
    assert "Informational" in lms.inner_text()

    everything = page.locator("main").inner_text()
    assert everything.count("+82 10-****-5678") == 4 and "1234-5678" not in everything
    screenshot(page, "inbox-messages")


def _age_sms_consent(magpie: Magpie, days: int) -> int:
    """Make the user's SMS marketing consent ``days`` old, straight in the store; returns that time."""
    at = int(time.time() * 1000) - days * 86_400_000
    db = sqlite3.connect(magpie.server.data_dir / "magpie.db", timeout=30)
    try:
        (raw,) = db.execute("SELECT crm FROM profiles WHERE kind = 'u' AND ident = ?", (USER,)).fetchone()
        crm = json.loads(raw)
        crm["sms"]["marketing"].update({"changedAt": at, "updatedAt": at})
        with db:
            db.execute("UPDATE profiles SET crm = ? WHERE kind = 'u' AND ident = ?", (json.dumps(crm), USER))
    finally:
        db.close()
    return at


def test_consent_page_lists_users_due_for_the_two_year_notice_and_sends_it(
    magpie: Magpie, sent: dict[str, dict[str, Any]], page: Any
) -> None:
    assert sent  # the user, her number and consents exist
    magpie.sign_in(page, "/dashboard/development/consent?channel=sms")
    assert "Nobody is due." in page.locator("table").inner_text()  # consented today

    _age_sms_consent(magpie, 800)
    page.reload()
    row = page.locator("tbody tr", has_text=USER)
    assert "sms" in row.inner_text() and row.locator(".badge", has_text="overdue").is_visible()
    assert "1 due" in page.locator("main").inner_text()
    # Only ACTIVE informational campaigns are offered: the LMS notice (14), not the marketing SMS (12).
    offered = page.get_by_label("Campaign").locator("option").all_inner_texts()
    assert any(o.startswith("#14 ") for o in offered) and not any(o.startswith("#12 ") for o in offered), offered
    page.get_by_label("Campaign").select_option("14")
    page.get_by_role("button", name="Send to 1 due").click()
    page.wait_for_load_state()
    notice = page.get_by_role("status").filter(has_text="Notice sent")
    assert "1 recipient in 1 dispatch" in notice.inner_text()
    dispatch_id = notice.locator("a").get_attribute("href").rsplit("/", 1)[1]  # type: ignore[union-attr]
    assert magpie.settle(dispatch_id, "sms")["counts"].get("SENT") == 1
    assert page.get_by_label("Channel").input_value() == "sms"  # the page keeps the chosen channel
    screenshot(page, "dashboard-consent")
