"""CLI for campaigns, cohorts, tokens, settings and statistics; the demo flow of `magpie serve`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import SEED_TRIGGER, ServerProcess, magpie_cli, provider_settings

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
        key, token = server.credentials()
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
    # Nothing sent: no rate to give (null, shown "-"), not a 0% that never happened.
    assert (stats["requested"], stats["unknown"], stats["ctr"], stats["sentRate"]) == (0, 0, None, None)


def test_cli_campaign_list_has_a_header_and_the_channel_of_every_campaign(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok("env", "create", "development", data_dir=data)
    _ok("settings", "-f", str(_write(tmp_path, "settings.yaml", "smsOptOutNumber: 080-123-4567\n")), data_dir=data)
    sms = "key: 13\nname: Spring sale\nchannel: sms\npurpose: MARKETING\nmessage:\n  text: 봄 세일\n"
    brand = "key: 14\nname: Winter sale\nchannel: kakao\ntype: brand\nmessage:\n  text: 겨울 세일\n"
    for name, text in (("push.yaml", CAMPAIGN_YAML), ("sms.yaml", sms), ("brand.yaml", brand)):
        _ok("campaign", "apply", "-f", str(_write(tmp_path, name, text)), data_dir=data)
    result = magpie_cli("campaign", "list", data_dir=data)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["KEY", "STATUS", "CHANNEL", "PURPOSE", "PROVIDER", "NAME"]
    assert [(r[0], r[2]) for r in rows[1:]] == [("12", "push"), ("13", "sms"), ("14", "kakao/brand")]
    helped = magpie_cli("campaign", "--help", data_dir=data)
    assert "push campaigns" not in helped.stdout
    top = magpie_cli("--help", data_dir=data).stdout
    assert "campaigns (push, Kakao and SMS)" in top and "push campaigns" not in top


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


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


PUSH_YAML = """
key: 12
name: Restock alert
status: ACTIVE
purpose: INFORMATION
provider: push
consentRule: SUBSCRIBED_OR_UNKNOWN
message:
  title: "재입고 알림"
  body: "상품 {{ api_properties.productNumber }}"
"""


def test_undeliverable_campaign_warns_strict_refuses_and_failures_show_their_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data_dir=data, env={"MAGPIE_WORKERS": "1"}) as server:
        key, token = server.credentials()
        admin = {"Authorization": f"Bearer {token}"}
        path = tmp_path / "restock.yaml"
        path.write_text(PUSH_YAML, encoding="utf-8")

        strict = magpie_cli("campaign", "apply", "-f", str(path), "--strict", data_dir=data)
        assert strict.returncode == 1 and "PROVIDER_NOT_CONFIGURED" in strict.stderr
        assert "Traceback" not in strict.stderr
        assert 12 not in [c["key"] for c in _ok("campaign", "list", data_dir=data)]

        applied = magpie_cli("campaign", "apply", "-f", str(path), data_dir=data)
        assert applied.returncode == 0
        assert "warning: environment development has no fcm or apns settings" in applied.stderr
        assert "PROVIDER_NOT_CONFIGURED" in applied.stderr

        # The admin API says the same, and refuses with ?strict=true.
        url = server.url + "/admin/v1/environments/development/campaigns"
        body = {
            "key": 13,
            "name": "n",
            "status": "ACTIVE",
            "provider": "push",
            "purpose": "INFORMATION",
            "message": {"title": "t", "body": "b"},
        }
        refused = httpx.post(url + "?strict=true", json=body, headers=admin)
        assert refused.status_code == 400 and "PROVIDER_NOT_CONFIGURED" in refused.json()["message"]
        accepted = httpx.post(url, json=body, headers=admin)
        assert accepted.status_code == 200 and accepted.json()["warnings"], accepted.text

        _ok(
            "token",
            "add",
            "--device-id",
            "d1",
            "--user-id",
            "u1",
            "--provider",
            "FCM",
            "--token",
            "t" * 40,
            data_dir=data,
        )
        trigger = {"campaignKey": 12, "users": [{"userId": "u1", "apiProperties": {"productNumber": "7"}}]}
        response = httpx.post(
            server.url + "/v1/push-message/trigger/send", json=trigger, headers={"X-HACKLE-API-KEY": key}
        )
        dispatch_id = response.json()["dispatchId"]
        view = _wait_completed(server.url, key, dispatch_id)
        assert view["counts"]["FAILED"] == 1 and view["failures"] == {"PROVIDER_NOT_CONFIGURED": 1}, view
        assert _ok("stats", "dispatch", dispatch_id, data_dir=data)["failures"] == {"PROVIDER_NOT_CONFIGURED": 1}
        assert "failed PROVIDER_NOT_CONFIGURED: 1" in magpie_cli("stats", "dispatch", dispatch_id, data_dir=data).stdout
        stats = _ok("stats", "campaign", "12", data_dir=data)
        assert stats["failed"] == 1 and stats["failures"] == {"PROVIDER_NOT_CONFIGURED": 1}
        assert "failed PROVIDER_NOT_CONFIGURED: 1" in magpie_cli("stats", "campaign", "12", data_dir=data).stdout
        api = httpx.get(server.url + "/v1/push-message/campaigns/12/stats", headers={"X-HACKLE-API-KEY": key}).json()
        assert api["failures"] == {"PROVIDER_NOT_CONFIGURED": 1}


def test_cli_lists_and_shows_cohorts_tokens_settings_and_archives_campaigns(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok("env", "create", "development", data_dir=data)
    ids = tmp_path / "vip.txt"
    ids.write_text("u1\nu2\n")
    _ok("cohort", "set", "vip", "-f", str(ids), data_dir=data)
    assert _ok("cohort", "list", data_dir=data) == [{"name": "vip", "size": 2}]
    assert _ok("cohort", "show", "vip", data_dir=data)["members"] == ["u1", "u2"]
    assert magpie_cli("cohort", "show", "nope", data_dir=data).returncode == 1

    _ok(
        "token", "add", "--device-id", "d1", "--user-id", "u1", "--provider", "APN", "--token", "ab" * 32, data_dir=data
    )
    _ok("token", "add", "--device-id", "d2", "--provider", "FCM", "--token", "fcm-token-2", data_dir=data)
    listed = _ok("token", "list", data_dir=data)
    assert {(t["deviceId"], t["userId"], t["providerType"]) for t in listed} == {
        ("d1", "u1", "APN"),
        ("d2", None, "FCM"),
    }
    assert all("ab" * 32 != t["token"] for t in listed)  # shortened, never the whole token
    assert [t["deviceId"] for t in _ok("token", "list", "--user-id", "u1", data_dir=data)] == ["d1"]
    assert _ok("token", "show", "d2", data_dir=data)[0]["providerType"] == "FCM"

    secret = "-----BEGIN PRIVATE KEY-----secret-material"
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps({"senderName": "shop", "providers": {"webhook": {"url": "https://h.example/p", "secret": secret}}})
    )
    _ok("settings", "set", "-f", str(settings), data_dir=data)
    shown = magpie_cli("settings", "show", "--json", data_dir=data)
    assert json.loads(shown.stdout)["settings"]["providers"] == ["webhook"]
    assert json.loads(shown.stdout)["settings"]["nightStart"] == "21:00"
    text = magpie_cli("settings", data_dir=data).stdout
    assert "senderName: shop" in text and "providers: webhook" in text
    for output in (shown.stdout, text, magpie_cli("settings", "list", data_dir=data).stdout):
        assert "secret-material" not in output and "h.example" not in output

    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN_YAML, encoding="utf-8")
    _ok("campaign", "apply", "-f", str(path), data_dir=data)
    assert _ok("campaign", "show", "12", data_dir=data)["name"] == "Restock alert"
    assert _ok("campaign", "archive", "12", data_dir=data)["status"] == "ARCHIVED"
    assert _ok("campaign", "list", data_dir=data) == []
    assert [c["status"] for c in _ok("campaign", "list", "--all", data_dir=data)] == ["ARCHIVED"]


def test_provider_check_validates_credentials_against_the_providers_without_delivering(tmp_path: Path) -> None:
    from tests.fakes.apns import FakeApns
    from tests.fakes.fcm import FakeFcm

    data = tmp_path / "data"
    _ok("env", "create", "development", data_dir=data)
    with FakeFcm() as fcm, FakeApns() as apns:
        providers = provider_settings(fcm=fcm, apns=apns)
        settings = tmp_path / "settings.json"
        settings.write_text(json.dumps({"providers": providers}))
        _ok("settings", "-f", str(settings), data_dir=data)
        results = _ok("provider", "check", data_dir=data)
        assert {r["provider"]: r["ok"] for r in results} == {"fcm": True, "apns": True}, results
        assert fcm.requests and all(r.json["validate_only"] is True for r in fcm.requests)
        assert fcm.delivered == []
        # APNs has no validate-only mode: a silent background push (no alert, no sound) to a token no device has.
        assert apns.requests and all(r.headers["apns-push-type"] == "background" for r in apns.requests)
        assert all(r.json == {"aps": {"content-available": 1}} for r in apns.requests)

        # Real FCM refuses the placeholder token (validation still passed the credentials): that is ok too.
        from magpie.providers.fcm import CHECK_TOKEN

        fcm.invalid_tokens.add(CHECK_TOKEN)
        again = {r["provider"]: r for r in _ok("provider", "check", "--provider", "fcm", data_dir=data)}
        assert again["fcm"]["ok"] and "refused, as expected" in again["fcm"]["detail"]

        # Wrong credentials: the check fails, names the provider's answer, and exits 1.
        providers["apns"]["topic"] = "com.example.other"
        providers["fcm"]["projectId"] = "another-project"
        settings.write_text(json.dumps({"providers": providers}))
        _ok("settings", "-f", str(settings), data_dir=data)
        failed = magpie_cli("provider", "check", data_dir=data)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "fcm: FAILED THIRD_PARTY_AUTH_ERROR" in failed.stdout and "apns: FAILED TopicDisallowed" in failed.stdout
        assert "Traceback" not in failed.stderr
