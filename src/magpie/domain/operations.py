"""Hackle's ten user-property operations: validation and application, with no I/O.

>>> ops = parse_operations({"$set": {"grade": "GOLD"}, "$increment": {"visits": 1}})
>>> apply_operations(properties={"visits": 2}, operations=ops)
{'visits': 3, 'grade': 'GOLD'}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from magpie.errors import InvalidRequest

Scalar = str | int | float | bool
Value = Scalar | list[str | int | float]

# The order operations apply in within one request.
OPERATION_ORDER: Final = (
    "$set",
    "$setOnce",
    "$unset",
    "$increment",
    "$append",
    "$appendOnce",
    "$prepend",
    "$prependOnce",
    "$remove",
    "$clearAll",
)
_KNOWN: Final = frozenset(OPERATION_ORDER)
_ORDER_INDEX: Final = {op: i for i, op in enumerate(OPERATION_ORDER)}
# Operations whose values are ignored (Hackle sends "-").
_VALUE_IGNORED: Final = frozenset(("$unset", "$clearAll"))
_ARRAY_OPS: Final = frozenset(("$append", "$appendOnce", "$prepend", "$prependOnce", "$remove"))

MAX_PROPERTIES: Final = 128
MAX_KEY_LENGTH: Final = 128
MAX_STRING_LENGTH: Final = 1024
# Numbers are 64-bit: JSON allows any size, but stores and SDKs do not.
MAX_INT: Final = 2**63 - 1
# Arrays: Hackle bounds a profile by 128 properties of 1,024 characters; an array property is
# bounded in the same spirit, and the whole profile by its stored (JSON) size.
MAX_ARRAY_ELEMENTS: Final = 1024
MAX_PROFILE_BYTES: Final = 256 * 1024

Operation = tuple[str, str, Any]
_encode = msgspec.json.encode


def is_number(value: object) -> bool:
    kind = type(value)
    return kind is int or kind is float or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_value(op: str, key: str, value: object) -> None:
    if isinstance(value, str):
        if len(value) > MAX_STRING_LENGTH:
            raise InvalidRequest(
                f"{op}.{key}: string values are limited to {MAX_STRING_LENGTH} characters (got {len(value)})"
            )
        return
    if isinstance(value, bool):
        return
    if is_number(value):
        _check_number(op, key, value)
        return
    if isinstance(value, list):
        if len(value) > MAX_ARRAY_ELEMENTS:
            raise InvalidRequest(f"{op}.{key}: arrays are limited to {MAX_ARRAY_ELEMENTS} elements (got {len(value)})")
        for item in value:
            if isinstance(item, bool) or not (isinstance(item, str) or is_number(item)):
                raise InvalidRequest(f"{op}.{key}: arrays may hold only strings and numbers")
            if is_number(item):
                _check_number(op, key, item)
            if isinstance(item, str) and len(item) > MAX_STRING_LENGTH:
                raise InvalidRequest(f"{op}.{key}: string values are limited to {MAX_STRING_LENGTH} characters")
        return
    kind = "null" if value is None else type(value).__name__
    raise InvalidRequest(f"{op}.{key}: a property value must be a string, number, boolean or array, not {kind}")


def _check_number(op: str, key: str, value: object) -> None:
    if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        raise InvalidRequest(f"{op}.{key}: integers are limited to 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"{op}.{key}: numbers must be finite")


def check_key(key: str, *, where: str = "property") -> None:
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidRequest(f"{where} key '{key[:40]}' must be 1 to {MAX_KEY_LENGTH} characters long")
    if key.startswith("$"):
        raise InvalidRequest(f"{where} key '{key[:40]}' is reserved: keys starting with '$' are not allowed")


def parse_operations(raw: object) -> list[Operation]:
    """Validate an ``operations`` object and flatten it into ``(op, key, value)`` in apply order.

    A key appearing in several operations keeps only its first in apply order.
    """
    # Plain dicts (what JSON decodes to) are checked with type(), which is much cheaper than an ABC
    # isinstance check on this hot path; other mappings still work through the slow path.
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise InvalidRequest("operations must be an object")
    for op, body in raw.items():
        if op not in _KNOWN:
            raise InvalidRequest(f"unknown operation '{op}'; expected one of {', '.join(OPERATION_ORDER)}")
        if type(body) is not dict and not isinstance(body, Mapping):
            raise InvalidRequest(f"{op} must be an object of property keys to values")
    seen: set[str] = set()
    result: list[Operation] = []
    present = sorted(raw, key=_ORDER_INDEX.__getitem__) if len(raw) > 1 else list(raw)
    for op in present:
        body = raw[op]
        if op == "$clearAll":
            # Its presence is the instruction; Hackle's SDKs send {"clearAll": "-"}.
            if body is not None:
                result.append((op, "", None))
            continue
        if not body:
            continue
        for key, value in body.items():
            check_key(key)
            if op not in _VALUE_IGNORED:
                _check_value(op, key, value)
            if key in seen:
                continue
            seen.add(key)
            result.append((op, key, None if op in _VALUE_IGNORED else value))
    return result


def _as_list(value: object) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return list(value)
    return [value]


def _identity(value: object) -> tuple[str, object]:
    # Numbers compare by value (1 == 1.0); booleans and strings never equal a number.
    if isinstance(value, bool):
        return ("b", value)
    if is_number(value):
        # Python's int/float comparison and hashing are exact (1 == 1.0, 2**53 + 1 != 2.0**53);
        # float() would merge large ints and overflow on huge ones.
        return ("n", value)
    return ("s", value)


def _apply_one(props: dict[str, Any], op: str, key: str, value: Any) -> None:
    if op == "$set":
        props[key] = value
    elif op == "$setOnce":
        props.setdefault(key, value)
    elif op == "$unset":
        props.pop(key, None)
    elif op == "$increment":
        current = props.get(key)
        if not is_number(value):
            return
        if current is None:
            props[key] = value
        elif is_number(current):
            total = current + value
            if (isinstance(total, int) and not -MAX_INT - 1 <= total <= MAX_INT) or (
                isinstance(total, float) and not math.isfinite(total)
            ):
                raise InvalidRequest(f"$increment.{key}: the result would leave the 64-bit number range")
            props[key] = total
    elif op in _ARRAY_OPS:
        current = _as_list(props.get(key))
        values = _as_list(value)
        if op == "$append":
            current.extend(values)
        elif op == "$appendOnce":
            present = {_identity(v) for v in current}
            for v in values:
                ident = _identity(v)
                if ident not in present:
                    present.add(ident)
                    current.append(v)
        elif op == "$prepend":
            current = values + current
        elif op == "$prependOnce":
            present = {_identity(v) for v in current}
            front: list[Any] = []
            for v in values:
                ident = _identity(v)
                if ident not in present:
                    present.add(ident)
                    front.append(v)
            current = front + current
        else:  # $remove
            gone = {_identity(v) for v in values}
            current = [v for v in current if _identity(v) not in gone]
        props[key] = current


def apply_operations(*, properties: Mapping[str, Any], operations: list[Operation]) -> dict[str, Any]:
    """Return the properties after ``operations``; the input mapping is left untouched.

    Raises ``InvalidRequest`` when the result would exceed the per-profile limits.
    """
    props = dict(properties)
    arrays = False
    for op, key, value in operations:
        if op == "$clearAll":
            props.clear()
        else:
            _apply_one(props, op, key, value)
            if op != "$remove" and (op in _ARRAY_OPS or type(value) is list):
                arrays = True
                grown = props.get(key)
                if isinstance(grown, list) and len(grown) > MAX_ARRAY_ELEMENTS:
                    raise InvalidRequest(
                        f"property '{key}' would hold {len(grown)} elements; arrays are limited to {MAX_ARRAY_ELEMENTS}"
                    )
    if len(props) > MAX_PROPERTIES:
        raise InvalidRequest(
            f"a profile may hold at most {MAX_PROPERTIES} properties; this update would leave {len(props)}"
        )
    for key, value in props.items():
        if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
            raise InvalidRequest(f"property '{key}' would exceed {MAX_STRING_LENGTH} characters")
    # Without arrays a profile stays far below the size limit (128 keys and values of bounded
    # length), so only an update that touched an array pays for measuring it.
    if arrays:
        size = len(_encode(props))
        if size > MAX_PROFILE_BYTES:
            raise InvalidRequest(f"the profile's properties would take {size} bytes; the limit is {MAX_PROFILE_BYTES}")
    return props
