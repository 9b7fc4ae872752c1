"""The admin API's OpenAPI 3.1 document, served at ``/admin/openapi.json`` (bearer admin token).

It describes every ``/admin/v1`` route with its documented answers, so that the admin API can
be fuzzed like the public one (schemathesis in the test suite).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from magpie.api.openapi.push import DISPATCH, STATS
from magpie.api.openapi.reports import REPORT_PATHS
from magpie.api.openapi.schema import ERROR_SCHEMA

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    "400": "Invalid request (INVALID_REQUEST, INVALID_CAMPAIGN)",
    "401": "Missing or invalid admin token (UNAUTHORIZED)",
    "404": "No such environment, key, user, device, campaign, cohort or dispatch (NOT_FOUND)",
    "409": "Conflict with what exists (CONFLICT)",
    "429": "Too many failed authentications from this address; see Retry-After (RATE_LIMITED)",
    "503": "Storage unavailable; retry (SERVICE_UNAVAILABLE)",
}
_TIME = {"type": "integer", "description": "epoch milliseconds"}
_OBJECT: dict[str, Any] = {"type": "object"}
_ENV_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"}
_ENVIRONMENT = {
    "type": "object",
    "required": ["id", "name", "timezone", "settings", "created_at"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "timezone": {"type": "string"},
        "settings": _OBJECT,
        "created_at": _TIME,
    },
}
_KEY = {
    "type": "object",
    "required": ["prefix", "environment", "name", "created_at", "revoked_at"],
    "properties": {
        "prefix": {"type": "string"},
        "environment": {"type": "string"},
        "name": {"type": "string"},
        "created_at": _TIME,
        "revoked_at": {"type": ["integer", "null"]},
    },
}
_TOKEN = {
    "type": "object",
    "required": ["token", "providerType", "status"],
    "properties": {
        "token": {"type": "string"},
        "providerType": {"enum": ["FCM", "APN"]},
        "status": {"type": "string"},
        "retiredReason": {"type": ["string", "null"]},
        "createdAt": _TIME,
        "updatedAt": _TIME,
    },
}
_USER = {
    "type": "object",
    "required": ["userId", "properties", "consents", "devices"],
    "properties": {
        "userId": {"type": "string"},
        "properties": _OBJECT,
        "consents": _OBJECT,
        "phoneNumber": {"type": ["string", "null"], "description": "masked"},
        "devices": {"type": "array", "items": _OBJECT},
        "createdAt": _TIME,
        "updatedAt": _TIME,
    },
}
_DEVICE = {
    "type": "object",
    "required": ["deviceId", "properties", "consents", "pushTokens"],
    "properties": {
        "deviceId": {"type": "string"},
        "linkedUserId": {"type": ["string", "null"]},
        "properties": _OBJECT,
        "consents": _OBJECT,
        "pushTokens": {"type": "array", "items": _TOKEN},
        "user": {"oneOf": [_USER, {"type": "null"}]},
    },
}
_CAMPAIGN_IN = {
    "type": "object",
    "required": ["key", "name", "message"],
    "description": "A campaign definition (the same document `magpie campaign apply -f` reads)",
    "properties": {
        "key": {"type": "integer", "minimum": 0},
        "name": {"type": "string", "maxLength": 200},
        "status": {"enum": ["DRAFT", "ACTIVE", "PAUSED"]},
        "purpose": {"enum": ["MARKETING", "INFORMATION"]},
        "provider": {"type": "string"},
        "consentRule": {"enum": ["SUBSCRIBED_ONLY", "SUBSCRIBED_OR_UNKNOWN"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "message": {
            "type": "object",
            "required": ["title", "body"],
            "properties": {
                "title": {"type": "string"},
                "body": {"type": "string"},
                "imageUrl": {"type": ["string", "null"]},
                "clickAction": {"enum": ["APP_OPEN", "DEEP_LINK"]},
                "link": {"type": ["string", "null"]},
            },
        },
        "audience": _OBJECT,
    },
}
_CAMPAIGN = {
    "type": "object",
    "required": ["key", "name", "status", "purpose", "message"],
    "properties": {"key": {"type": "integer"}, "name": {"type": "string"}, "status": {"type": "string"}},
}


def _list(name: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [name], "properties": {name: {"type": "array", "items": item}}}


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    status: str = "200",
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    errors: tuple[str, ...] = ("400", "401", "404", "429", "503"),
    csv: bool = False,
) -> dict[str, Any]:
    """An admin operation; ``csv``: its success answer is CSV too (``format=csv``)."""
    content: dict[str, Any] = {"application/json": {"schema": ok}}
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    op: dict[str, Any] = {
        "summary": summary,
        "tags": ["Admin API"],
        "security": [{"AdminToken": []}],
        "responses": {
            status: {"description": "Success", "content": content},
            **{
                code: {"description": _ERRORS[code], "content": {"application/json": {"schema": _ERROR}}}
                for code in errors
            },
        },
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


_ENV = _path("env", _ENV_NAME)
_CAMPAIGN_KEY = _path("key", {"type": "integer", "minimum": 0})
_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "at most this many (default 50)")
_FROM_TO = [
    _query("from", {"type": "string"}, "epoch ms or ISO-8601; default 7 days ago"),
    _query("to", {"type": "string"}, "epoch ms or ISO-8601; default now"),
]
_E = "/admin/v1/environments/{env}"
_OCCURRENCE = _path("occurrence_id", {"type": "integer", "minimum": 1})
_PROGRESS = {
    "type": "object",
    "required": ["occurrence", "progress"],
    "properties": {"occurrence": _OBJECT, "progress": _OBJECT},
}
BROADCAST_PATHS: dict[str, dict[str, Any]] = {
    _E + "/campaigns/{key}/reach": {
        "get": _op(
            "Count who a campaign would reach now on its channel, and why the rest of its audience would not be",
            _OBJECT,
            params=[_ENV, _CAMPAIGN_KEY],
        )
    },
    _E + "/campaigns/{key}/test-send": {
        "post": _op(
            "Send a campaign now to 1 to 5 named users, as a test occurrence",
            _PROGRESS,
            params=[_ENV, _CAMPAIGN_KEY],
            body={
                "type": "object",
                "required": ["userIds"],
                "properties": {"userIds": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 5}},
            },
        )
    },
    _E + "/campaigns/{key}/send-now": {
        "post": _op(
            "Start an occurrence of a campaign now, to its whole audience", _PROGRESS, params=[_ENV, _CAMPAIGN_KEY]
        )
    },
    _E + "/campaigns/{key}/occurrences": {
        "get": _op(
            "List a campaign's broadcast occurrences, newest first",
            _list("occurrences", _OBJECT),
            params=[_ENV, _CAMPAIGN_KEY, _LIMIT],
        )
    },
    _E + "/campaigns/{key}/occurrence-statistics": {
        "get": _op(
            "Statistics of a campaign's broadcast occurrences, newest first (format=csv for CSV)",
            _list("occurrences", _PROGRESS),
            params=[
                _ENV,
                _CAMPAIGN_KEY,
                _LIMIT,
                _query("format", {"type": "string", "enum": ["json", "csv"]}, "json or csv"),
            ],
            csv=True,
        )
    },
    _E + "/occurrences/{occurrence_id}": {
        "get": _op("Show an occurrence's state and progress", _PROGRESS, params=[_ENV, _OCCURRENCE])
    },
    **{
        _E + f"/occurrences/{{occurrence_id}}/{action}": {
            "post": _op(
                summary, _PROGRESS, params=[_ENV, _OCCURRENCE], errors=("400", "401", "404", "409", "429", "503")
            )
        }
        for action, summary in (
            ("pause", "Pause an occurrence"),
            ("resume", "Resume a paused occurrence"),
            ("cancel", "Cancel an occurrence: nothing more is sent"),
        )
    },
}
# docs/experiments.md#where-it-shows
EXPERIMENT: dict[str, Any] = {
    "type": "object",
    "required": ["campaignKey", "level", "version", "goal", "controlGroup", "versions"],
    "properties": {
        "versions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["version", "current", "arms"],
                "properties": {"arms": {"type": "array", "items": {"type": "object", "required": ["arm", "name"]}}},
            },
        }
    },
}

PATHS: dict[str, dict[str, Any]] = {
    "/admin/v1/environments": {
        "get": _op("List environments", _list("environments", _ENVIRONMENT), errors=("401", "429", "503")),
        "post": _op(
            "Create an environment and its first API key",
            {
                "type": "object",
                "required": ["environment", "apiKey", "key"],
                "properties": {"environment": _ENVIRONMENT, "apiKey": {"type": "string"}, "key": _KEY},
            },
            status="201",
            body={
                "type": "object",
                "required": ["name"],
                "properties": {"name": _ENV_NAME, "timezone": {"type": "string", "example": "Asia/Seoul"}},
            },
            errors=("400", "401", "409", "429", "503"),
        ),
    },
    _E: {
        "get": _op("Show one environment with its settings", _ENVIRONMENT, params=[_ENV]),
        "put": _op(
            "Replace an environment's settings (compliance, providers) and optionally its time zone",
            _ENVIRONMENT,
            params=[_ENV],
            body={"type": "object", "properties": {"settings": _OBJECT, "timezone": {"type": "string"}}},
        ),
    },
    _E + "/keys": {
        "get": _op("List an environment's API keys (prefixes only)", _list("keys", _KEY), params=[_ENV]),
        "post": _op(
            "Create an API key; the key is shown in this response only",
            {
                "type": "object",
                "required": ["apiKey", "key"],
                "properties": {"apiKey": {"type": "string"}, "key": _KEY},
            },
            status="201",
            params=[_ENV],
            body={"type": "object", "properties": {"name": {"type": "string", "maxLength": 200}}},
        ),
    },
    "/admin/v1/keys/{prefix}": {
        "delete": _op(
            "Revoke an API key by its prefix; every server refuses it within 5 seconds",
            _KEY,
            params=[_path("prefix")],
            errors=("400", "401", "404", "409", "429", "503"),
        )
    },
    _E + "/users/{user_id}": {
        "get": _op(
            "Look up a user: properties, consents, masked phone number, devices and tokens",
            _USER,
            params=[_ENV, _path("user_id")],
        )
    },
    _E + "/users/{user_id}/events": {
        "get": _op(
            "List a user's stored events, newest first",
            {
                "type": "object",
                "required": ["events", "nextCursor"],
                "properties": {
                    "events": {"type": "array", "items": _OBJECT},
                    "nextCursor": {"type": ["string", "null"]},
                },
            },
            params=[
                _ENV,
                _path("user_id"),
                _LIMIT,
                _query("cursor", {"type": "string"}, "nextCursor of a previous page"),
            ],
        )
    },
    _E + "/devices/{device_id}": {
        "get": _op("Look up a device, and the user it is linked to", _DEVICE, params=[_ENV, _path("device_id")])
    },
    _E + "/campaigns": {
        "get": _op("List an environment's campaigns", _list("campaigns", _CAMPAIGN), params=[_ENV]),
        "post": _op(
            "Create or update a campaign by its key (declarative apply)",
            {
                "type": "object",
                "required": ["campaign", "created"],
                "properties": {"campaign": _CAMPAIGN, "created": {"type": "boolean"}},
            },
            params=[_ENV],
            body=_CAMPAIGN_IN,
        ),
    },
    _E + "/campaigns/{key}": {
        "get": _op("Show one campaign", _CAMPAIGN, params=[_ENV, _CAMPAIGN_KEY]),
        "put": _op(
            "Create or update the campaign with this key",
            {
                "type": "object",
                "required": ["campaign", "created"],
                "properties": {"campaign": _CAMPAIGN, "created": {"type": "boolean"}},
            },
            params=[_ENV, _CAMPAIGN_KEY],
            body=_CAMPAIGN_IN,
        ),
    },
    _E + "/campaigns/{key}/stats": {
        "get": _op("Campaign statistics over a time range", STATS, params=[_ENV, _CAMPAIGN_KEY, *_FROM_TO])
    },
    _E + "/campaigns/{key}/experiment": {
        "get": _op(
            "Experiment statistics of a campaign per version, variant and control (format=csv for CSV)",
            EXPERIMENT,
            params=[_ENV, _CAMPAIGN_KEY, _query("format", {"type": "string", "enum": ["json", "csv"]}, "json or csv")],
            csv=True,
        )
    },
    _E + "/cohorts": {
        "get": _op(
            "List static cohorts with their sizes",
            _list("cohorts", {"type": "object", "required": ["name", "size"]}),
            params=[_ENV],
        )
    },
    _E + "/cohorts/{name}": {
        "get": _op(
            "Show a static cohort (the first 1,000 members)",
            {"type": "object", "required": ["name", "size", "members"]},
            params=[_ENV, _path("name")],
        ),
        "put": _op(
            "Replace a static cohort's members",
            {"type": "object", "required": ["name", "size"]},
            params=[_ENV, _path("name")],
            body={
                "type": "object",
                "required": ["members"],
                "properties": {"members": {"type": "array", "items": {"type": "string"}}},
            },
        ),
    },
    _E + "/dispatches/{dispatch_id}": {
        "get": _op(
            "Show a dispatch with per-recipient outcomes and deliveries",
            DISPATCH,
            params=[_ENV, _path("dispatch_id")],
        )
    },
    _E + "/inbox": {
        "get": _op(
            "The sandbox inbox, newest first",
            _list("messages", _OBJECT),
            params=[_ENV, _LIMIT, _query("before", {"type": "integer", "minimum": 0}, "messages before this id")],
        )
    },
    **BROADCAST_PATHS,
    **REPORT_PATHS,
}


def admin_document() -> dict[str, Any]:
    """The admin API's OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "magpie admin API",
            "version": version("magpie"),
            "description": "Environments, API keys, campaigns, cohorts, users, dispatches and the sandbox inbox. "
            "Every error answers {code, message}.",
        },
        "paths": PATHS,
        "components": {
            "securitySchemes": {"AdminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR_SCHEMA},
        },
    }
