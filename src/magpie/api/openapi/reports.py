"""The admin API's description of gateway health and the CSV exports (``magpie.api.admin.admin_reports``)."""

from __future__ import annotations

from typing import Any

_E = "/admin/v1/environments/{env}"
_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    "400": "Invalid request: a date that is not one, from without to, a range over 366 days (INVALID_REQUEST)",
    "401": "Missing or invalid admin token (UNAUTHORIZED)",
    "404": "No such environment, campaign or dispatch (NOT_FOUND)",
    "429": "Too many failed authentications from this address; see Retry-After (RATE_LIMITED)",
    "503": "Storage unavailable; retry (SERVICE_UNAVAILABLE)",
}
_DAY = {"type": "string", "format": "date"}
_PARAMS = {
    "env": {
        "name": "env",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
    },
    "from": {"name": "from", "in": "query", "required": False, "schema": _DAY, "description": "first local day"},
    "to": {"name": "to", "in": "query", "required": False, "schema": _DAY, "description": "last local day, included"},
}
_ANSWER = {
    "type": ["object", "null"],
    "required": ["provider", "at", "code", "exact"],
    "properties": {
        "provider": {"type": ["string", "null"]},
        "at": {"type": "integer", "description": "epoch milliseconds"},
        "code": {"type": ["string", "null"]},
        "exact": {"type": "boolean", "description": "false: known to the hour only"},
    },
}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
GATEWAYS = {
    "type": "object",
    "required": ["from", "to", "timezone", "channels", "paidMessages", "sentByType", "sentByTypePerDay"],
    "properties": {
        "from": {"type": "integer"},
        "to": {"type": "integer"},
        "timezone": {"type": "string"},
        "channels": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["channel", "configured", "lastSuccess", "lastError", "sent", "failed", "unknown"],
                "properties": {
                    "channel": {"enum": ["push", "kakao", "sms"]},
                    "configured": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                    "lastSuccess": _ANSWER,
                    "lastError": _ANSWER,
                    "sent": {"type": "integer"},
                    "failed": _COUNTS,
                    "unknown": {"type": "integer"},
                    "unknownByReason": _COUNTS,
                    "delivered": {"type": "integer"},
                    "undelivered": {"type": "integer"},
                    "undeliveredByCode": _COUNTS,
                    "awaitingReport": {"type": "integer"},
                    "inFlight": {"type": "integer"},
                },
            },
        },
        "paidMessages": {
            "type": "object",
            "required": ["dailyLimit", "today", "usedToday", "countedFrom", "byDay"],
            "properties": {
                "dailyLimit": {"type": "integer", "description": "0: no limit"},
                "today": {"type": "string"},
                "usedToday": {"type": "integer"},
                "countedFrom": {"enum": ["limit counter", "deliveries"]},
                "byDay": _COUNTS,
            },
        },
        "sentByType": _COUNTS,
        "sentByTypePerDay": {"type": "object", "additionalProperties": _COUNTS},
    },
}


def _op(summary: str, content: dict[str, Any], params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "summary": summary,
        "tags": ["Admin API"],
        "security": [{"AdminToken": []}],
        "parameters": params,
        "responses": {
            "200": {"description": "Success", "content": content},
            **{
                code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
                for code, text in _ERRORS.items()
            },
        },
    }


_CSV = {"text/csv": {"schema": {"type": "string"}}}

REPORT_PATHS: dict[str, dict[str, Any]] = {
    _E + "/gateways": {
        "get": _op(
            "Gateway health per channel, paid-message use against the daily limit and sends by type",
            {"application/json": {"schema": GATEWAYS}},
            [_PARAMS["env"], _PARAMS["from"], _PARAMS["to"]],
        )
    },
    _E + "/dispatches/{dispatch_id}/recipients.csv": {
        "get": _op(
            "A dispatch's recipients as CSV (streamed), phone numbers masked",
            _CSV,
            [
                _PARAMS["env"],
                {"name": "dispatch_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "outcome",
                    "in": "query",
                    "required": False,
                    "schema": {"enum": ["SENT", "FAILED", "UNKNOWN", "EXCLUDED", "PENDING"]},
                },
            ],
        )
    },
    _E + "/campaigns/{key}/figures.csv": {
        "get": _op(
            "A campaign's figures per hour or day as CSV",
            _CSV,
            [
                _PARAMS["env"],
                {"name": "key", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                _PARAMS["from"],
                _PARAMS["to"],
                {"name": "grain", "in": "query", "required": False, "schema": {"enum": ["hour", "day"]}},
            ],
        )
    },
}
