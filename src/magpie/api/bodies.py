"""Decoding and validating request bodies, shared by the HTTP layer and the writer. No I/O.

The property endpoint's body is validated inside the writer (``magpie.api.profiles.PropertiesBody``):
where the writer runs in its own process, that work then stays off the event loop.
"""

from __future__ import annotations

from typing import Any

import msgspec

from magpie.domain.identity import clean_id, require_identifier
from magpie.domain.operations import Operation, parse_operations
from magpie.errors import EmptyIdentifier, InvalidRequest

_decode = msgspec.json.decode


def decode_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from a request body; anything else is a 400 ``INVALID_REQUEST``."""
    if not raw:
        raise InvalidRequest("the request body must be a JSON object")
    try:
        value = _decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return value


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


def parse_properties(raw: bytes) -> tuple[str | None, str | None, list[Operation]]:
    """A ``POST /v1/properties`` body: identifiers and the flattened operations."""
    body = decode_object(raw)
    user_id, device_id = request_ids(body, user_required=False)
    if "operations" not in body:
        raise InvalidRequest("operations is required")
    return user_id, device_id, parse_operations(body["operations"])
