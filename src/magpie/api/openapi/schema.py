"""OpenAPI building blocks shared by the document's parts: identifiers, errors, one operation."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "problems": {
            "type": "array",
            "description": "Every problem found, when there are several (a campaign definition's); "
            "`message` is the first",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_SUCCESS = {"$ref": "#/components/schemas/Success"}
ID = {"type": ["string", "null"], "maxLength": 256}
_API_PROPERTIES = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
    "description": "Values for {{ api_properties.* }} in the campaign's templates",
}


def trigger_body(user: dict[str, Any], *, campaign_key: str | None = None) -> dict[str, Any]:
    """The body of a trigger send: a campaign key and 1-50 users, each with optional ``apiProperties``."""
    key: dict[str, Any] = (
        {"type": "integer"} if campaign_key is None else {"type": "integer", "description": campaign_key}
    )
    item = {**user, "properties": {**user["properties"], "apiProperties": _API_PROPERTIES}}
    return {
        "type": "object",
        "required": ["campaignKey", "users"],
        "properties": {"campaignKey": key, "users": {"type": "array", "minItems": 1, "maxItems": 50, "items": item}},
    }


# Which error codes each status can carry, for the response descriptions.
_ERRORS: dict[str, tuple[str, list[str]]] = {
    "400": ("Invalid request", ["INVALID_REQUEST", "EMPTY_IDENTIFIER"]),
    "401": ("Missing or invalid API key", ["API_KEY_NOT_FOUND", "INVALID_API_KEY"]),
    "413": ("Body over the size limit (1 MiB by default)", ["PAYLOAD_TOO_LARGE"]),
    "429": ("Rate limit for the key exceeded; see Retry-After", ["RATE_LIMITED"]),
    "503": ("Storage unavailable; retry", ["SERVICE_UNAVAILABLE"]),
}


def _errors(extra400: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, (text, codes) in _ERRORS.items():
        all_codes = codes + (extra400 or []) if status == "400" else codes
        out[status] = {
            "description": f"{text}. Codes: {', '.join(all_codes)}",
            "content": {"application/json": {"schema": _ERROR}},
        }
    return out


def operation(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    ok: dict[str, Any] | None = None,
    extra400: list[str] | None = None,
    params: list[dict[str, Any]] | None = None,
    tag: str = "Hackle API",
    security: str = "ApiKey",
    not_found: str | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "security": [{security: []}],
        "responses": {
            "200": {"description": "Success", "content": {"application/json": {"schema": ok or _SUCCESS}}},
            **_errors(extra400),
        },
    }
    if not_found is not None:
        op["responses"]["404"] = {
            "description": f"{not_found}. Code: NOT_FOUND",
            "content": {"application/json": {"schema": _ERROR}},
        }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op
