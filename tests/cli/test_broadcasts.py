"""``magpie broadcast``: a recurring campaign from a file, its reach, a test send, send now, controls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import magpie_cli

RECURRING_YAML = """
key: 21
name: Cart reminder
status: ACTIVE
purpose: INFORMATION
provider: sandbox
consentRule: SUBSCRIBED_OR_UNKNOWN
message:
  title: "장바구니를 확인하세요"
  body: "{{ user.id }}님"
schedule:
  type: weekly
  days: [MON]
  time: "19:30"
"""


def _ok(*args: str, data_dir: Path) -> Any:
    result = magpie_cli(*args, "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_broadcast_reach_test_send_send_now_pause_and_cancel(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok("env", "create", "development", data_dir=data)
    path = tmp_path / "campaign.yaml"
    path.write_text(RECURRING_YAML, encoding="utf-8")
    _ok("campaign", "apply", "-f", str(path), data_dir=data)
    shown = _ok("campaign", "show", "21", data_dir=data)
    assert shown["schedule"] == {"type": "weekly", "days": ["MON"], "time": "19:30"}
    assert _ok("broadcast", "reach", "21", data_dir=data) == {
        "channel": "push",
        "users": 0,
        "audience": 0,
        "reachable": 0,
        "unreachable": {},
    }
    test = _ok("broadcast", "test-send", "21", "--user", "alice", "--user", "bob", data_dir=data)
    assert test["occurrence"]["kind"] == "TEST" and test["progress"]["planned"] == 2
    now = _ok("broadcast", "send-now", "21", data_dir=data)
    occurrence_id = str(now["occurrence"]["id"])
    assert now["occurrence"]["state"] == "scheduled"
    assert _ok("broadcast", "pause", occurrence_id, data_dir=data)["occurrence"]["state"] == "paused"
    assert _ok("broadcast", "resume", occurrence_id, data_dir=data)["occurrence"]["state"] == "scheduled"
    assert _ok("broadcast", "cancel", occurrence_id, data_dir=data)["occurrence"]["state"] == "cancelled"
    listed = _ok("broadcast", "list", "21", data_dir=data)["occurrences"]
    assert sorted(o["kind"] for o in listed) == ["NOW", "TEST"]
    refused = magpie_cli("broadcast", "resume", occurrence_id, data_dir=data)
    assert refused.returncode != 0 and "cancelled" in refused.stderr


def test_cli_apply_refuses_a_once_schedule_in_the_past(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok("env", "create", "development", data_dir=data)
    path = tmp_path / "campaign.yaml"
    path.write_text(
        RECURRING_YAML.replace(
            '  type: weekly\n  days: [MON]\n  time: "19:30"', '  type: once\n  at: "2021-01-01T10:00"'
        ),
        encoding="utf-8",
    )
    result = magpie_cli("campaign", "apply", "-f", str(path), data_dir=data)
    assert result.returncode != 0 and "in the past" in result.stderr
    assert _ok("campaign", "list", data_dir=data) == []
