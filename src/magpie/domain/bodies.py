"""Decoding and validating request bodies, shared by the HTTP layer and the writer. No I/O.

The property endpoint's body is validated inside the writer (``magpie.store.profiles.PropertiesBody``):
where the writer runs in its own process, that work then stays off the event loop.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from magpie.domain.identity import clean_id, require_identifier
from magpie.domain.operations import Operation, parse_operations
from magpie.errors import EmptyIdentifier, InvalidRequest

_plain: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
# 64-bit signed integers: what both engines' BIGINT columns hold.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def decode_json(raw: bytes, decoder: msgspec.json.Decoder[Any] | None = None) -> Any:
    """Decode a request body; every way it can be unreadable is a 400 ``INVALID_REQUEST``.

    This is the one decode path of every endpoint (and of the writer, for bodies it decodes
    itself), so a body that is not UTF-8, is nested past what the decoder allows, or does not
    fit its schema fails its own request before it can reach a group-commit batch.
    """
    if not raw:
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return (decoder or _plain).decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid UTF-8 (byte {exc.start})") from exc
    except RecursionError as exc:
        raise InvalidRequest("the request body is nested too deeply") from exc


def decode_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from a request body; anything else is a 400 ``INVALID_REQUEST``."""
    value = decode_json(raw)
    if not isinstance(value, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return value


def parse_int(value: str | None, *, name: str, default: int, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """An integer query or path parameter in ``[low, high]``; ASCII digits only (no ``²``)."""
    if value is None or value == "":
        return default
    digits = value[1:] if value[:1] == "-" else value
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
        raise InvalidRequest(f"{name} must be an integer")
    number = int(value)
    if not low <= number <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}")
    return number


def request_ids(body: dict[str, Any], *, user_required: bool) -> tuple[str | None, str | None]:
    """``(userId, deviceId)`` of a body; ``userId`` alone where the endpoint requires it."""
    user_id = clean_id(body.get("userId"), field="userId")
    if user_required:
        if user_id is None:
            raise EmptyIdentifier("userId is required")
        return user_id, None
    device_id = clean_id(body.get("deviceId"), field="deviceId")
    require_identifier(user_id, device_id)
    return user_id, device_id


def require_action(body: dict[str, Any], *, acts_on: tuple[str, ...], known: tuple[str, ...]) -> None:
    """A body must name at least one field the endpoint acts on; if not, say what was expected.

    Fields the endpoint does not know are named too: a misspelled field (``marketingStatus``) or
    a body meant for another endpoint (``users``) would otherwise be a silent no-op.
    """
    if any(name in body for name in acts_on):
        return
    message = f"the body has nothing to act on: expected {' or '.join(acts_on)}"
    unknown = [str(name)[:64] for name in body if name not in known]
    if unknown:
        message += f"; unknown fields: {', '.join(unknown[:10])} (known: {', '.join(known)})"
    raise InvalidRequest(message)


_PROPERTY_FIELDS = ("userId", "deviceId", "operations")


def parse_properties(raw: bytes) -> tuple[str | None, str | None, list[Operation]]:
    """A ``POST /v1/properties`` body: identifiers and the flattened operations."""
    body = decode_object(raw)
    require_action(body, acts_on=("operations",), known=_PROPERTY_FIELDS)
    user_id, device_id = request_ids(body, user_required=False)
    if "operations" not in body:
        raise InvalidRequest("operations is required")
    return user_id, device_id, parse_operations(body["operations"])
