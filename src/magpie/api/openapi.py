"""The OpenAPI 3.1 document and an interactive docs page served from the package (no CDN)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

import magpie
from magpie.domain.operations import OPERATION_ORDER

if TYPE_CHECKING:
    from magpie.app import MagpieApp

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_CONTENT = {"application/json": {"schema": _ERROR}}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}
_SUCCESS = {"$ref": "#/components/schemas/Success"}
_STATUS = {"type": ["string", "null"], "enum": ["SUBSCRIBED", "UNSUBSCRIBED", None]}
_ID = {"type": ["string", "null"], "maxLength": 256}

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


def _op(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    ok: dict[str, Any] | None = None,
    extra400: list[str] | None = None,
    params: list[dict[str, Any]] | None = None,
    tag: str = "Hackle API",
    security: str = "ApiKey",
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
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _subscription(user_required: bool, night: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {
        "userId": _ID,
        "marketingSubscriptionStatus": _STATUS,
        "informationSubscriptionStatus": _STATUS,
    }
    if not user_required:
        props["deviceId"] = _ID
    if night:
        props["nightSubscriptionStatus"] = {
            **_STATUS,
            "description": "magpie extension: night-time push consent",
        }
    return {"type": "object", "properties": props, "required": ["userId"] if user_required else []}


_PROPERTY_VALUE = {
    "oneOf": [
        {"type": "string", "maxLength": 1024},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "number"}]}},
    ]
}
_OPERATIONS = {
    "type": "object",
    "description": f"Applied in this order: {', '.join(OPERATION_ORDER)}. A key counts only in its first operation.",
    "properties": {op: {"type": "object", "additionalProperties": _PROPERTY_VALUE} for op in OPERATION_ORDER},
    "additionalProperties": False,
}

_SDK_TAG = "Hackle SDK"
_IDENTIFIERS = {
    "type": "object",
    "description": "$userId is the user, $deviceId the device; without either, $id (or userId) is the user",
    "additionalProperties": {"type": "string"},
}
_SDK_EVENT = {
    "type": "object",
    "required": ["insertId", "timestamp"],
    "properties": {
        "insertId": {"type": "string", "maxLength": 128, "description": "an event is stored once per insertId"},
        "timestamp": {"type": "integer", "description": "epoch milliseconds"},
        "userId": _ID,
        "identifiers": _IDENTIFIERS,
        "userProperties": {"type": "object"},
        "hackleProperties": {"type": "object"},
        "properties": {"type": "object"},
    },
}
_TRACK_EVENT = {
    "allOf": [
        _SDK_EVENT,
        {
            "type": "object",
            "required": ["eventTypeKey"],
            "properties": {
                "eventTypeId": {"type": "integer"},
                "eventTypeKey": {
                    "type": "string",
                    "maxLength": 256,
                    "description": "system events: $properties, $secured_properties, $push_subscriptions, "
                    "$sms_subscriptions, $kakao_subscriptions, $push_token, $push_click",
                },
                "value": {"type": ["number", "null"]},
            },
        },
    ]
}
_WORKSPACE_OP = _op(
    "Download the workspace document an SDK initialises from",
    ok={"type": "object", "description": "Hackle's workspace document: event types, no experiments"},
    tag=_SDK_TAG,
    security="SdkKey",
    params=[
        {"name": "sdkKey", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "If-Modified-Since", "in": "header", "required": False, "schema": {"type": "string"}},
    ],
)
_WORKSPACE_OP["responses"]["304"] = {"description": "Not modified since If-Modified-Since"}
_SDK_PATHS: dict[str, dict[str, Any]] = {
    "/api/v2/workspaces/{sdkKey}/config": {"get": _WORKSPACE_OP},
    "/api/v2/events": {
        "post": _op(
            "Accept a Hackle SDK event batch; each insertId is stored and applied once",
            body={
                "type": "object",
                "properties": {
                    "exposureEvents": {"type": "array", "items": _SDK_EVENT},
                    "trackEvents": {"type": "array", "items": _TRACK_EVENT},
                    "remoteConfigEvents": {"type": "array", "items": _SDK_EVENT},
                },
            },
            tag=_SDK_TAG,
            security="SdkKey",
        )
    },
    "/v1/track": {
        "post": _op(
            "Track one event for a user",
            body={
                "type": "object",
                "required": ["event", "user"],
                "properties": {
                    "event": {
                        "type": "object",
                        "required": ["key"],
                        "properties": {
                            "key": {"type": "string", "maxLength": 256},
                            "value": {"type": ["number", "null"]},
                            "properties": {"type": "object"},
                        },
                    },
                    "user": {
                        "type": "object",
                        "properties": {
                            "id": _ID,
                            "userId": _ID,
                            "deviceId": _ID,
                            "identifiers": _IDENTIFIERS,
                            "properties": {"type": "object"},
                        },
                    },
                    "insertId": {"type": "string", "maxLength": 128, "description": "magpie extension"},
                    "timestamp": {"type": "integer", "description": "magpie extension: epoch milliseconds"},
                },
            },
            tag=_SDK_TAG,
        )
    },
}
PATHS: dict[str, dict[str, Any]] = {
    "/v1/properties": {
        "post": _op(
            "Update a user's properties",
            body={
                "type": "object",
                "required": ["operations"],
                "properties": {"userId": _ID, "deviceId": _ID, "operations": _OPERATIONS},
            },
        )
    },
    "/v1/properties/phone-numbers": {
        "post": _op(
            "Set a user's phone number",
            body={
                "type": "object",
                "required": ["userId", "phoneNumber"],
                "properties": {
                    "userId": {"type": "string"},
                    "phoneNumber": {"type": "string", "example": "+821012345678"},
                },
            },
            extra400=["INVALID_PHONE_NUMBER"],
        ),
        "delete": _op(
            "Delete a user's phone number",
            params=[{"name": "userId", "in": "query", "required": True, "schema": {"type": "string"}}],
        ),
    },
    "/v1/push-subscriptions": {"post": _op("Record push consent", body=_subscription(False, night=True))},
    "/v1/kakao-subscriptions": {"post": _op("Record KakaoTalk consent", body=_subscription(True))},
    "/v1/sms-subscriptions": {"post": _op("Record text-message consent", body=_subscription(True))},
    **_SDK_PATHS,
}


def document(app: MagpieApp) -> dict[str, Any]:
    paths = dict(PATHS)
    for extra in app.openapi_extensions:
        paths.update(extra())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "magpie",
            "version": magpie.__version__,
            "description": "Self-hosted, Hackle-compatible user properties, consent, events and push campaigns.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-HACKLE-API-KEY"},
                "SdkKey": {"type": "apiKey", "in": "header", "name": "X-HACKLE-SDK-KEY"},
                "AdminToken": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": _ERROR_SCHEMA,
                "Success": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {"message": {"type": "string", "const": "success"}},
                },
            },
        },
    }


STATIC = Path(__file__).parent / "static" / "swagger-ui"

# The documents the reference page shows: (slug, title, URL of the OpenAPI document).
DOCUMENTS: tuple[tuple[str, str, str], ...] = (
    ("public", "Public API", "/openapi.json"),
    ("admin", "Admin API", "/admin/openapi.json"),
)

_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>magpie · {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
<style>body{{margin:0}} nav{{font:14px sans-serif;padding:10px 20px;background:#1b1b1b}}
nav a{{color:#ddd;margin-right:18px;text-decoration:none}} nav a[aria-current]{{color:#fff;font-weight:bold}}</style>
</head><body>
<nav>{links}</nav>
<div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({{url: "{url}", dom_id: "#ui", deepLinking: true, validatorUrl: null}});</script>
</body></html>"""


def docs_page(slug: str) -> str:
    title, url = next((t, u) for s, t, u in DOCUMENTS if s == slug)
    links = " ".join(
        f'<a href="/docs{"" if s == "public" else "/" + s}"{" aria-current=page" if s == slug else ""}>{t}</a>'
        for s, t, _ in DOCUMENTS
    )
    return _DOCS_PAGE.format(title=title, links=links, url=url)


def admin_document(admin_api: list[BaseRoute]) -> dict[str, Any]:
    """An OpenAPI 3.1 document of the admin API, read from its routes (summary: the handler's docstring)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in admin_api:
        if not isinstance(route, Route) or not route.path.startswith("/admin/"):
            continue
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        for method in sorted((route.methods or set()) - {"HEAD"}):
            summary = (route.endpoint.__doc__ or route.name or "").strip().splitlines()[0].replace("``", "`")
            parts = route.path.split("/")[3:]
            op: dict[str, Any] = {
                "summary": summary,
                "tags": [parts[2] if len(parts) > 2 and parts[1] == "{env}" else parts[0]],
                "security": [{"AdminToken": []}],
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "400": {"description": "Invalid request", "content": _ERROR_CONTENT},
                    "401": {"description": "Missing or invalid admin token", "content": _ERROR_CONTENT},
                    "404": {"description": "No such environment or object", "content": _ERROR_CONTENT},
                },
            }
            if params:
                op["parameters"] = params
            paths.setdefault(route.path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "magpie admin API",
            "version": magpie.__version__,
            "description": "Environments, keys, users, campaigns, cohorts and statistics. "
            "Authenticate with `Authorization: Bearer <admin token>`.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"AdminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR_SCHEMA},
        },
    }


def docs_routes(app: MagpieApp, *, admin_api: list[BaseRoute]) -> list[BaseRoute]:
    async def openapi(request: Request) -> Response:
        return Response(msgspec.json.encode(document(app)), media_type="application/json")

    async def openapi_admin(request: Request) -> Response:
        return Response(msgspec.json.encode(admin_document(admin_api)), media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_page("public"))

    async def docs_admin(request: Request) -> Response:
        return HTMLResponse(docs_page("admin"))

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/admin/openapi.json", openapi_admin, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/admin", docs_admin, methods=["GET"]),
        Mount("/docs/static", app=StaticFiles(directory=str(STATIC)), name="docs-static"),
    ]
