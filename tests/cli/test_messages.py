"""Kakao and SMS campaigns defined in files, applied with the CLI, triggered with Hackle's request shape
on a running `magpie serve`, and seen in the sandbox inbox; the two-year consent report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.cli.test_push import _ok
from tests.support import ServerProcess, magpie_cli

SETTINGS_YAML = """
senderName: magpie shop
smsOptOutNumber: 080-123-4567
smsSender: 02-1234-5678
"""

CAMPAIGNS_YAML = """
- key: 21
  name: Order shipped
  status: ACTIVE
  channel: kakao
  type: alimtalk
  message:
    templateCode: ORDER_SHIPPED
    text: "#{고객명}님, 주문 #{주문번호}이 출발했어요"
    variables:
      고객명: "{{ user_properties.name | default: '고객' }}"
      주문번호: "{{ api_properties.orderNo }}"
    buttons:
      - {type: WL, name: 배송 조회, linkMo: "https://shop.example/o/#{주문번호}"}
    fallback:
      text: "[magpie shop] 주문 #{주문번호} 출발"
- key: 22
  name: Winter sale
  status: ACTIVE
  channel: kakao
  type: brand
  message:
    text: "겨울 세일 시작!"
    buttons:
      - {type: WL, name: 보러 가기, linkMo: "https://shop.example/sale"}
- key: 23
  name: Spring sale
  status: ACTIVE
  channel: sms
  purpose: MARKETING
  consentRule: SUBSCRIBED_ONLY
  message:
    text: "봄 세일 20% (~3/31)"
"""


def _wait(url: str, channel: str, key: str, dispatch_id: str) -> dict[str, Any]:
    """The dispatch once it has settled: completed, or held for the end of night time (SCHEDULED, which
    stays until the release hour)."""
    deadline = time.monotonic() + 20
    while True:
        view: dict[str, Any] = httpx.get(
            f"{url}/v1/{channel}-message/dispatches/{dispatch_id}", headers={"X-HACKLE-API-KEY": key}
        ).json()
        if view["status"] in ("COMPLETED", "SCHEDULED") or time.monotonic() > deadline:
            return view
        time.sleep(0.05)


def test_campaign_files_for_each_channel_reach_the_sandbox_inbox(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "settings.yaml").write_text(SETTINGS_YAML)
    (tmp_path / "campaigns.yaml").write_text(CAMPAIGNS_YAML)
    with ServerProcess(data_dir=data) as server:
        out = server.output()
        key = next(line.split()[-1] for line in out.splitlines() if "API key:" in line)
        token = next(line.split()[-1] for line in out.splitlines() if "admin token:" in line)
        _ok("settings", "-f", str(tmp_path / "settings.yaml"), data_dir=data)
        applied = _ok("campaign", "apply", "-f", str(tmp_path / "campaigns.yaml"), data_dir=data)
        assert [c["key"] for c in applied] == [21, 22, 23]
        headers = {"X-HACKLE-API-KEY": key, "Content-Type": "application/json"}
        for path, body in (
            ("/v1/properties", {"userId": "u1", "operations": {"$set": {"name": "홍길동"}}}),
            ("/v1/properties/phone-numbers", {"userId": "u1", "phoneNumber": "010-1234-5678"}),
            ("/v1/kakao-subscriptions", {"userId": "u1", "marketingSubscriptionStatus": "SUBSCRIBED"}),
            # Night consent too: SMS marketing quiet hours (21:00-08:00 KST) would hold the SMS otherwise.
            (
                "/v1/sms-subscriptions",
                {"userId": "u1", "marketingSubscriptionStatus": "SUBSCRIBED", "nightSubscriptionStatus": "SUBSCRIBED"},
            ),
        ):
            assert httpx.post(server.url + path, json=body, headers=headers).status_code == 200
        sent = []
        for channel, campaign in (("kakao", 21), ("kakao", 22), ("sms", 23)):
            body = {"campaignKey": campaign, "users": [{"userId": "u1", "apiProperties": {"orderNo": "A-7"}}]}
            response = httpx.post(f"{server.url}/v1/{channel}-message/trigger/send", json=body, headers=headers)
            assert response.status_code == 200, response.text
            sent.append((channel, response.json()["dispatchId"]))
        for channel, dispatch_id in sent:
            view = _wait(server.url, channel, key, dispatch_id)
            # A brand message at night is held (Kakao's rule): either outcome says why.
            assert view["counts"]["SENT"] == 1 or view["status"] == "SCHEDULED", view
        inbox = httpx.get(
            server.url + "/admin/v1/environments/development/inbox", headers={"Authorization": f"Bearer {token}"}
        ).json()["messages"]
        by_type = {m["message"]["type"]: m["message"] for m in inbox}
        assert by_type["alimtalk"]["text"] == "홍길동님, 주문 A-7이 출발했어요"
        assert by_type["alimtalk"]["fallback"]["text"] == "[magpie shop] 주문 A-7 출발"
        sms = by_type["SMS"] if "SMS" in by_type else by_type["LMS"]
        assert sms["text"].startswith("(광고)magpie shop") and sms["text"].endswith("무료수신거부 080-123-4567")
        assert sms["to"] == "+82 10-****-5678"
        due = _ok("consent", "due", "--within-days", "30", data_dir=data)
        assert due == {"due": [], "count": 0}
        text = magpie_cli("consent", "due", "--channel", "sms", data_dir=data).stdout
        assert "0 marketing consent(s) due" in text
