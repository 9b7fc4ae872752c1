"""Messaging consent: status parsing, recording with its change times, and lookup."""

from __future__ import annotations

from typing import Any

import pytest

from magpie.domain.consent import apply_consent, parse_status, status_of
from magpie.errors import InvalidRequest


@pytest.mark.parametrize(
    ("value", "allow_unknown", "expected"),
    [
        pytest.param(None, False, None, id="omitted-leaves-unchanged"),
        pytest.param("SUBSCRIBED", False, "SUBSCRIBED", id="subscribed"),
        pytest.param("UNSUBSCRIBED", False, "UNSUBSCRIBED", id="unsubscribed"),
        pytest.param("UNKNOWN", True, "UNKNOWN", id="unknown-from-sdk"),
    ],
)
def test_parse_status_accepted(value: object, allow_unknown: bool, expected: str | None) -> None:
    assert parse_status("marketingSubscriptionStatus", value, allow_unknown=allow_unknown) == expected


@pytest.mark.parametrize(
    ("value", "allow_unknown"),
    [
        pytest.param("UNKNOWN", False, id="unknown-from-http-api"),
        pytest.param("subscribed", False, id="lower-case"),
        pytest.param(True, False, id="boolean"),
        pytest.param(1, True, id="number"),
        pytest.param("", True, id="empty"),
    ],
)
def test_parse_status_rejected_names_field(value: object, allow_unknown: bool) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_status("marketingSubscriptionStatus", value, allow_unknown=allow_unknown)
    assert caught.value.message.startswith("marketingSubscriptionStatus must be one of ")
    assert caught.value.code == "INVALID_REQUEST"


def test_apply_consent_new_purpose_records_both_times() -> None:
    crm = apply_consent(crm={}, channel="push", changes={"marketing": "SUBSCRIBED"}, now_ms=1000)
    assert crm == {"push": {"marketing": {"status": "SUBSCRIBED", "changedAt": 1000, "updatedAt": 1000}}}


def test_apply_consent_same_status_keeps_changed_at() -> None:
    first = apply_consent(crm={}, channel="push", changes={"marketing": "SUBSCRIBED"}, now_ms=1000)
    again = apply_consent(crm=first, channel="push", changes={"marketing": "SUBSCRIBED"}, now_ms=5000)
    assert again["push"]["marketing"] == {"status": "SUBSCRIBED", "changedAt": 1000, "updatedAt": 5000}


def test_apply_consent_status_change_moves_changed_at() -> None:
    first = apply_consent(crm={}, channel="push", changes={"marketing": "SUBSCRIBED"}, now_ms=1000)
    changed = apply_consent(crm=first, channel="push", changes={"marketing": "UNSUBSCRIBED"}, now_ms=7000)
    assert changed["push"]["marketing"] == {"status": "UNSUBSCRIBED", "changedAt": 7000, "updatedAt": 7000}


def test_apply_consent_other_purposes_and_channels_untouched() -> None:
    before: dict[str, Any] = {
        "push": {"information": {"status": "UNSUBSCRIBED", "changedAt": 1, "updatedAt": 2}},
        "sms": {"marketing": {"status": "SUBSCRIBED", "changedAt": 3, "updatedAt": 4}},
    }
    after = apply_consent(crm=before, channel="push", changes={"marketing": "SUBSCRIBED"}, now_ms=9)
    assert after == {
        "push": {
            "information": {"status": "UNSUBSCRIBED", "changedAt": 1, "updatedAt": 2},
            "marketing": {"status": "SUBSCRIBED", "changedAt": 9, "updatedAt": 9},
        },
        "sms": {"marketing": {"status": "SUBSCRIBED", "changedAt": 3, "updatedAt": 4}},
    }


def test_apply_consent_input_not_mutated() -> None:
    before = {"push": {"marketing": {"status": "SUBSCRIBED", "changedAt": 1, "updatedAt": 1}}}
    apply_consent(crm=before, channel="push", changes={"marketing": "UNSUBSCRIBED"}, now_ms=2)
    assert before == {"push": {"marketing": {"status": "SUBSCRIBED", "changedAt": 1, "updatedAt": 1}}}


@pytest.mark.parametrize(
    ("channel", "purpose", "expected"),
    [
        pytest.param("push", "marketing", "SUBSCRIBED", id="recorded"),
        pytest.param("push", "night", "UNKNOWN", id="purpose-never-recorded"),
        pytest.param("kakao", "marketing", "UNKNOWN", id="channel-never-recorded"),
    ],
)
def test_status_of_unknown_when_absent(channel: str, purpose: str, expected: str) -> None:
    crm = {"push": {"marketing": {"status": "SUBSCRIBED", "changedAt": 1, "updatedAt": 1}}}
    assert status_of(crm, channel, purpose) == expected
