"""Messaging consent per channel and purpose, with the time each last changed. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from magpie.errors import InvalidRequest

SUBSCRIBED: Final = "SUBSCRIBED"
UNSUBSCRIBED: Final = "UNSUBSCRIBED"
UNKNOWN: Final = "UNKNOWN"
CHANNELS: Final = ("push", "sms", "kakao")
# "night" (push and SMS only): consent to marketing messages between 21:00 and 08:00.
PURPOSES: Final = ("marketing", "information", "night")
# The one list of channels with a night consent: the API, its OpenAPI document and delivery read it.
NIGHT_CHANNELS: Final = ("push", "sms")
# The request fields of the subscription endpoints and the purpose each records
# (``nightSubscriptionStatus`` is magpie's extension, on the NIGHT_CHANNELS only).
STATUS_FIELDS: Final = (
    ("marketingSubscriptionStatus", "marketing"),
    ("informationSubscriptionStatus", "information"),
    ("nightSubscriptionStatus", "night"),
)


def status_fields(channel: str) -> tuple[tuple[str, str], ...]:
    """``(request field, purpose)`` pairs a channel's subscription endpoint takes.

    >>> [field for field, _ in status_fields("sms")]
    ['marketingSubscriptionStatus', 'informationSubscriptionStatus', 'nightSubscriptionStatus']
    >>> [field for field, _ in status_fields("kakao")]
    ['marketingSubscriptionStatus', 'informationSubscriptionStatus']
    """
    return tuple(
        (field, purpose) for field, purpose in STATUS_FIELDS if purpose != "night" or channel in NIGHT_CHANNELS
    )


_API_STATUSES: Final = frozenset((SUBSCRIBED, UNSUBSCRIBED))


def parse_status(field: str, value: object, *, allow_unknown: bool = False) -> str | None:
    """A status from a request: ``None`` when omitted, else SUBSCRIBED or UNSUBSCRIBED."""
    if value is None:
        return None
    allowed = _API_STATUSES | ({UNKNOWN} if allow_unknown else set())
    if not isinstance(value, str) or value not in allowed:
        raise InvalidRequest(f"{field} must be one of {', '.join(sorted(allowed))}, got {value!r}")
    return value


def apply_consent(*, crm: Mapping[str, Any], channel: str, changes: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """Return ``crm`` with ``changes`` (purpose -> status) recorded for ``channel``.

    ``changedAt`` moves only when the status changes; ``updatedAt`` on every confirmation,
    so a two-year re-confirmation notice can be computed from either.
    """
    result = {c: dict(p) for c, p in crm.items()}
    purposes = result.setdefault(channel, {})
    for purpose, status in changes.items():
        previous = purposes.get(purpose)
        unchanged = previous is not None and previous.get("status") == status
        purposes[purpose] = {
            "status": status,
            "changedAt": previous["changedAt"] if unchanged and previous is not None else now_ms,
            "updatedAt": now_ms,
        }
    return result


def status_of(crm: Mapping[str, Any], channel: str, purpose: str) -> str:
    state = crm.get(channel, {}).get(purpose)
    return UNKNOWN if state is None else str(state["status"])


# 정보통신망법 시행령 §62의3: every two years from the consent, tell the user they still consent.
RECONFIRM_EVERY_MS: Final = 2 * 365 * 86_400_000


def reconfirmation_due(crm: Mapping[str, Any], channel: str, *, now_ms: int, within_ms: int = 0) -> int | None:
    """When the two-year notice on ``channel``'s marketing consent falls due, if it does by ``now + within``.

    The two years run from the last time the user confirmed (``updatedAt``), so a renewed consent
    starts them again; only a SUBSCRIBED marketing consent needs the notice.
    """
    state = crm.get(channel, {}).get("marketing")
    if state is None or state.get("status") != SUBSCRIBED:
        return None
    due = int(state.get("updatedAt") or state.get("changedAt") or 0) + RECONFIRM_EVERY_MS
    return due if due <= now_ms + within_ms else None
