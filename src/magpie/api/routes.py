"""The route table of the lean router: every Hackle-compatible and magpie data endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from magpie.api import messages, profiles, push, sdk

if TYPE_CHECKING:
    from magpie.app import MagpieApp

Matcher = Callable[[str], dict[str, str] | None]


def install(app: MagpieApp) -> None:
    app.add_route("POST", "/v1/properties", profiles.update_properties)
    app.add_route("POST", "/v1/properties/phone-numbers", profiles.set_phone_number)
    app.add_route("DELETE", "/v1/properties/phone-numbers", profiles.delete_phone_number)
    app.add_route("POST", "/v1/push-subscriptions", profiles.push_subscriptions)
    app.add_route("POST", "/v1/kakao-subscriptions", profiles.kakao_subscriptions)
    app.add_route("POST", "/v1/sms-subscriptions", profiles.sms_subscriptions)
    app.add_route("POST", "/v1/push-message/trigger/send", push.trigger_send)
    app.add_route("POST", "/v1/push-tokens", push.register_push_token)
    app.add_param_route("GET", prefix_param("/v1/push-message/dispatches/", "", "dispatch_id"), push.get_dispatch)
    app.add_param_route(
        "GET", prefix_param("/v1/push-message/campaigns/", "/stats", "campaign_key"), push.get_campaign_stats
    )
    # Kakao (Hackle's trigger) and SMS (magpie's sibling of it), and the gateways' callbacks.
    app.add_route("POST", "/v1/kakao-message/trigger/send", messages.kakao_trigger_send)
    app.add_route("POST", "/v1/sms-message/trigger/send", messages.sms_trigger_send)
    for channel, view in (("kakao", messages.get_kakao_dispatch), ("sms", messages.get_sms_dispatch)):
        app.add_param_route("GET", prefix_param(f"/v1/{channel}-message/dispatches/", "", "dispatch_id"), view)
        app.add_param_route(
            "GET", prefix_param(f"/v1/{channel}-message/campaigns/", "/stats", "campaign_key"), push.get_campaign_stats
        )
    app.add_param_route("POST", prefix_param("/v1/gateways/solapi/reports/", "", "environment"), messages.solapi_report)
    app.add_param_route("POST", prefix_param("/v1/gateways/nhn/opt-outs/", "", "environment"), messages.nhn_opt_out)
    app.add_param_route(
        "POST", prefix_param("/v1/gateways/solapi/opt-outs/", "", "environment"), messages.solapi_opt_out
    )
    # Hackle's SDKs (sdk_url / event_url pointed at magpie) and Hackle's HTTP tracking call.
    app.add_route("POST", "/api/v2/events", sdk.ingest_events)
    app.add_route("POST", "/v1/track", sdk.track)
    app.add_param_route("GET", prefix_param("/api/v2/workspaces/", "/config", "sdk_key"), sdk.workspace_config)
    app.on_start(sdk.start_retention)
    app.on_stop(sdk.stop_retention)


def prefix_param(prefix: str, suffix: str, name: str) -> Matcher:
    """Match ``prefix<value>suffix`` where the value is one path segment."""

    def match(path: str) -> dict[str, str] | None:
        if path.startswith(prefix) and path.endswith(suffix) and len(path) > len(prefix) + len(suffix):
            value = path[len(prefix) : len(path) - len(suffix)]
            if "/" not in value:
                return {name: value}
        return None

    return match
