"""Experiments: a campaign's conversion goal, control group and message variants, and who gets which arm.

A campaign file may add::

    goal:
      event: purchase          # the event key that counts as a conversion
      window: 24h              # after the send (s, m, h or d; at most 30d)
      where: {plan: premium}   # optional: event properties that must match (a list: any of)
      value: amount            # optional: a numeric event property summed as revenue
    controlGroup: 10           # percent of the audience held out (0-50)
    variants:                  # at most 5; each a message of the campaign's channel
      - {name: A, weight: 1, message: {...}}
      - {name: B, weight: 1, message: {...}}

``assign`` is pure and deterministic: the arm depends only on the experiment's salt (the campaign key)
and the recipient, so a user gets the same arm on every trigger and occurrence. The control draw and
the variant draw use separate halves of one SHA-256 digest, so changing the control share does not
move users between variants. Arm numbers: 0 is the control group, 1..n the variants in file order.

>>> exp = parse_experiment({"goal": {"event": "purchase", "window": "24h"}, "controlGroup": 10}, key=7, messages=[])
>>> assign(experiment=exp, user_key="u:alice") in (Control(), Variant(0))
True
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from magpie.errors import InvalidCampaign

FIELDS: Final = frozenset({"goal", "controlGroup", "variants"})
MAX_VARIANTS: Final = 5
MAX_CONTROL_PERCENT: Final = 50
MAX_WINDOW_MS: Final = 30 * 86_400_000
DEFAULT_WINDOW_MS: Final = 86_400_000
CONTROL_GROUP: Final = "CONTROL_GROUP"
CONTROL_ARM: Final = 0
_UNITS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_WINDOW = re.compile(r"^(\d{1,6})([smhd])$")
_GOAL_FIELDS: Final = frozenset({"event", "window", "where", "value"})
_VARIANT_FIELDS: Final = frozenset({"name", "weight", "message"})
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True, slots=True)
class Control:
    """Held out: not sent, recorded EXCLUDED with reason CONTROL_GROUP, its conversions still measured."""

    @property
    def arm(self) -> int:
        return CONTROL_ARM


@dataclass(frozen=True, slots=True)
class Variant:
    """Send variant ``index`` (0-based, in file order)."""

    index: int

    @property
    def arm(self) -> int:
        return self.index + 1


Assignment = Control | Variant


@dataclass(frozen=True, slots=True)
class Goal:
    event: str
    window_ms: int
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    value: str | None = None

    def matches(self, properties: Mapping[str, Any]) -> bool:
        """Whether an event's properties meet every condition of the goal."""
        return all(properties.get(name) in allowed for name, allowed in self.where)

    def value_of(self, properties: Mapping[str, Any]) -> float | None:
        """The revenue an event carries: its ``value`` property when numeric, else nothing."""
        if self.value is None:
            return None
        found = properties.get(self.value)
        if isinstance(found, bool) or not isinstance(found, int | float):
            return None
        return float(found)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"event": self.event, "window": _window_text(self.window_ms)}
        if self.where:
            doc["where"] = {name: list(values) if len(values) > 1 else values[0] for name, values in self.where}
        if self.value is not None:
            doc["value"] = self.value
        return doc


@dataclass(frozen=True, slots=True)
class VariantSpec:
    name: str
    weight: float
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Experiment:
    """What a campaign measures and how its audience is split."""

    salt: str
    goal: Goal | None
    control_percent: float
    variants: tuple[VariantSpec, ...]
    version: str

    @property
    def arms(self) -> list[tuple[int, str]]:
        """(arm, name) of the control group (when there is one) and of each variant."""
        named = [(i + 1, v.name) for i, v in enumerate(self.variants)] or [(1, "campaign")]
        return ([(CONTROL_ARM, "control")] if self.control_percent > 0 else []) + named

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.goal is not None:
            doc["goal"] = self.goal.to_json()
        if self.control_percent:
            doc["controlGroup"] = self.control_percent
        if self.variants:
            doc["variants"] = [{"name": v.name, "weight": v.weight, "message": v.message} for v in self.variants]
        return doc


def _window_text(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        if ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms // 1000}s"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse_goal(raw: object) -> Goal:
    if not isinstance(raw, Mapping):
        raise InvalidCampaign("goal must be an object: {event, window?, where?, value?}")
    unknown = set(raw) - _GOAL_FIELDS
    if unknown:
        raise InvalidCampaign(f"unknown goal fields: {', '.join(sorted(map(str, unknown)))}")
    event = raw.get("event")
    if not isinstance(event, str) or not event.strip() or len(event) > 256:
        raise InvalidCampaign("goal.event must be an event key (a non-empty string of at most 256 characters)")
    window = raw.get("window", "24h")
    match = _WINDOW.match(window) if isinstance(window, str) else None
    if match is None:
        raise InvalidCampaign(f"goal.window must be a duration like 30m, 24h or 7d, got {window!r}")
    window_ms = int(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < window_ms <= MAX_WINDOW_MS:
        raise InvalidCampaign("goal.window must be more than 0 and at most 30d")
    where_raw = raw.get("where", {})
    if not isinstance(where_raw, Mapping):
        raise InvalidCampaign("goal.where must be an object of event property names and values")
    where: list[tuple[str, tuple[Any, ...]]] = []
    for name, value in sorted(where_raw.items(), key=lambda kv: str(kv[0])):
        values = tuple(value) if isinstance(value, list) else (value,)
        if not values or not all(isinstance(v, _SCALARS) for v in values):
            raise InvalidCampaign(f"goal.where.{name} must be a string, number or boolean, or a list of them")
        where.append((str(name), values))
    value_name = raw.get("value")
    if value_name is not None and (not isinstance(value_name, str) or not value_name):
        raise InvalidCampaign("goal.value must be the name of a numeric event property")
    return Goal(event=event, window_ms=window_ms, where=tuple(where), value=value_name)


def variant_messages(raw: object) -> list[object]:
    """The messages of a ``variants`` list, checked for its shape (each is parsed as a campaign message)."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        raise InvalidCampaign("variants must be a non-empty list of {name?, weight, message}")
    if len(raw) > MAX_VARIANTS:
        raise InvalidCampaign(f"variants: at most {MAX_VARIANTS} variants, got {len(raw)}")
    found: list[object] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise InvalidCampaign(f"variants[{i}] must be an object: {{name?, weight, message}}")
        unknown = set(item) - _VARIANT_FIELDS
        if unknown:
            raise InvalidCampaign(f"variants[{i}]: unknown fields: {', '.join(sorted(map(str, unknown)))}")
        if "message" not in item:
            raise InvalidCampaign(f"variants[{i}].message is required")
        found.append(item["message"])
    return found


def parse_experiment(raw: Mapping[str, Any], *, key: int, messages: Sequence[dict[str, Any]]) -> Experiment:
    """The experiment part of a campaign definition; ``messages`` are the variants' parsed messages (JSON)."""
    goal = parse_goal(raw["goal"]) if raw.get("goal") is not None else None
    control = raw.get("controlGroup", 0)
    percent = _number(control)
    if percent is None or not 0 <= percent <= MAX_CONTROL_PERCENT:
        raise InvalidCampaign(f"controlGroup must be a percentage from 0 to {MAX_CONTROL_PERCENT}, got {control!r}")
    specs: list[VariantSpec] = []
    names: set[str] = set()
    for i, item in enumerate(raw.get("variants") or []):
        weight = _number(item.get("weight", 1))
        if weight is None or weight <= 0 or weight > 1e6:
            raise InvalidCampaign(f"variants[{i}].weight must be a positive number, got {item.get('weight')!r}")
        name = item.get("name", chr(ord("A") + i))
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise InvalidCampaign(f"variants[{i}].name must be a non-empty string of at most 64 characters")
        if name in names or name == "control":
            raise InvalidCampaign(f"variants[{i}].name {name!r} is used twice (or is 'control')")
        names.add(name)
        specs.append(VariantSpec(name=name, weight=weight, message=messages[i]))
    digest = hashlib.sha256(
        msgspec.json.encode([percent, [[v.name, v.weight, v.message] for v in specs]], order="sorted")
    ).hexdigest()[:8]
    return Experiment(
        salt=str(key), goal=goal, control_percent=percent if percent else 0.0, variants=tuple(specs), version=digest
    )


def _unit(digest: bytes) -> float:
    """Eight bytes of a digest as a number uniform on [0, 1)."""
    return int.from_bytes(digest, "big") / 2.0**64


def assign(*, experiment: Experiment, user_key: str) -> Assignment:
    """The arm of one recipient (``user_key``: ``u:<userId>``, or ``d:<deviceId>`` for a device alone)."""
    digest = hashlib.sha256(f"{experiment.salt}\x00{user_key}".encode()).digest()
    if _unit(digest[:8]) * 100 < experiment.control_percent:
        return Control()
    if not experiment.variants:
        return Variant(0)
    point = _unit(digest[8:16]) * sum(v.weight for v in experiment.variants)
    for index, variant in enumerate(experiment.variants):
        point -= variant.weight
        if point < 0:
            return Variant(index)
    return Variant(len(experiment.variants) - 1)
