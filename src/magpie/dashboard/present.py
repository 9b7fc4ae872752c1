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


def describe_cap(cap: dict[str, Any]) -> str:
    hours = float(cap["windowHours"])
    window = f"{hours / 24:g} days" if hours >= 24 and hours % 24 == 0 else f"{hours:g} hours"
    scope = f"tagged “{cap['tag']}”" if cap.get("tag") else "marketing"
    return f"at most {cap['limit']} {scope} pushes per user in {window}"


def mask_token(token: str) -> str:
    return token if len(token) <= 12 else token[:8] + "…"
