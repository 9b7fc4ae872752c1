"""Events from Hackle's SDKs and ``POST /v1/track``: identity, validation and system events. No I/O.

Hackle's SDKs carry profile changes as *system events*, track events whose key starts with
``$`` and whose properties are the change:

=========================  ==================================================================
``$properties``            the ten property operations: ``{"$set": {...}, "$unset": {...}}``
``$secured_properties``    ``{"$set": {"$phone_number": "+8210..."}}`` or ``$unset`` of it
``$push_subscriptions``    ``{"$marketing": "SUBSCRIBED", "$information": "UNKNOWN"}`` (also
``$sms_subscriptions``     SMS and KakaoTalk); other keys are Hackle's custom topics and are
``$kakao_subscriptions``   stored with the event but change nothing
``$push_token``            ``{"provider_type": "FCM" | "APN", "token": "..."}`` (needs a device)
``$push_click``            ``push_message_key``, ``push_message_execution_id``,
                           ``push_message_delivery_id``, ``debug``: a click for that campaign
=========================  ==================================================================

Each parses to an ``Effect`` here and is applied by ``magpie.store.events`` with the same
rules as the HTTP endpoints. Every other key (and every key without ``$``) is stored only.

**Identity.** ``$userId`` is the user, ``$deviceId`` the device; when neither is present the
Hackle ``id`` (``$id``, sent as ``userId`` in an SDK batch) is read as the user id.

>>> event_ids({"$id": "a1"}, fallback_user_id=None, where="trackEvents[0]")
('a1', None)
>>> system_effect("$properties", {"$set": {"grade": "GOLD"}}, device_id=None, where="e")[0]
PropertyUpdate(operations=[('$set', 'grade', 'GOLD')])
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from magpie.domain import consent, phone
from magpie.domain.identity import clean_id, has_control_characters
from magpie.domain.operations import (
    MAX_ARRAY_ELEMENTS,
    MAX_KEY_LENGTH,
    MAX_PROPERTIES,
    MAX_STRING_LENGTH,
    Operation,
    is_number,
    parse_operations,
)
from magpie.errors import EmptyIdentifier, InvalidRequest

USER_ID: Final = "$userId"
DEVICE_ID: Final = "$deviceId"
HACKLE_ID: Final = "$id"
MAX_EVENT_KEY_LENGTH: Final = 256
MAX_INSERT_ID_LENGTH: Final = 128
MAX_TOKEN_LENGTH: Final = 512

PROPERTIES: Final = "$properties"
SECURED_PROPERTIES: Final = "$secured_properties"
PUSH_TOKEN: Final = "$push_token"
PUSH_CLICK: Final = "$push_click"
SUBSCRIPTION_CHANNELS: Final = {
    "$push_subscriptions": "push",
    "$sms_subscriptions": "sms",
    "$kakao_subscriptions": "kakao",
}
_PURPOSES: Final = (("$marketing", "marketing"), ("$information", "information"))
_PHONE_KEY: Final = "$phone_number"


@dataclass(frozen=True, slots=True)
class PropertyUpdate:
    operations: list[Operation]


@dataclass(frozen=True, slots=True)
class PhoneUpdate:
    """Set (``phone`` given, E.164) or delete (``None``) the user's phone number."""

    phone: str | None


@dataclass(frozen=True, slots=True)
class ConsentUpdate:
    channel: str
    changes: dict[str, str]


@dataclass(frozen=True, slots=True)
class PushTokenUpdate:
    provider_type: str
    token: str


@dataclass(frozen=True, slots=True)
class PushClick:
    campaign_key: int | None
    exec_id: int | None
    delivery_id: int | None
    debug: bool


Effect = PropertyUpdate | PhoneUpdate | ConsentUpdate | PushTokenUpdate | PushClick

# Effects that act on a person, not a device: the HTTP API requires a userId for them.
USER_ONLY: Final = frozenset((SECURED_PROPERTIES, "$sms_subscriptions", "$kakao_subscriptions"))


@dataclass(slots=True)
class Event:
    """One validated event, ready for the store. JSON columns are encoded already."""

    insert_id: str
    key: str
    timestamp: int
    user_id: str | None
    device_id: str | None
    value: float | None
    properties: str
    identifiers: str
    context: str
    effect: Effect | None
    where: str


def event_type_id(key: str) -> int:
    """A stable id for an event key, the same in every process and environment (48 bits)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=6).digest(), "big")


def is_system_key(key: str) -> bool:
    return key.startswith("$")


def check_event_key(key: str, *, where: str) -> None:
    if not 1 <= len(key) <= MAX_EVENT_KEY_LENGTH or not key.strip() or has_control_characters(key):
        raise InvalidRequest(
            f"{where}: the event key must be 1 to {MAX_EVENT_KEY_LENGTH} characters, without control characters"
        )


def check_insert_id(insert_id: str, *, where: str) -> None:
    if not 1 <= len(insert_id) <= MAX_INSERT_ID_LENGTH or has_control_characters(insert_id):
        raise InvalidRequest(
            f"{where}: insertId must be 1 to {MAX_INSERT_ID_LENGTH} characters, without control characters"
        )


def check_value(value: float | None, *, where: str) -> None:
    if value is not None and not math.isfinite(value):
        raise InvalidRequest(f"{where}: value must be a finite number")


def event_ids(
    identifiers: Mapping[str, str], *, fallback_user_id: str | None, where: str
) -> tuple[str | None, str | None]:
    """``(user_id, device_id)`` of an event; ``EMPTY_IDENTIFIER`` when it names nobody."""
    user_id = clean_id(identifiers.get(USER_ID), field=f"{where}.identifiers.{USER_ID}")
    device_id = clean_id(identifiers.get(DEVICE_ID), field=f"{where}.identifiers.{DEVICE_ID}")
    if user_id is None and device_id is None:
        user_id = clean_id(identifiers.get(HACKLE_ID), field=f"{where}.identifiers.{HACKLE_ID}")
        if user_id is None:
            user_id = clean_id(fallback_user_id, field=f"{where}.userId")
    if user_id is None and device_id is None:
        raise EmptyIdentifier(f"{where}: the event names no user: give $userId, $deviceId or an id")
    return user_id, device_id


def _check_value(key: str, value: object, where: str) -> None:
    if value is None or isinstance(value, bool) or is_number(value):
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING_LENGTH:
            raise InvalidRequest(f"{where}.properties.{key[:40]}: longer than {MAX_STRING_LENGTH} characters")
        return
    if isinstance(value, list) and len(value) > MAX_ARRAY_ELEMENTS:
        raise InvalidRequest(f"{where}.properties.{key[:40]}: arrays are limited to {MAX_ARRAY_ELEMENTS} elements")
    if isinstance(value, list) and all(
        (isinstance(item, str) and len(item) <= MAX_STRING_LENGTH) or is_number(item) for item in value
    ):
        return
    raise InvalidRequest(
        f"{where}.properties.{key[:40]}: a value must be a string, number, boolean or an array of strings and numbers"
    )


def check_properties(properties: Mapping[str, Any], *, where: str) -> None:
    """Hackle's limits on event properties; ``$`` keys are the SDKs' own and may hold anything."""
    if len(properties) > MAX_PROPERTIES:
        raise InvalidRequest(f"{where}: an event may carry at most {MAX_PROPERTIES} properties")
    for key, value in properties.items():
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise InvalidRequest(f"{where}: property key '{key[:40]}' must be 1 to {MAX_KEY_LENGTH} characters")
        if not key.startswith("$"):
            _check_value(key, value, where)


def _int_or_none(value: object, name: str, where: str, *, bits: int = 64) -> int | None:
    """An id the SDKs send as a number or a numeric string, within its column's range."""
    if value is None or value == "":
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.isascii() and value.lstrip("-").isdigit() and len(value) <= 20:
        number = int(value)
    if number is None or not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        raise InvalidRequest(f"{where}.properties.{name} must be a {bits}-bit integer")
    return number


def _secured(properties: Mapping[str, Any], where: str) -> tuple[PhoneUpdate, dict[str, Any]]:
    for op in properties:
        if op not in ("$set", "$unset"):
            raise InvalidRequest(f"{where}: $secured_properties supports $set and $unset, not '{op[:40]}'")
    to_set = properties.get("$set") or {}
    to_unset = properties.get("$unset") or {}
    if not isinstance(to_set, Mapping) or not isinstance(to_unset, Mapping):
        raise InvalidRequest(f"{where}: $set and $unset must be objects")
    for key in (*to_set, *to_unset):
        if key != _PHONE_KEY:
            raise InvalidRequest(f"{where}: the only secured property is {_PHONE_KEY}, not '{key[:40]}'")
    if _PHONE_KEY in to_set:
        try:
            number = phone.normalize(to_set[_PHONE_KEY])
        except InvalidRequest as exc:
            raise type(exc)(f"{where}: {exc.message}") from exc
        # The number is encrypted on the profile; the stored event keeps only its masked form.
        return PhoneUpdate(number), {"$set": {_PHONE_KEY: phone.mask(number)}}
    if _PHONE_KEY in to_unset:
        return PhoneUpdate(None), {"$unset": {_PHONE_KEY: "-"}}
    raise InvalidRequest(f"{where}: $secured_properties must $set or $unset {_PHONE_KEY}")


def _subscriptions(channel: str, properties: Mapping[str, Any], where: str) -> ConsentUpdate:
    changes: dict[str, str] = {}
    for field, purpose in _PURPOSES:
        status = consent.parse_status(f"{where}.properties.{field}", properties.get(field), allow_unknown=True)
        if status is not None:
            changes[purpose] = status
    return ConsentUpdate(channel, changes)


def _push_token(
    properties: Mapping[str, Any], device_id: str | None, where: str
) -> tuple[PushTokenUpdate, dict[str, Any]]:
    if device_id is None:
        raise InvalidRequest(f"{where}: $push_token needs a $deviceId: tokens belong to devices")
    provider = properties.get("provider_type")
    if provider not in ("FCM", "APN"):
        raise InvalidRequest(f"{where}.properties.provider_type must be FCM or APN")
    token = properties.get("token")
    if not isinstance(token, str) or not 1 <= len(token.strip()) <= MAX_TOKEN_LENGTH:
        raise InvalidRequest(
            f"{where}.properties.token must be a non-empty string of at most {MAX_TOKEN_LENGTH} characters"
        )
    token = token.strip()
    # A push token is a credential for the device: the stored event shows only its start.
    shown = token[:8] + "…" if len(token) > 12 else token
    return PushTokenUpdate(str(provider), token), {**properties, "token": shown}


def _push_click(properties: Mapping[str, Any], where: str) -> PushClick:
    key = _int_or_none(properties.get("push_message_key"), "push_message_key", where, bits=32)
    if key is None:
        key = _int_or_none(properties.get("push_message_id"), "push_message_id", where, bits=32)
    exec_id = _int_or_none(properties.get("push_message_execution_id"), "push_message_execution_id", where)
    delivery = _int_or_none(properties.get("push_message_delivery_id"), "push_message_delivery_id", where)
    if key is None and delivery is None:
        raise InvalidRequest(f"{where}: $push_click must name push_message_key or push_message_delivery_id")
    debug = properties.get("debug") is True or properties.get("debug") == "true"
    return PushClick(campaign_key=key, exec_id=exec_id, delivery_id=delivery, debug=debug)


def system_effect(
    key: str, properties: Mapping[str, Any], *, device_id: str | None, where: str
) -> tuple[Effect | None, Mapping[str, Any]]:
    """The profile change a system event carries, and the properties to store with the event.

    Raises ``InvalidRequest`` exactly where the matching HTTP endpoint would.
    """
    if key == PROPERTIES:
        try:
            return PropertyUpdate(parse_operations(properties)), properties
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}: {exc.message}") from exc
    if key == SECURED_PROPERTIES:
        return _secured(properties, where)
    channel = SUBSCRIPTION_CHANNELS.get(key)
    if channel is not None:
        return _subscriptions(channel, properties, where), properties
    if key == PUSH_TOKEN:
        return _push_token(properties, device_id, where)
    if key == PUSH_CLICK:
        return _push_click(properties, where), properties
    return None, properties
