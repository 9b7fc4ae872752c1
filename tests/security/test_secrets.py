"""Secrets write-only: provider credentials never come back whole from the admin API, the CLI or the
dashboard (set / not set, the last 4 characters at most), and an update that leaves one out keeps it."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from magpie.store import accounts
from tests.dashboard.test_session import _send, _sign_in
from tests.support import AppClient, Env, apply_campaign, magpie_cli


def _secret(name: str) -> str:
    return f"{name}-{secrets.token_hex(16)}"


def provider_settings() -> tuple[dict[str, Any], list[str]]:
    """Settings with every provider configured, and every credential in them."""
    private_key = "-----BEGIN PRIVATE KEY-----\n" + secrets.token_hex(40) + "\n-----END PRIVATE KEY-----\n"
    providers: dict[str, Any] = {
        "fcm": {
            "projectId": "magpie-test",
            "serviceAccount": {"type": "service_account", "private_key": private_key, "client_email": "a@b.example"},
        },
        "apns": {"teamId": "TEAM123456", "keyId": "KEY1234567", "privateKey": _secret("apns"), "topic": "app.magpie"},
        "webhook": {"url": "https://hooks.example/push", "secret": _secret("webhook")},
        "nhn": {
            "alimtalkAppKey": _secret("alimtalk-app"),
            "alimtalkSecretKey": _secret("alimtalk-secret"),
            "senderKey": "sender-key-1",
            "smsAppKey": _secret("sms-app"),
            "smsSecretKey": _secret("sms-secret"),
            "webhookSecret": _secret("nhn-webhook"),
        },
        "solapi": {"apiKey": _secret("solapi-key"), "apiSecret": _secret("solapi-secret"), "webhookSecret": "Zq9xK7w"},
    }
    values = [
        private_key.splitlines()[1],
        *(
            v
            for name, config in providers.items()
            if name != "fcm"
            for k, v in config.items()
            if k not in ("teamId", "keyId", "topic", "url", "senderKey")
        ),
    ]
    return {"senderName": "magpie shop", "providers": providers}, values


def assert_no_secret(text: str, values: list[str]) -> None:
    for value in values:
        # The whole secret never, nor any of it beyond its last 4 characters.
        assert value not in text, value
        assert len(value) < 16 or value[:-4] not in text, value


def _put(client: AppClient, env: Env, settings: dict[str, Any]) -> Any:
    response = client.put(f"/admin/v1/environments/{env.name}", json={"settings": settings}, headers=env.admin)
    assert response.status_code == 200, response.text
    return response


def _stored(client: AppClient, env: Env) -> dict[str, Any]:
    return accounts.get_environment(client.app.db, env.name).settings["providers"]


def test_secrets_admin_api_answers_show_them_as_set_with_the_last_4_at_most(client: AppClient, env: Env) -> None:
    settings, values = provider_settings()
    answers = [
        _put(client, env, settings),
        client.get(f"/admin/v1/environments/{env.name}", headers=env.admin),
        client.get("/admin/v1/environments", headers=env.admin),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert_no_secret(answer.text, values)
    shown = answers[1].json()["settings"]["providers"]
    webhook = settings["providers"]["webhook"]["secret"]
    assert shown["webhook"] == {"url": "https://hooks.example/push", "secret": {"set": True, "last4": webhook[-4:]}}
    assert shown["fcm"] == {"projectId": "magpie-test", "serviceAccount": {"set": True}}
    assert shown["solapi"]["webhookSecret"] == {"set": True}  # too short to show any of it
    assert shown["nhn"]["senderKey"] == "sender-key-1"  # an identifier, not a credential


def test_secrets_an_update_that_leaves_them_out_or_sends_them_back_keeps_them(client: AppClient, env: Env) -> None:
    settings, _ = provider_settings()
    _put(client, env, settings)
    before = _stored(client, env)
    # What GET shows, sent back as it is: nothing changes.
    shown = client.get(f"/admin/v1/environments/{env.name}", headers=env.admin).json()["settings"]
    _put(client, env, shown)
    assert _stored(client, env) == before
    # Credentials left out: kept; other fields: replaced.
    _put(
        client,
        env,
        {
            "providers": {
                "webhook": {"url": "https://hooks.example/v2"},
                "apns": {"teamId": "T2", "keyId": "K2", "topic": "t"},
            }
        },
    )
    after = _stored(client, env)
    assert after["webhook"] == {"url": "https://hooks.example/v2", "secret": before["webhook"]["secret"]}
    assert after["apns"]["privateKey"] == before["apns"]["privateKey"] and after["apns"]["teamId"] == "T2"
    assert set(after) == {"webhook", "apns"}  # a provider left out is removed whole


def test_secrets_null_clears_an_optional_one_and_a_new_one_replaces_it(client: AppClient, env: Env) -> None:
    settings, _ = provider_settings()
    _put(client, env, settings)
    nhn = {"webhookSecret": None, "smsAppKey": "a-new-sms-app-key-0001"}
    _put(client, env, {"providers": {"nhn": nhn}})
    stored = _stored(client, env)["nhn"]
    assert "webhookSecret" not in stored and stored["smsAppKey"] == "a-new-sms-app-key-0001"
    assert stored["alimtalkSecretKey"] == settings["providers"]["nhn"]["alimtalkSecretKey"]
    # A required credential cannot be cleared; a shown value with nothing stored behind it is refused.
    refused = client.put(
        f"/admin/v1/environments/{env.name}",
        json={"settings": {"providers": {"webhook": {"url": "https://h.example", "secret": None}}}},
        headers=env.admin,
    )
    assert refused.status_code == 400 and "missing secret" in refused.json()["message"], refused.text
    refused = client.put(
        f"/admin/v1/environments/{env.name}",
        json={"settings": {"providers": {"webhook": {"url": "https://h.example", "secret": {"set": True}}}}},
        headers=env.admin,
    )
    assert refused.status_code == 400 and "send the secret itself" in refused.json()["message"], refused.text


def test_secrets_cli_never_prints_them(client: AppClient, env: Env, tmp_path: Path, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the CLI reads the test's SQLite store")
    settings, values = provider_settings()
    _put(client, env, settings)
    data = client.settings.data_dir
    outputs = []
    for args in (
        ("--json", "env", "list"),
        ("env", "list"),
        ("settings", "show", "--env", env.name, "--json"),
        ("settings", "--env", env.name),
    ):
        result = magpie_cli(*args, data_dir=data)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    listed = json.loads(outputs[0])
    mine = next(e for e in listed if e["name"] == env.name)
    assert mine["settings"]["providers"]["solapi"]["apiSecret"]["set"] is True
    # A settings file without credentials keeps them, and its answer shows none.
    (tmp_path / "settings.yaml").write_text("senderName: shop\nproviders:\n  webhook: {url: 'https://h.example/x'}\n")
    updated = magpie_cli("settings", "-f", str(tmp_path / "settings.yaml"), "--env", env.name, "--json", data_dir=data)
    assert updated.returncode == 0, updated.stderr
    outputs.append(updated.stdout)
    for output in outputs:
        assert_no_secret(output, values)
    assert _stored(client, env)["webhook"]["secret"] == settings["providers"]["webhook"]["secret"]


def test_secrets_dashboard_pages_never_show_them(client: AppClient, env: Env) -> None:
    settings, values = provider_settings()
    _put(client, env, settings)
    apply_campaign(client, env, provider="push")
    cookies = _sign_in(client, env)
    base = f"/dashboard/{env.name}"
    for url in (
        f"{base}/",
        f"{base}/campaigns",
        f"{base}/campaigns/7",
        f"{base}/users",
        f"{base}/inbox",
        f"{base}/keys",
        f"{base}/consent",
    ):
        page = _send(client, "GET", url, cookies=cookies)
        assert page.status_code == 200, (url, page.text[:500])
        assert_no_secret(page.text, values)
