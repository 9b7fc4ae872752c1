"""Who a request is about: user or device profiles, and the first-link merge. No I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from magpie.domain.operations import MAX_PROPERTIES
from magpie.errors import EmptyIdentifier, InvalidRequest

USER: Final = "u"
DEVICE: Final = "d"
MAX_ID_LENGTH: Final = 256
# C0 and C1 control characters, NUL included: PostgreSQL's text cannot hold NUL at all, and no
# identifier needs the others. One rule for every identifier on both engines.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def has_control_characters(value: str) -> bool:
    return _CONTROL.search(value) is not None


def check_identifier(value: str, *, field: str, max_length: int = MAX_ID_LENGTH) -> str:
    """The identifier rule: at most ``max_length`` characters, no control characters."""
    if len(value) > max_length:
        raise InvalidRequest(f"{field} must be at most {max_length} characters")
    if has_control_characters(value):
        raise InvalidRequest(f"{field} must not contain NUL or other control characters")
    return value


def clean_id(value: object, *, field: str) -> str | None:
    """An identifier as magpie keys it: ``None`` for absent or blank, else the string."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string")
    if not value.strip():
        return None
    return check_identifier(value, field=field)


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
