"""The OpenAPI 3.1 document and an interactive docs page served from the package (no CDN)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from magpie.api.openapi.messages import message_paths
from magpie.api.openapi.push import push_paths
from magpie.api.openapi.schema import ID, operation
from magpie.domain import consent
from magpie.domain.operations import OPERATION_ORDER

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_STATUS = {"type": ["string", "null"], "enum": ["SUBSCRIBED", "UNSUBSCRIBED", None]}


_NIGHT = "magpie extension: consent to marketing messages between 21:00 and 08:00"


def _subscription(channel: str) -> dict[str, Any]:
    """The body of a channel's subscription endpoint: its status fields (``consent.status_fields``)."""
    user_required = channel != "push"
    props: dict[str, Any] = {"userId": ID}
    for field, purpose in consent.status_fields(channel):
        props[field] = {**_STATUS, "description": _NIGHT} if purpose == "night" else _STATUS
    if not user_required:
        props["deviceId"] = ID
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
PUSH_CLICK_PROPERTIES = (
    "For `$push_click` (sent by Hackle's SDKs when a push is opened), the properties name the push: "
    "`push_message_delivery_id` (the delivery, as carried in the push's `hackle` payload as "
    "`pushMessageDeliveryId`), `push_message_key` (the campaign key, `pushMessageKey`; `push_message_id` is "
    "read when it is absent), `push_message_execution_id` (the dispatch, `pushMessageExecutionId`), "
    "`campaign_type` and `debug` (`true`: a test send, not counted). A click counts in the campaign's "
    "statistics only when `push_message_delivery_id` names a delivery of that campaign that was sent to the "
    "clicking user's device; other clicks are stored as unattributed events and count nowhere."
)
IDENTIFIERS = {
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
        "userId": ID,
        "identifiers": IDENTIFIERS,
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
                "properties": {"type": "object", "description": PUSH_CLICK_PROPERTIES},
            },
        },
    ]
}
_WORKSPACE_OP = operation(
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
        "post": operation(
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
        "post": operation(
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
                            "id": ID,
                            "userId": ID,
                            "deviceId": ID,
                            "identifiers": IDENTIFIERS,
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
        "post": operation(
            "Update a user's properties",
            body={
                "type": "object",
                "required": ["operations"],
                "properties": {"userId": ID, "deviceId": ID, "operations": _OPERATIONS},
            },
        )
    },
    "/v1/properties/phone-numbers": {
        "post": operation(
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
        "delete": operation(
            "Delete a user's phone number",
            params=[{"name": "userId", "in": "query", "required": True, "schema": {"type": "string"}}],
        ),
    },
    "/v1/push-subscriptions": {"post": operation("Record push consent", body=_subscription("push"))},
    "/v1/kakao-subscriptions": {"post": operation("Record KakaoTalk consent", body=_subscription("kakao"))},
    "/v1/sms-subscriptions": {"post": operation("Record text-message consent", body=_subscription("sms"))},
    **_SDK_PATHS,
}


def document() -> dict[str, Any]:
    paths = {**PATHS, **push_paths(), **message_paths()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "magpie",
            "version": version("magpie"),
            "description": "Self-hosted, Hackle-compatible user properties, consent, events and push campaigns. "
            "The admin API (bearer admin token) is described in its own document, /admin/openapi.json.",
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
    # Where the precise description exists (request and response schemas, every status), it wins.
    from magpie.api.openapi.admin import PATHS as DESCRIBED

    for path, operations in DESCRIBED.items():
        for method, described in operations.items():
            if method in paths.get(path, {}):
                paths[path][method] = described
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "magpie admin API",
            "version": version("magpie"),
            "description": "Environments, keys, users, campaigns, cohorts and statistics. "
            "Authenticate with `Authorization: Bearer <admin token>`.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"AdminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR_SCHEMA},
        },
    }


def docs_routes(*, admin_api: list[BaseRoute]) -> list[BaseRoute]:
    async def openapi(request: Request) -> Response:
        return Response(msgspec.json.encode(document()), media_type="application/json")

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
