"""OpenAPI paths for push: trigger send, push tokens and statistics."""

from __future__ import annotations

from typing import Any

from magpie.api.openapi.schema import ID, operation, trigger_body

_TRIGGER = trigger_body(
    {"type": "object", "properties": {"userId": ID, "deviceId": ID}},
    campaign_key="The key of an ACTIVE API-triggered campaign",
)
_DISPATCHID = {
    "type": "object",
    "required": ["dispatchId", "message"],
    "properties": {"dispatchId": {"type": "string", "format": "uuid"}, "message": {"const": "success"}},
}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
_TIME = {"type": "integer", "description": "epoch milliseconds"}
# The dispatch view and campaign statistics, the same on the public and the admin API.
DISPATCH: dict[str, Any] = {
    "type": "object",
    "required": ["dispatchId", "campaignKey", "status", "requested", "counts", "recipients"],
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
STATS: dict[str, Any] = {
    "type": "object",
    "description": "Counts over the hours that start in [from, to) (from is rounded down to its hour)",
    "required": ["campaignKey", "requested", "sent", "failed", "excluded", "pending", "clicks", "ctr"],
    "properties": {
        "campaignKey": {"type": "integer"},
        "channel": {"enum": ["push", "kakao", "sms"]},
        "from": _TIME,
        "to": _TIME,
        "dispatches": {"type": "integer", "description": "dispatches accepted in the range"},
        "requested": {"type": "integer", "description": "recipients named in triggers accepted in the range"},
        "sent": {"type": "integer", "description": "recipients whose message a provider accepted"},
        "failed": {"type": "integer"},
        "unknown": {
            "type": "integer",
            "description": "recipients a gateway may have taken but would not confirm (Kakao and SMS; 0 for push)",
        },
        "failures": {**_COUNTS, "description": "FAILED recipients by reason"},
        "excluded": {**_COUNTS, "description": "excluded recipients by magpie's reason"},
        "excludedTotal": {"type": "integer"},
        "pending": {
            "type": "integer",
            "description": "requested minus sent, failed, unknown and excluded (at least 0)",
        },
        "sentRate": {
            "type": ["number", "null"],
            "description": "sent / (sent + failed + unknown); null before any recipient was tried",
        },
        "uniqueClicks": {"type": "integer", "description": "deliveries with at least one attributed click"},
        "totalClicks": {"type": "integer", "description": "every attributed click, repeated clicks included"},
        "clicks": {"type": "integer", "description": "the same as uniqueClicks"},
        "ctr": {
            "type": ["number", "null"],
            "description": "uniqueClicks / sent, never above 1; null for Kakao and SMS (no clicks) and before any send",
        },
    },
}


def push_paths() -> dict[str, dict[str, Any]]:
    trigger = operation(
        "Send an API-triggered push campaign to up to 50 users",
        body=_TRIGGER,
        ok=_DISPATCHID,
        extra400=["EXCEED_USER_MAX_LENGTH", "CAMPAIGN_NOT_FOUND"],
    )
    trigger["responses"]["422"] = {
        "description": "The Idempotency-Key was used before with a different body. Code: IDEMPOTENCY_KEY_REUSED",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    return {
        "/v1/push-message/trigger/send": {
            "post": {
                **trigger,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 255},
                        "description": "A repeated key with the same body returns the original response; "
                        "with a different body it is refused (422 IDEMPOTENCY_KEY_REUSED). Keys are kept as long "
                        "as their dispatch (magpie does not delete dispatches).",
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
                ok=DISPATCH,
                params=[{"name": "dispatchId", "in": "path", "required": True, "schema": {"type": "string"}}],
                tag="magpie extensions",
                not_found="No dispatch with that id in this environment",
            )
        },
        "/v1/push-message/campaigns/{campaignKey}/stats": {
            "get": operation(
                "Campaign statistics over a time range (from/to: epoch ms or ISO-8601)",
                ok=STATS,
                extra400=["CAMPAIGN_NOT_FOUND"],
                params=[
                    {"name": "campaignKey", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {"name": "from", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "to", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                tag="magpie extensions",
            )
        },
    }
