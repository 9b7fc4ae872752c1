"""OpenAPI paths for push: trigger send, push tokens and statistics."""

from __future__ import annotations

from typing import Any

from magpie.api.schema import ID, operation

_TRIGGER = {
    "type": "object",
    "required": ["campaignKey", "users"],
    "properties": {
        "campaignKey": {"type": "integer", "description": "The key of an ACTIVE API-triggered campaign"},
        "users": {
            "type": "array",
            "minItems": 1,
            "maxItems": 50,
            "items": {
                "type": "object",
                "properties": {
                    "userId": ID,
                    "deviceId": ID,
                    "apiProperties": {
                        "type": "object",
                        "additionalProperties": {"type": ["string", "number", "boolean"]},
                        "description": "Values for {{ api_properties.* }} in the campaign's templates",
                    },
                },
            },
        },
    },
}
_DISPATCHID = {
    "type": "object",
    "required": ["dispatchId", "message"],
    "properties": {"dispatchId": {"type": "string", "format": "uuid"}, "message": {"const": "success"}},
}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
_DISPATCH = {
    "type": "object",
    "properties": {
        "dispatchId": {"type": "string"},
        "executionId": {"type": "integer"},
        "campaignKey": {"type": "integer"},
        "status": {"enum": ["ACCEPTED", "RUNNING", "SCHEDULED", "COMPLETED"]},
        "requested": {"type": "integer"},
        "counts": _COUNTS,
        "excluded": _COUNTS,
        "failures": {**_COUNTS, "description": "FAILED recipients by reason"},
        "recipients": {"type": "array", "items": {"type": "object"}},
    },
}
_STATS = {
    "type": "object",
    "properties": {
        "requested": {"type": "integer"},
        "sent": {"type": "integer"},
        "failed": {"type": "integer"},
        "failures": {**_COUNTS, "description": "FAILED recipients by reason"},
        "excluded": _COUNTS,
        "clicks": {"type": "integer"},
        "ctr": {"type": "number"},
    },
}


def push_paths() -> dict[str, dict[str, Any]]:
    return {
        "/v1/push-message/trigger/send": {
            "post": {
                **operation(
                    "Send an API-triggered push campaign to up to 50 users",
                    body=_TRIGGER,
                    ok=_DISPATCHID,
                    extra400=["EXCEED_USER_MAX_LENGTH", "CAMPAIGN_NOT_FOUND"],
                ),
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 255},
                        "description": "A repeated key returns the original response",
                    }
                ],
            }
        },
        "/v1/push-tokens": {
            "post": operation(
                "Register a device's push token (magpie extension)",
                body={
                    "type": "object",
                    "required": ["deviceId", "providerType", "token"],
                    "properties": {
                        "deviceId": {"type": "string"},
                        "userId": ID,
                        "providerType": {"enum": ["FCM", "APN"]},
                        "token": {"type": "string", "maxLength": 512},
                    },
                },
                tag="magpie extensions",
            )
        },
        "/v1/push-message/dispatches/{dispatchId}": {
            "get": operation(
                "Show a dispatch: status, counts by outcome and reason, per-recipient outcomes",
                ok=_DISPATCH,
                params=[{"name": "dispatchId", "in": "path", "required": True, "schema": {"type": "string"}}],
                tag="magpie extensions",
            )
        },
        "/v1/push-message/campaigns/{campaignKey}/stats": {
            "get": operation(
                "Campaign statistics over a time range (from/to: epoch ms or ISO-8601)",
                ok=_STATS,
                params=[
                    {"name": "campaignKey", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {"name": "from", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "to", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                tag="magpie extensions",
            )
        },
    }
