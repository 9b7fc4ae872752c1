"""The OpenAPI 3.1 document and an interactive docs page served from the package (no CDN)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from magpie.api.openapi_messages import message_paths
from magpie.api.openapi_push import push_paths
from magpie.api.schema import ID, operation
from magpie.domain.operations import OPERATION_ORDER

_STATUS = {"type": ["string", "null"], "enum": ["SUBSCRIBED", "UNSUBSCRIBED", None]}


def _subscription(user_required: bool, night: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {
        "userId": ID,
        "marketingSubscriptionStatus": _STATUS,
        "informationSubscriptionStatus": _STATUS,
    }
    if not user_required:
        props["deviceId"] = ID
    if night:
        props["nightSubscriptionStatus"] = {
            **_STATUS,
            "description": "magpie extension: consent to marketing messages between 21:00 and 08:00",
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
    "/v1/push-subscriptions": {"post": operation("Record push consent", body=_subscription(False, night=True))},
    "/v1/kakao-subscriptions": {"post": operation("Record KakaoTalk consent", body=_subscription(True))},
    "/v1/sms-subscriptions": {"post": operation("Record text-message consent", body=_subscription(True, night=True))},
    **_SDK_PATHS,
}


def document() -> dict[str, Any]:
    paths = {**PATHS, **push_paths(), **message_paths()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "magpie",
            "version": version("magpie"),
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
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                },
                "Success": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {"message": {"type": "string", "const": "success"}},
                },
            },
        },
    }


_DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>magpie API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>"""


def docs_routes() -> list[BaseRoute]:
    from swagger_ui_bundle import swagger_ui_path

    async def openapi(request: Request) -> Response:
        return Response(msgspec.json.encode(document()), media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(_DOCS_PAGE)

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/static", app=StaticFiles(directory=str(swagger_ui_path)), name="docs-static"),
    ]
