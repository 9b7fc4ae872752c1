"""OpenAPI paths for Kakao and SMS: trigger sends, dispatch views, statistics and gateway callbacks."""

from __future__ import annotations

from typing import Any

from magpie.api.openapi.push import _DISPATCHID, DISPATCH, STATS
from magpie.api.openapi.schema import ID, operation, trigger_body

_TRIGGER = trigger_body(
    {
        "type": "object",
        "required": ["userId"],
        "properties": {"userId": {**ID, "description": "The message goes to the phone number collected for this user"}},
    }
)
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "A repeated key returns the original response",
}
_CHANNEL_STATS = {
    **STATS,
    "properties": {
        **STATS["properties"],
        "delivered": {"type": "integer", "description": "Confirmed on the phone by the gateway"},
        "undelivered": {"type": "integer", "description": "Accepted, then reported failed by the gateway"},
        "unknown": {"type": "integer", "description": "Possibly taken by a gateway that would not confirm it"},
        "sentByType": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}
_WEBHOOK_PARAMS = [
    {"name": "environment", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "secret", "in": "query", "required": True, "schema": {"type": "string"}},
]
_NHN_WEBHOOK_PARAMS = [
    _WEBHOOK_PARAMS[0],
    {**_WEBHOOK_PARAMS[1], "required": False, "description": "or the X-Toast-Webhook-Signature header"},
    {
        "name": "X-Toast-Webhook-Signature",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The signature entered in NHN's webhook settings: the environment's webhookSecret",
    },
]


def _channel(channel: str, summary: str, tag: str) -> dict[str, dict[str, Any]]:
    return {
        f"/v1/{channel}-message/trigger/send": {
            "post": {
                **operation(
                    summary,
                    body=_TRIGGER,
                    ok=_DISPATCHID,
                    extra400=["EXCEED_USER_MAX_LENGTH", "CAMPAIGN_NOT_FOUND", "EMPTY_IDENTIFIER"],
                    tag=tag,
                ),
                "parameters": [_IDEMPOTENCY],
            }
        },
        f"/v1/{channel}-message/dispatches/{{dispatchId}}": {
            "get": operation(
                f"Show a {channel} dispatch: outcomes, reasons, and each delivery's type, bytes and report",
                ok=DISPATCH,
                params=[{"name": "dispatchId", "in": "path", "required": True, "schema": {"type": "string"}}],
                tag="magpie extensions",
                not_found=f"No {channel} dispatch with that id in this environment",
            )
        },
        f"/v1/{channel}-message/campaigns/{{campaignKey}}/stats": {
            "get": operation(
                f"{channel.capitalize()} campaign statistics: sent, delivered, failed, excluded by reason, by type",
                ok=_CHANNEL_STATS,
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


def message_paths() -> dict[str, dict[str, Any]]:
    webhook: dict[str, Any] = {"type": ["object", "array"]}
    return {
        **_channel("kakao", "Send an API-triggered Kakao message campaign to up to 50 users", "Hackle API"),
        **_channel(
            "sms", "Send an API-triggered SMS campaign to up to 50 users (magpie extension)", "magpie extensions"
        ),
        "/v1/gateways/solapi/reports/{environment}": {
            "post": operation(
                "Receive Solapi's delivery report webhook (authenticated by the environment's webhookSecret)",
                body=webhook,
                params=_WEBHOOK_PARAMS,
                tag="gateway callbacks",
            )
        },
        "/v1/gateways/nhn/reports/{environment}": {
            "post": operation(
                "Receive NHN Cloud's SMS webhook: MESSAGE_RESULT_UPDATE results and UNSUBSCRIBE opt-outs",
                body=webhook,
                params=_NHN_WEBHOOK_PARAMS,
                tag="gateway callbacks",
            )
        },
        **{
            f"/v1/gateways/{gateway}/opt-outs/{{environment}}": {
                "post": operation(
                    f"Receive {name}'s 080 opt-out webhook: the caller's SMS marketing consent becomes UNSUBSCRIBED",
                    body=webhook,
                    params=_NHN_WEBHOOK_PARAMS if gateway == "nhn" else _WEBHOOK_PARAMS,
                    tag="gateway callbacks",
                )
            }
            for gateway, name in (("nhn", "NHN Cloud"), ("solapi", "Solapi"))
        },
    }
