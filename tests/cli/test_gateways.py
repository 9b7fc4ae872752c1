"""``magpie gateways`` over the deliveries the fakes recorded, on both engines: the same figures as the
store and the admin API, as text and as JSON, without a secret; bad dates are one line, not a traceback."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.store.test_gateways import DAY, LIMIT, TODAY, traffic  # noqa: F401 (the fixture)
from tests.support import AppClient, Env, magpie_cli


def _cli(client: AppClient, *args: str) -> subprocess.CompletedProcess[str]:
    return magpie_cli(*args, data_dir=client.settings.data_dir, database_url=client.settings.database_url_override)


def test_gateways_command_shows_each_channel_and_paid_use(
    client: AppClient,
    env: Env,
    traffic: dict[str, Any],  # noqa: F811
) -> None:
    shown = _cli(client, "gateways", "--env", env.name, "--from", TODAY, "--to", DAY)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"gateways of {env.name}, {TODAY} to {DAY} (Asia/Seoul)"
    text = shown.stdout
    assert "kakao  nhn sender=02-1234-5678" in text
    assert "unknown 2 (GATEWAY_UNCONFIRMED 2)" in text
    assert "delivered 2  undelivered 1 (3040 1)" in text
    assert "push   sandbox, webhook host=hooks.example" in text
    assert "sent by type: SMS 3" in text
    for secret in traffic["secrets"]:
        assert secret not in text

    as_json = _cli(client, "--json", "gateways", "--env", env.name, "--from", TODAY, "--to", DAY)
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["paidMessages"]["byDay"] == {TODAY: 0, DAY: LIMIT} and body["sentByType"] == {"SMS": 3}
    api = client.get(
        f"/admin/v1/environments/{env.name}/gateways", params={"from": TODAY, "to": DAY}, headers=env.admin
    ).json()
    # One report on every surface (today's paid count aside: the CLI and the API ask at their own time).
    assert {**body, "paidMessages": None} == {**api, "paidMessages": None}


def test_gateways_command_bad_date_is_one_line(client: AppClient, env: Env) -> None:
    shown = _cli(client, "gateways", "--env", env.name, "--from", "0001-01-01", "--to", "0001-12-31")
    assert shown.returncode == 1
    assert shown.stderr.strip().startswith("magpie: INVALID_REQUEST: from must be a date between")
    assert "Traceback" not in shown.stderr
