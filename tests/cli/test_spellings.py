"""`token add --provider` and `provider check --provider` take the same spellings, in any case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import magpie_cli


@pytest.mark.parametrize(
    ("given", "stored"), [("FCM", "FCM"), ("fcm", "FCM"), ("APN", "APN"), ("apns", "APN"), ("APNs", "APN")]
)
def test_token_add_takes_every_spelling_of_the_provider(given: str, stored: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert magpie_cli("env", "create", "development", data_dir=data).returncode == 0
    added = magpie_cli("token", "add", "--device-id", "d1", "--provider", given, "--token", "ab" * 32, data_dir=data)
    assert added.returncode == 0, added.stderr
    shown = json.loads(magpie_cli("token", "show", "d1", "--json", data_dir=data).stdout)
    assert [t["providerType"] for t in shown] == [stored]


@pytest.mark.parametrize("given", ["FCM", "APN", "apns", "Fcm"])
def test_provider_check_takes_the_same_spellings(given: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert magpie_cli("env", "create", "development", data_dir=data).returncode == 0
    checked = magpie_cli("provider", "check", "--provider", given, "--json", data_dir=data)
    # Accepted as a spelling: the check itself then fails on the environment having no credentials.
    assert "invalid" not in checked.stderr and "expected fcm" not in checked.stderr, checked.stderr
    assert json.loads(checked.stdout)[0]["provider"] == given.lower().replace("apn", "apns").replace("apnss", "apns")


def test_an_unknown_provider_names_the_spellings(tmp_path: Path) -> None:
    refused = magpie_cli("token", "add", "--device-id", "d", "--provider", "gcm", "--token", "t", data_dir=tmp_path)
    assert refused.returncode == 2 and "expected fcm (Android) or apns (iOS); FCM and APN too" in refused.stderr
