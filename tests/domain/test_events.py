"""SDK and track events: who an event names, the checks on keys and values, and system-event effects."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from magpie.domain.events import (
    ConsentUpdate,
    PhoneUpdate,
    PropertyUpdate,
    PushClick,
    PushTokenUpdate,
    check_event_key,
    check_insert_id,
    check_properties,
    check_value,
    event_ids,
    event_type_id,
    system_effect,
)
from magpie.errors import EmptyIdentifier, InvalidPhoneNumber, InvalidRequest


@pytest.mark.parametrize(
    ("identifiers", "fallback", "expected"),
    [
        pytest.param({"$userId": "u1", "$deviceId": "d1"}, None, ("u1", "d1"), id="user-and-device"),
        pytest.param({"$deviceId": "d1", "$id": "h1"}, None, (None, "d1"), id="device-wins-over-hackle-id"),
        pytest.param({"$id": "h1"}, "fallback", ("h1", None), id="hackle-id-as-user"),
        pytest.param({}, "batch-user", ("batch-user", None), id="batch-user-id-last"),
    ],
)
def test_event_ids_of_event(
    identifiers: dict[str, str], fallback: str | None, expected: tuple[str | None, str | None]
) -> None:
    assert event_ids(identifiers, fallback_user_id=fallback, where="e") == expected


def test_event_ids_nobody_named_is_empty_identifier() -> None:
    with pytest.raises(EmptyIdentifier) as caught:
        event_ids({"$userId": "  "}, fallback_user_id=None, where="trackEvents[2]")
    assert caught.value.code == "EMPTY_IDENTIFIER"
    assert caught.value.message.startswith("trackEvents[2]: the event names no user")


def test_event_ids_nul_in_id_rejected() -> None:
    with pytest.raises(InvalidRequest, match="must not contain NUL"):
        event_ids({"$userId": "u\x001"}, fallback_user_id=None, where="e")


KEY_ERROR = "the event key must be 1 to 256 characters"
INSERT_ID_ERROR = "insertId must be 1 to 128 characters"
VALUE_ERROR = "a value must be a string, number, boolean"


@pytest.mark.parametrize(
    ("check", "value", "error"),
    [
        pytest.param(check_event_key, "purchase", None, id="key-plain"),
        pytest.param(check_event_key, "x" * 256, None, id="key-256-chars"),
        pytest.param(check_event_key, "x" * 257, KEY_ERROR, id="key-257-chars"),
        pytest.param(check_event_key, "", KEY_ERROR, id="key-empty"),
        pytest.param(check_event_key, "   ", KEY_ERROR, id="key-blank"),
        pytest.param(check_event_key, "a\x00b", KEY_ERROR, id="key-nul"),
        pytest.param(check_insert_id, "x" * 128, None, id="insert-id-128-chars"),
        pytest.param(check_insert_id, "x" * 129, INSERT_ID_ERROR, id="insert-id-129-chars"),
        pytest.param(check_insert_id, "", INSERT_ID_ERROR, id="insert-id-empty"),
        pytest.param(check_value, 1.5, None, id="value-finite"),
        pytest.param(check_value, float("nan"), "value must be a finite number", id="value-nan"),
        pytest.param(check_value, float("inf"), "value must be a finite number", id="value-infinity"),
        pytest.param(
            check_properties, {"a": "x", "b": 1.5, "c": True, "d": ["x", 2], "e": None}, None, id="properties-allowed"
        ),
        pytest.param(check_properties, {"$sdk": {"nested": [{}]}}, None, id="properties-dollar-keys-unchecked"),
        pytest.param(check_properties, {"a": {"nested": 1}}, VALUE_ERROR, id="properties-object-value"),
        pytest.param(check_properties, {"a": "x" * 1025}, "longer than 1024 characters", id="properties-long-string"),
        pytest.param(check_properties, {"a": [True]}, VALUE_ERROR, id="properties-boolean-in-array"),
        pytest.param(check_properties, {"k" * 129: 1}, "must be 1 to 128 characters", id="properties-long-key"),
        pytest.param(check_properties, {f"k{i}": i for i in range(129)}, "at most 128 properties", id="properties-129"),
    ],
)
def test_check_limits_of_events(check: Callable[..., None], value: Any, error: str | None) -> None:
    if error is None:
        check(value, where="e")
    else:
        with pytest.raises(InvalidRequest, match=re.escape(error)):
            check(value, where="e")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("purchase", 112_569_713_164_166, id="purchase"),
        pytest.param("$push_click", 177_987_728_907_977, id="system-key"),
    ],
)
def test_event_type_id_stable_literal(key: str, expected: int) -> None:
    assert event_type_id(key) == expected


@pytest.mark.parametrize(
    ("key", "properties", "device_id", "effect", "stored"),
    [
        pytest.param(
            "$properties",
            {"$set": {"grade": "GOLD"}},
            None,
            PropertyUpdate(operations=[("$set", "grade", "GOLD")]),
            {"$set": {"grade": "GOLD"}},
            id="properties",
        ),
        pytest.param(
            "$secured_properties",
            {"$set": {"$phone_number": "010-1234-5678"}},
            None,
            PhoneUpdate("+821012345678"),
            {"$set": {"$phone_number": "+82 10-****-5678"}},
            id="phone-set-stored-masked",
        ),
        pytest.param(
            "$secured_properties",
            {"$unset": {"$phone_number": "-"}},
            None,
            PhoneUpdate(None),
            {"$unset": {"$phone_number": "-"}},
            id="phone-unset",
        ),
        pytest.param(
            "$sms_subscriptions",
            {"$marketing": "SUBSCRIBED", "$information": "UNKNOWN", "topic-1": "SUBSCRIBED"},
            None,
            ConsentUpdate("sms", {"marketing": "SUBSCRIBED", "information": "UNKNOWN"}),
            {"$marketing": "SUBSCRIBED", "$information": "UNKNOWN", "topic-1": "SUBSCRIBED"},
            id="sms-consent-topics-stored-only",
        ),
        pytest.param(
            "$push_token",
            {"provider_type": "FCM", "token": " abcdefghijklmnop "},
            "d1",
            PushTokenUpdate("FCM", "abcdefghijklmnop"),
            {"provider_type": "FCM", "token": "abcdefgh…"},
            id="push-token-stored-shortened",
        ),
        pytest.param(
            "$push_click",
            {
                "push_message_key": "7",
                "push_message_execution_id": 11,
                "push_message_delivery_id": 13.0,
                "debug": "true",
            },
            None,
            PushClick(campaign_key=7, exec_id=11, delivery_id=13, debug=True),
            {
                "push_message_key": "7",
                "push_message_execution_id": 11,
                "push_message_delivery_id": 13.0,
                "debug": "true",
            },
            id="push-click-numeric-strings",
        ),
        pytest.param(
            "$push_click",
            {"push_message_id": 5},
            None,
            PushClick(campaign_key=5, exec_id=None, delivery_id=None, debug=False),
            {"push_message_id": 5},
            id="push-click-message-id-as-key",
        ),
        pytest.param("purchase", {"amount": 3}, None, None, {"amount": 3}, id="plain-event-no-effect"),
        pytest.param("$session_start", {}, None, None, {}, id="other-system-event-no-effect"),
    ],
)
def test_system_effect_of_event(
    key: str, properties: dict[str, Any], device_id: str | None, effect: object, stored: dict[str, Any]
) -> None:
    assert system_effect(key, properties, device_id=device_id, where="e") == (effect, stored)


@pytest.mark.parametrize(
    ("key", "properties", "device_id", "error", "message"),
    [
        pytest.param("$properties", {"$bogus": {}}, None, InvalidRequest, "e: ", id="unknown-operation"),
        pytest.param(
            "$secured_properties", {"$set": {"email": "x"}}, None, InvalidRequest, "the only secured", id="not-phone"
        ),
        pytest.param(
            "$secured_properties",
            {"$set": {"$phone_number": "12"}},
            None,
            InvalidPhoneNumber,
            "e: phoneNumber",
            id="bad-phone-keeps-code",
        ),
        pytest.param(
            "$push_subscriptions", {"$marketing": "YES"}, None, InvalidRequest, "e.properties.$marketing", id="status"
        ),
        pytest.param(
            "$push_token",
            {"provider_type": "FCM", "token": "t"},
            None,
            InvalidRequest,
            "needs a $deviceId",
            id="no-dev",
        ),
        pytest.param(
            "$push_token", {"provider_type": "HMS", "token": "t"}, "d1", InvalidRequest, "FCM or APN", id="provider"
        ),
        pytest.param("$push_click", {"debug": True}, None, InvalidRequest, "must name push_message_key", id="no-key"),
        pytest.param(
            "$push_click", {"push_message_key": 2**31}, None, InvalidRequest, "32-bit integer", id="key-out-of-range"
        ),
    ],
)
def test_system_effect_invalid_rejected(
    key: str, properties: dict[str, Any], device_id: str | None, error: type[InvalidRequest], message: str
) -> None:
    with pytest.raises(error) as caught:
        system_effect(key, properties, device_id=device_id, where="e")
    assert type(caught.value) is error
    assert message in caught.value.message
