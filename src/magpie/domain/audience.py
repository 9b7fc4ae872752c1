"""Campaign audiences in Hackle's targeting model: targets OR-ed, conditions AND-ed. No I/O.

An audience with no targets means everyone. Each condition is parsed and compiled once, so
``matches`` only coerces the recipient's value and compares (it runs per recipient at send time).

>>> audience = parse_audience([{"conditions": [{
...     "key": {"type": "USER_PROPERTY", "name": "grade"},
...     "match": {"type": "MATCH", "operator": "IN", "valueType": "STRING", "values": ["GOLD", "VIP"]},
... }]}])
>>> matches(audience=audience, recipient=Recipient(None, (), {"grade": "VIP"}), in_cohort=lambda _: False)
True
"""

from __future__ import annotations

import functools
import math
import operator as op
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypeVar

import msgspec

from magpie.errors import InvalidCampaign

Scalar = str | int | float | bool
_E = TypeVar("_E", bound=StrEnum)


class AudienceError(InvalidCampaign):
    """An audience that cannot be parsed; answered as INVALID_CAMPAIGN like any campaign error."""


class KeyType(StrEnum):
    USER_ID = "USER_ID"
    DEVICE_ID = "DEVICE_ID"
    USER_PROPERTY = "USER_PROPERTY"
    COHORT = "COHORT"


class MatchType(StrEnum):
    MATCH = "MATCH"
    NOT_MATCH = "NOT_MATCH"


class Operator(StrEnum):
    IN = "IN"
    CONTAINS = "CONTAINS"
    STARTS_WITH = "STARTS_WITH"
    ENDS_WITH = "ENDS_WITH"
    GT = "GT"
    GTE = "GTE"
    LT = "LT"
    LTE = "LTE"
    EXISTS = "EXISTS"


class ValueType(StrEnum):
    STRING = "STRING"
    NUMBER = "NUMBER"
    BOOLEAN = "BOOLEAN"
    VERSION = "VERSION"


# --------------------------------------------------------------------------- #
# Value coercion: the same functions read condition values (at parse time) and
# recipient values (at match time), so both sides follow one set of type rules.
# --------------------------------------------------------------------------- #

# JSON-style numbers only: float() would also take "nan", "inf", "1_000" and " 42 ".
_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INTEGER_RE: Final = re.compile(r"[+-]?\d+", re.ASCII)
# Hackle's semantic-version grammar: minor and patch are optional, no leading zeros.
# re.ASCII because \d would otherwise accept non-ASCII digits such as "١.٢".
_VERSION_RE: Final = re.compile(
    r"""
    (0|[1-9]\d*)
    (?:\.(0|[1-9]\d*))?
    (?:\.(0|[1-9]\d*))?
    (?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?
    (?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?
    """,
    re.VERBOSE | re.ASCII,
)

# (major, minor, patch, is_release, prerelease identifiers). is_release is 0 for a prerelease
# so "1.0.0-beta" < "1.0.0"; identifiers are (0, int) or (1, str) so numeric ones sort first
# and an int is never compared with a str. Build metadata is dropped: it does not order.
VersionKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def _is_number(value: object) -> bool:
    # bool is an int subclass, but Hackle never treats true/false as 1/0.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _parse_number(text: str) -> int | float | None:
    if not _NUMBER_RE.fullmatch(text):
        return None
    try:
        # int for integer strings keeps large ids exact; float would round past 2**53.
        number: int | float = int(text) if _INTEGER_RE.fullmatch(text) else float(text)
    except ValueError:  # more digits than int() accepts
        return None
    return number if _is_number(number) else None


def _as_number(value: object) -> int | float | None:
    if isinstance(value, str):
        return _parse_number(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _as_string(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if _is_number(value):
        try:
            return str(value)
        except ValueError:  # an int with more digits than str() allows
            return None
    return None


def _as_boolean(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    return None


@functools.lru_cache(maxsize=4096)
def _parse_version(text: str) -> VersionKey | None:
    # Cached because the same few app versions recur across millions of recipients.
    found = _VERSION_RE.fullmatch(text)
    if found is None:
        return None
    major, minor, patch, prerelease = found.groups()
    identifiers = tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in (prerelease or "").split(".") if part
    )
    return (int(major), int(minor or 0), int(patch or 0), 0 if identifiers else 1, identifiers)


def _as_version(value: object) -> VersionKey | None:
    # Like Hackle, only strings are versions: a number 2 or 1.5 is not "2.0.0" / "1.5.0".
    return _parse_version(value) if isinstance(value, str) else None


_COERCE: Final[Mapping[ValueType, Callable[[object], Any]]] = {
    ValueType.STRING: _as_string,
    ValueType.NUMBER: _as_number,
    ValueType.BOOLEAN: _as_boolean,
    ValueType.VERSION: _as_version,
}

_ORDERING: Final = frozenset((Operator.IN, Operator.GT, Operator.GTE, Operator.LT, Operator.LTE))
# Operators that can be true for a value type; any other pairing is false for every value.
_APPLICABLE: Final[Mapping[ValueType, frozenset[Operator]]] = {
    ValueType.STRING: _ORDERING | {Operator.CONTAINS, Operator.STARTS_WITH, Operator.ENDS_WITH},
    ValueType.NUMBER: _ORDERING,
    ValueType.VERSION: _ORDERING,
    ValueType.BOOLEAN: frozenset((Operator.IN,)),
}

# (recipient value, condition value) -> bool, both already coerced to the value type.
_COMPARE: Final[Mapping[Operator, Callable[[Any, Any], bool]]] = {
    Operator.GT: op.gt,
    Operator.GTE: op.ge,
    Operator.LT: op.lt,
    Operator.LTE: op.le,
    Operator.CONTAINS: lambda user, wanted: wanted in user,
    Operator.STARTS_WITH: lambda user, wanted: user.startswith(wanted),
    Operator.ENDS_WITH: lambda user, wanted: user.endswith(wanted),
}


def _never(_value: object) -> bool:
    return False


def _compile(operator: Operator, value_type: ValueType, values: Sequence[Scalar]) -> Callable[[object], bool]:
    """A predicate over one recipient value (not an array): does any condition value match it?"""
    if operator not in _APPLICABLE[value_type]:
        return _never
    coerce = _COERCE[value_type]
    wanted = tuple(w for w in map(coerce, values) if w is not None)
    if operator is Operator.IN:
        # A set makes long IN lists (user id allow-lists) O(1); 1 == 1.0 hash alike, as they should.
        members = frozenset(wanted)

        def is_in(value: object) -> bool:
            coerced = coerce(value)
            return coerced is not None and coerced in members

        return is_in
    compare = _COMPARE[operator]

    def compares(value: object) -> bool:
        coerced = coerce(value)
        return coerced is not None and any(compare(coerced, w) for w in wanted)

    return compares


# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition; ``values`` are normalised to ``value_type`` (e.g. NUMBER "42" -> 42)."""

    key_type: KeyType
    name: str | None  # the property name for USER_PROPERTY, None for every other key type
    match_type: MatchType
    operator: Operator
    value_type: ValueType
    values: tuple[Scalar, ...]
    _test: Callable[[object], bool] = field(init=False, repr=False, compare=False)
    _negate: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_test", _compile(self.operator, self.value_type, self.values))
        object.__setattr__(self, "_negate", self.match_type is MatchType.NOT_MATCH)


@dataclass(frozen=True, slots=True)
class Target:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Audience:
    targets: tuple[Target, ...] = ()

    @property
    def is_everyone(self) -> bool:
        return not self.targets


EVERYONE: Final = Audience()


class Recipient(msgspec.Struct, frozen=True):
    user_id: str | None = None
    device_ids: tuple[str, ...] = ()
    properties: Mapping[str, Any] = msgspec.field(default_factory=dict)


# --------------------------------------------------------------------------- #
# Matching
# --------------------------------------------------------------------------- #


def matches(*, audience: Audience, recipient: Recipient, in_cohort: Callable[[str], bool]) -> bool:
    """Whether ``recipient`` is in ``audience``; ``in_cohort(name)`` answers static cohort membership."""
    if not audience.targets:
        return True
    return any(
        all(_condition_matches(condition, recipient, in_cohort) for condition in target.conditions)
        for target in audience.targets
    )


def _resolve(condition: Condition, recipient: Recipient) -> object:
    """The recipient's value for the condition's key; None when absent."""
    if condition.key_type is KeyType.USER_PROPERTY:
        return recipient.properties.get(condition.name or "")
    if condition.key_type is KeyType.USER_ID:
        return recipient.user_id or None  # an empty id identifies nobody
    return recipient.device_ids or None  # DEVICE_ID: the devices act as an array value


def _condition_matches(condition: Condition, recipient: Recipient, in_cohort: Callable[[str], bool]) -> bool:
    if condition.key_type is KeyType.COHORT:
        # Membership is always known (member or not), so there is no "missing" case here.
        member = any(in_cohort(str(name)) for name in condition.values)
        return member != condition._negate
    value = _resolve(condition, recipient)
    if condition.operator is Operator.EXISTS:
        return (value is not None) != condition._negate
    if value is None:
        # Hackle fails a condition on an absent value whatever the match type: NOT_MATCH "GOLD"
        # does not pick users without a grade.
        return False
    if isinstance(value, list | tuple):
        hit = any(item is not None and condition._test(item) for item in value)
    else:
        hit = condition._test(value)
    return hit != condition._negate


def cohort_names(audience: Audience) -> set[str]:
    """Every cohort the audience names, MATCH or NOT_MATCH, so callers can prefetch membership."""
    return {
        str(name)
        for target in audience.targets
        for condition in target.conditions
        if condition.key_type is KeyType.COHORT
        for name in condition.values
    }


# --------------------------------------------------------------------------- #
# Parsing and JSON
# --------------------------------------------------------------------------- #


def _choice(enum: type[_E], raw: object, what: str, where: str) -> _E:
    if isinstance(raw, str) and raw in enum.__members__:
        return enum[raw]
    expected = ", ".join(enum.__members__)
    raise AudienceError(f"{where}: unknown {what} {raw!r} (expected one of {expected})")


def _normalise_value(value_type: ValueType, raw: object, where: str) -> Scalar:
    if value_type is ValueType.VERSION:
        if _as_version(raw) is None:
            raise AudienceError(f"{where}: VERSION value {raw!r} is not a version like 1.2.3 or 1.0.0-beta")
        return str(raw)
    coerced: Scalar | None = _COERCE[value_type](raw)
    if coerced is None:
        expected = {
            ValueType.STRING: "a string or number",
            ValueType.NUMBER: "numeric",
            ValueType.BOOLEAN: "true or false",
        }[value_type]
        raise AudienceError(f"{where}: {value_type} value {raw!r} is not {expected}")
    return coerced


def _parse_condition(raw: object, where: str) -> Condition:
    if not isinstance(raw, Mapping):
        raise AudienceError(f"{where}: a condition must be an object with 'key' and 'match'")
    key, match = raw.get("key"), raw.get("match")
    if not isinstance(key, Mapping):
        raise AudienceError(f"{where}: 'key' must be an object with a 'type'")
    if not isinstance(match, Mapping):
        raise AudienceError(f"{where}: 'match' must be an object")
    key_type = _choice(KeyType, key.get("type"), "key type", where)
    name: str | None = None
    if key_type is KeyType.USER_PROPERTY:
        name = key.get("name")
        if not isinstance(name, str) or not name:
            raise AudienceError(f"{where}: USER_PROPERTY needs a non-empty 'name'")
    match_type = _choice(MatchType, match.get("type"), "match type", where)
    operator = _choice(Operator, match.get("operator"), "operator", where)
    value_type = _choice(ValueType, match.get("valueType"), "value type", where)
    if key_type is KeyType.COHORT:
        if value_type is not ValueType.STRING:
            raise AudienceError(f"{where}: COHORT values are cohort names, so valueType must be STRING")
        if operator is not Operator.IN:
            raise AudienceError(f"{where}: COHORT supports only the IN operator, not {operator}")
    raw_values = match.get("values", [] if operator is Operator.EXISTS else None)
    if not isinstance(raw_values, list | tuple):
        raise AudienceError(f"{where}: 'values' must be a list")
    if not raw_values and operator is not Operator.EXISTS:
        raise AudienceError(f"{where}: 'values' must not be empty for {operator}")
    values = tuple(
        _normalise_value(value_type, value, f"{where}, value {index}") for index, value in enumerate(raw_values)
    )
    return Condition(
        key_type=key_type,
        name=name,
        match_type=match_type,
        operator=operator,
        value_type=value_type,
        values=values,
    )


def _parse_target(raw: object, where: str) -> Target:
    conditions = raw.get("conditions") if isinstance(raw, Mapping) else None
    if not isinstance(conditions, list | tuple):
        raise AudienceError(f"{where}: a target must be an object with a 'conditions' list")
    if not conditions:
        # An empty AND is true for everyone; in a push server that is far more likely a mistake
        # than intent, and "everyone" is already spelled as an audience with no targets.
        raise AudienceError(f"{where}: a target needs at least one condition")
    return Target(
        conditions=tuple(
            _parse_condition(condition, f"{where}, condition {index}") for index, condition in enumerate(conditions)
        )
    )


def parse_audience(raw: object) -> Audience:
    """Validate an audience: ``None``/``{}`` (everyone), ``{"targets": [...]}`` or a bare target list.

    Raises ``AudienceError`` (an ``InvalidCampaign``) naming the target and condition index.
    """
    if raw is None:
        return EVERYONE
    if isinstance(raw, Mapping):
        targets = raw.get("targets")
        if targets is None:
            return EVERYONE
    else:
        targets = raw
    if not isinstance(targets, list | tuple):
        raise AudienceError("audience must be null, an object with a 'targets' list, or a list of targets")
    return Audience(
        targets=tuple(_parse_target(target, f"audience target {index}") for index, target in enumerate(targets))
    )


def _condition_to_json(condition: Condition) -> dict[str, Any]:
    key: dict[str, Any] = {"type": condition.key_type.value}
    if condition.name is not None:
        key["name"] = condition.name
    return {
        "key": key,
        "match": {
            "type": condition.match_type.value,
            "operator": condition.operator.value,
            "valueType": condition.value_type.value,
            "values": list(condition.values),
        },
    }


def audience_to_json(audience: Audience) -> dict[str, Any]:
    """The canonical JSON form; ``parse_audience`` of it gives back an equal audience."""
    return {
        "targets": [
            {"conditions": [_condition_to_json(condition) for condition in target.conditions]}
            for target in audience.targets
        ]
    }
