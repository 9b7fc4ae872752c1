"""How the dashboard words things: times in the environment's zone, numbers, audiences, caps. No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

_OPERATORS = {
    "IN": "is",
    "CONTAINS": "contains",
    "STARTS_WITH": "starts with",
    "ENDS_WITH": "ends with",
    "GT": ">",
    "GTE": "≥",
    "LT": "<",
    "LTE": "≤",
    "EXISTS": "exists",
}
_KEYS = {"USER_ID": "user id", "DEVICE_ID": "device id", "COHORT": "cohort"}


def local_time(ms: int | None, zone: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(zone)).strftime(fmt)


def number(value: int | float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def describe_condition(condition: dict[str, Any]) -> str:
    key, match = condition["key"], condition["match"]
    subject = f"property “{key.get('name')}”" if key["type"] == "USER_PROPERTY" else _KEYS.get(key["type"], key["type"])
    operator = _OPERATORS.get(match["operator"], match["operator"])
    negated = match["type"] == "NOT_MATCH"
    if match["operator"] == "EXISTS":
        return f"{subject} {'does not exist' if negated else 'exists'}"
    values = " or ".join(str(v) for v in match["values"])
    return f"{subject} {'not ' if negated else ''}{operator} {values}"


def describe_audience(audience: dict[str, Any]) -> list[list[str]]:
    """One list of AND-ed sentences per OR-ed target; empty when everyone is in the audience."""
    return [[describe_condition(c) for c in target["conditions"]] for target in audience.get("targets", [])]


# (singular, plural) of a message of each channel; None: a cap over every channel.
_NOUNS: dict[str | None, tuple[str, str]] = {
    "push": ("push", "pushes"),
    "kakao": ("Kakao message", "Kakao messages"),
    "sms": ("SMS", "SMS"),
    None: ("message", "messages"),
}
CHANNEL_LABELS = {"push": "Push", "kakao": "Kakao", "sms": "SMS"}
TYPE_LABELS = {"alimtalk": "AlimTalk", "brand": "Brand message", "SMS": "SMS", "LMS": "LMS", "MMS": "MMS"}
GATEWAY_LABELS = {"nhn": "NHN Cloud", "solapi": "Solapi", "sandbox": "sandbox"}
PUSH_PROVIDER_LABELS = {"push": "FCM / APNs", "sandbox": "sandbox", "webhook": "webhook"}


def plural(n: int | float, singular: str, many: str | None = None) -> str:
    """``1 day``, ``7 days``, ``1.5 hours``.

    >>> plural(1, "day"), plural(7, "day"), plural(3, "SMS", "SMS")
    ('1 day', '7 days', '3 SMS')
    """
    word = singular if n == 1 else (many if many is not None else singular + "s")
    shown = f"{int(n):,}" if float(n).is_integer() else f"{n:g}"
    return f"{shown} {word}"


def describe_cap(cap: dict[str, Any]) -> str:
    """A frequency cap in words, with the channel it counts.

    >>> describe_cap({"limit": 1, "windowHours": 24, "channel": "sms"})
    'at most 1 marketing SMS per user in 1 day'
    >>> describe_cap({"limit": 3, "windowHours": 168, "channel": "push", "tag": "sale"})
    'at most 3 pushes tagged “sale” per user in 7 days'
    """
    hours = float(cap["windowHours"])
    window = plural(hours / 24, "day") if hours >= 24 and hours % 24 == 0 else plural(hours, "hour")
    one, many = _NOUNS.get(cap.get("channel"), _NOUNS[None])
    limit = int(cap["limit"])
    noun = one if limit == 1 else many
    what = f"{noun} tagged “{cap['tag']}”" if cap.get("tag") else f"marketing {noun}"
    if cap.get("channel") is None:
        what += " of any channel"
    return f"at most {limit} {what} per user in {window}"


def caps_for(caps: list[dict[str, Any]], *, channel: str, tags: list[str]) -> list[dict[str, Any]]:
    """The caps a marketing message of ``channel`` with ``tags`` counts against (see ``compliance.cap_exceeded``)."""
    return [
        c
        for c in caps
        if (c.get("channel") is None or c.get("channel") == channel) and (not c.get("tag") or c["tag"] in tags)
    ]


def provider_label(campaign: dict[str, Any], settings: dict[str, Any]) -> str:
    """Who sends a campaign's messages: FCM / APNs, the sandbox, a webhook, NHN Cloud or Solapi."""
    channel = campaign.get("channel", "push")
    if channel == "push":
        return PUSH_PROVIDER_LABELS.get(campaign.get("provider", "push"), str(campaign.get("provider")))
    name = "sandbox" if campaign.get("provider") == "sandbox" else str(settings.get(f"{channel}Gateway") or "sandbox")
    return GATEWAY_LABELS.get(name, name)


def channel_label(campaign: dict[str, Any]) -> str:
    """``Push``, ``Kakao AlimTalk``, ``Kakao brand message`` or ``SMS``."""
    channel = str(campaign.get("channel", "push"))
    if channel == "kakao":
        return "Kakao AlimTalk" if campaign.get("type") == "alimtalk" else "Kakao brand message"
    return CHANNEL_LABELS.get(channel, channel)


def rate(value: float | None) -> str:
    """A share as a percentage; ``—`` where it does not apply."""
    return "—" if value is None else percent(value)


def mask_token(token: str) -> str:
    return token if len(token) <= 12 else token[:8] + "…"
