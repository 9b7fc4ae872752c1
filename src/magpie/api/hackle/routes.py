"""The route table of the lean router: every Hackle-compatible and magpie data endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from magpie.api.hackle import messages, profiles, push, sdk
from magpie.api.http.asgi import Request, Response
from magpie.api.http.context import Context

Route = Callable[[Context, Request], Awaitable[Response]]
Matcher = Callable[[str], dict[str, str] | None]


def prefix_param(prefix: str, suffix: str, name: str) -> Matcher:
    """Match ``prefix<value>suffix`` where the value is one path segment."""

    def match(path: str) -> dict[str, str] | None:
        if path.startswith(prefix) and path.endswith(suffix) and len(path) > len(prefix) + len(suffix):
            value = path[len(prefix) : len(path) - len(suffix)]
            if "/" not in value:
                return {name: value}
        return None

    return match


EXACT: dict[tuple[str, str], Route] = {
    ("POST", "/v1/properties"): profiles.update_properties,
    ("POST", "/v1/properties/phone-numbers"): profiles.set_phone_number,
    ("DELETE", "/v1/properties/phone-numbers"): profiles.delete_phone_number,
    ("POST", "/v1/push-subscriptions"): profiles.push_subscriptions,
    ("POST", "/v1/kakao-subscriptions"): profiles.kakao_subscriptions,
    ("POST", "/v1/sms-subscriptions"): profiles.sms_subscriptions,
    ("POST", "/v1/push-message/trigger/send"): push.trigger_send,
    ("POST", "/v1/push-tokens"): push.register_push_token,
    # Kakao (Hackle's trigger) and SMS (magpie's sibling of it).
    ("POST", "/v1/kakao-message/trigger/send"): messages.kakao_trigger_send,
    ("POST", "/v1/sms-message/trigger/send"): messages.sms_trigger_send,
    # Hackle's SDKs (sdk_url / event_url pointed at magpie) and Hackle's HTTP tracking call.
    ("POST", "/api/v2/events"): sdk.ingest_events,
    ("POST", "/v1/track"): sdk.track,
}

# (method, matcher, handler, template): the template labels metrics, never the raw path.
WITH_PARAMS: list[tuple[str, Matcher, Route, str]] = [
    (
        "GET",
        prefix_param("/v1/push-message/dispatches/", "", "dispatch_id"),
        push.get_dispatch,
        "/v1/push-message/dispatches/{dispatchId}",
    ),
    (
        "GET",
        prefix_param("/v1/push-message/campaigns/", "/stats", "campaign_key"),
        push.get_campaign_stats,
        "/v1/push-message/campaigns/{campaignKey}/stats",
    ),
    (
        "GET",
        prefix_param("/api/v2/workspaces/", "/config", "sdk_key"),
        sdk.workspace_config,
        "/api/v2/workspaces/{sdkKey}/config",
    ),
    (
        "GET",
        prefix_param("/v1/kakao-message/dispatches/", "", "dispatch_id"),
        messages.get_kakao_dispatch,
        "/v1/kakao-message/dispatches/{dispatchId}",
    ),
    (
        "GET",
        prefix_param("/v1/sms-message/dispatches/", "", "dispatch_id"),
        messages.get_sms_dispatch,
        "/v1/sms-message/dispatches/{dispatchId}",
    ),
    (
        "GET",
        prefix_param("/v1/kakao-message/campaigns/", "/stats", "campaign_key"),
        messages.get_kakao_campaign_stats,
        "/v1/kakao-message/campaigns/{campaignKey}/stats",
    ),
    (
        "GET",
        prefix_param("/v1/sms-message/campaigns/", "/stats", "campaign_key"),
        messages.get_sms_campaign_stats,
        "/v1/sms-message/campaigns/{campaignKey}/stats",
    ),
    # The gateways' callbacks, authenticated by the environment's webhook secret.
    (
        "POST",
        prefix_param("/v1/gateways/solapi/reports/", "", "environment"),
        messages.solapi_report,
        "/v1/gateways/solapi/reports/{environment}",
    ),
    (
        "POST",
        prefix_param("/v1/gateways/nhn/reports/", "", "environment"),
        messages.nhn_report,
        "/v1/gateways/nhn/reports/{environment}",
    ),
    (
        "POST",
        prefix_param("/v1/gateways/nhn/opt-outs/", "", "environment"),
        messages.nhn_opt_out,
        "/v1/gateways/nhn/opt-outs/{environment}",
    ),
    (
        "POST",
        prefix_param("/v1/gateways/solapi/opt-outs/", "", "environment"),
        messages.solapi_opt_out,
        "/v1/gateways/solapi/opt-outs/{environment}",
    ),
]
