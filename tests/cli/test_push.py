"""CLI for campaigns, cohorts, tokens, settings and statistics; the demo flow of `magpie serve`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import ServerProcess, magpie_cli

SEED_TRIGGER = """{
    "campaignKey": 1,
    "users": [
      {  
        "userId": "eb24b2d8-21a3-4e95-b801-626ba0904e01",
        "apiProperties": {
          "productNumber": "123"
        }
      }
    ]
  }"""

CAMPAIGN_YAML = """
key: 12
name: Restock alert
status: ACTIVE
purpose: MARKETING
provider: sandbox
consentRule: SUBSCRIBED_OR_UNKNOWN
tags: [restock]
message:
  title: "{{ user_properties.name | default: '고객' }}님 재입고 알림"
  body: "상품 {{ api_properties.productNumber }}"
  clickAction: DEEP_LINK
  link: "shop://p/{{ api_properties.productNumber }}"
"""


def _ok(*args: str, data_dir: Path) -> Any:
    result = magpie_cli(*args, "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _wait_completed(url: str, key: str, dispatch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        view: dict[str, Any] = httpx.get(
            f"{url}/v1/push-message/dispatches/{dispatch_id}", headers={"X-HACKLE-API-KEY": key}
        ).json()
        if view["status"] == "COMPLETED" or time.monotonic() > deadline:
            return view
        time.sleep(0.05)


def test_serve_demo_campaign_takes_the_seed_trigger_verbatim(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data_dir=data) as server:
        out = server.output()
        key = next(line.split()[-1] for line in out.splitlines() if "API key:" in line)
        token = next(line.split()[-1] for line in out.splitlines() if "admin token:" in line)
        headers = {"X-HACKLE-API-KEY": key, "Content-Type": "application/json"}
        # A device of that user with a token, so the demo push reaches the sandbox inbox.
        user = "eb24b2d8-21a3-4e95-b801-626ba0904e01"
        assert (
            _ok(
                "token",
                "add",
                "--device-id",
                "demo-phone",
                "--user-id",
                user,
                "--provider",
                "FCM",
                "--token",
                "demo-token",
                data_dir=data,
            )["status"]
            == "ACTIVE"
        )
        response = httpx.post(server.url + "/v1/push-message/trigger/send", content=SEED_TRIGGER, headers=headers)
        assert response.status_code == 200
        dispatch_id = response.json()["dispatchId"]
        view = _wait_completed(server.url, key, dispatch_id)
        assert view["counts"]["SENT"] == 1, view
        inbox = httpx.get(
            server.url + "/admin/v1/environments/development/inbox",
            headers={"Authorization": f"Bearer {token}"},
        ).json()["messages"]
        assert inbox[0]["message"]["title"] == "고객님, 기다리던 상품이 입고됐어요"
        assert inbox[0]["message"]["link"] == "magpie-demo://products/123"
        shown = _ok("stats", "dispatch", dispatch_id, data_dir=data)
        assert shown["counts"]["SENT"] == 1
        text = magpie_cli("stats", "dispatch", dispatch_id, data_dir=data).stdout
        assert "sent 1" in text


def test_cli_campaign_apply_list_and_stats(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok("env", "create", "development", data_dir=data)
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN_YAML, encoding="utf-8")
    assert _ok("campaign", "apply", "-f", str(path), data_dir=data) == [
        {"key": 12, "name": "Restock alert", "status": "ACTIVE", "created": True, "warnings": []}
    ]
    path.write_text(CAMPAIGN_YAML.replace("status: ACTIVE", "status: PAUSED"), encoding="utf-8")
    assert _ok("campaign", "apply", "-f", str(path), data_dir=data)[0]["created"] is False
    listed = _ok("campaign", "list", data_dir=data)
    assert [(c["key"], c["status"], c["tags"]) for c in listed] == [(12, "PAUSED", ["restock"])]
    stats = _ok("stats", "campaign", "12", data_dir=data)
    assert stats["requested"] == 0 and stats["ctr"] == 0.0


def test_cli_campaign_apply_rejects_template_errors_at_apply_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok("env", "create", "development", data_dir=data)
    path = tmp_path / "bad.yaml"
    path.write_text(
        CAMPAIGN_YAML.replace('{{ api_properties.productNumber }}"', '{{ api_properties.productNumber | nope }}"'),
        encoding="utf-8",
    )
    result = magpie_cli("campaign", "apply", "-f", str(path), data_dir=data)
    assert result.returncode == 1
    assert "INVALID_CAMPAIGN" in result.stderr and "template" in result.stderr


def test_cli_settings_and_cohort(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok("env", "create", "development", data_dir=data)
    settings = tmp_path / "settings.yaml"
    settings.write_text("senderName: magpie shop\nnightPolicy: DROP\nfrequencyCaps:\n  - {limit: 3, windowHours: 24}\n")
    shown = _ok("settings", "-f", str(settings), "--timezone", "UTC", data_dir=data)
    assert shown["timezone"] == "UTC" and shown["settings"]["nightPolicy"] == "DROP"
    ids = tmp_path / "vip.txt"
    ids.write_text("u1\nu2\n\nu2\n")
    assert _ok("cohort", "set", "vip", "-f", str(ids), data_dir=data) == {"name": "vip", "size": 2}
    bad = tmp_path / "bad.yaml"
    bad.write_text("frequencyCaps:\n  - {limit: 3, windowHours: 2000}\n")
    result = magpie_cli("settings", "-f", str(bad), data_dir=data)
    assert result.returncode == 1 and "30 days" in result.stderr
