"""Who a request is about: user or device profiles, and the first-link merge. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from magpie.domain.operations import MAX_PROPERTIES
from magpie.errors import EmptyIdentifier, InvalidRequest

USER: Final = "u"
DEVICE: Final = "d"
MAX_ID_LENGTH: Final = 256


def clean_id(value: object, *, field: str) -> str | None:
    """An identifier as magpie keys it: ``None`` for absent or blank, else the string."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string")
    if not value.strip():
        return None
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRequest(f"{field} must be at most {MAX_ID_LENGTH} characters")
    return value


def require_identifier(user_id: str | None, device_id: str | None) -> None:
    if user_id is None and device_id is None:
        raise EmptyIdentifier()


def merge_anonymous(*, user_properties: Mapping[str, Any], device_properties: Mapping[str, Any]) -> dict[str, Any]:
    """The user's properties after inheriting an anonymous device's: the user's values win."""
    merged = dict(user_properties)
    for key, value in device_properties.items():
        if len(merged) >= MAX_PROPERTIES:
            break
        merged.setdefault(key, value)
    return merged


def merge_crm(*, user_crm: Mapping[str, Any], device_crm: Mapping[str, Any]) -> dict[str, Any]:
    """Consents a device gave while anonymous carry over where the user has none."""
    merged: dict[str, Any] = {channel: dict(purposes) for channel, purposes in user_crm.items()}
    for channel, purposes in device_crm.items():
        target = merged.setdefault(channel, {})
        for purpose, state in purposes.items():
            target.setdefault(purpose, state)
    return merged
