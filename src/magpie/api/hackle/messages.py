"""Kakao and SMS endpoints: Hackle's Kakao trigger send, magpie's SMS trigger (an extension of the same
shape), their dispatch views, and the webhooks gateways call back (delivery reports, 080 opt-outs)."""

from __future__ import annotations

import hmac
from typing import Any

from magpie.api.hackle.push import accept_trigger, show_campaign_stats, show_dispatch
from magpie.api.http.asgi import SUCCESS, Request, Response, encode
from magpie.api.http.context import Context
from magpie.domain.bodies import decode_json
from magpie.domain.environment import effective
from magpie.domain.phone import normalize
from magpie.errors import InvalidApiKey, InvalidRequest
from magpie.providers.nhn import SIGNATURE_HEADER, parse_webhook
from magpie.providers.solapi import parse_report
from magpie.store.accounts import environment_by_name
from magpie.store.deliveries import RecordReports, users_by_phone
from magpie.store.profiles import UnsubscribeUsers


async def kakao_trigger_send(ctx: Context, request: Request) -> Response:
    """Send an API-triggered Kakao message campaign (AlimTalk or brand) to up to 50 users' phones."""
    return await accept_trigger(ctx, request, channel="kakao")


async def sms_trigger_send(ctx: Context, request: Request) -> Response:
    """Send an API-triggered SMS campaign to up to 50 users' phones (magpie extension, Kakao's shape)."""
    return await accept_trigger(ctx, request, channel="sms")


async def get_kakao_dispatch(ctx: Context, request: Request) -> Response:
    """Show a Kakao dispatch: status, counts by outcome and reason, and per-recipient deliveries."""
    return await show_dispatch(ctx, request, channel="kakao")


async def get_sms_dispatch(ctx: Context, request: Request) -> Response:
    """Show an SMS dispatch: status, counts by outcome and reason, and per-recipient deliveries."""
    return await show_dispatch(ctx, request, channel="sms")


async def get_kakao_campaign_stats(ctx: Context, request: Request) -> Response:
    """Kakao campaign statistics: sent, delivered, failed, excluded by reason, by type."""
    return await show_campaign_stats(ctx, request, channel="kakao")


async def get_sms_campaign_stats(ctx: Context, request: Request) -> Response:
    """SMS campaign statistics: sent, delivered, failed, excluded by reason, by type."""
    return await show_campaign_stats(ctx, request, channel="sms")


async def _gateway_settings(ctx: Context, request: Request, gateway: str) -> tuple[int, dict[str, Any]]:
    """The environment named in the path, after checking the webhook secret its settings hold: in the
    ``secret`` query parameter, or (NHN) in the ``X-Toast-Webhook-Signature`` header NHN sends."""
    name = request.path_params["environment"]
    found = await ctx.read(lambda conn: environment_by_name(conn, ctx.db, name=name))
    secret = request.query.get("secret", "")
    if gateway == "nhn" and not secret:
        secret = request.header(SIGNATURE_HEADER.lower().encode()) or ""
    if found is None:
        raise InvalidApiKey("Unknown environment or webhook secret")
    env_id, raw_settings = found
    config = effective(raw_settings).get("providers", {}).get(gateway) or {}
    expected = str(config.get("webhookSecret") or "")
    if not expected or not hmac.compare_digest(expected.encode(), secret.encode()):
        raise InvalidApiKey("Unknown environment or webhook secret")
    return env_id, config


async def solapi_report(ctx: Context, request: Request) -> Response:
    """Receive Solapi's delivery report webhook: each accepted message delivered or not, with its code."""
    env_id, _ = await _gateway_settings(ctx, request, "solapi")
    reports = parse_report(decode_json(request.body))
    updated = await ctx.writer.submit(RecordReports(env_id=env_id, provider="solapi", reports=reports))
    return 200, encode({"message": "success", "updated": updated})


async def nhn_report(ctx: Context, request: Request) -> Response:
    """Receive NHN Cloud's SMS webhook: MESSAGE_RESULT_UPDATE results (and UNSUBSCRIBE opt-outs)."""
    return await _nhn_webhook(ctx, request)


async def _nhn_webhook(ctx: Context, request: Request) -> Response:
    env_id, _ = await _gateway_settings(ctx, request, "nhn")
    hook = parse_webhook(decode_json(request.body))
    if hook.event == "UNSUBSCRIBE":
        return await _unsubscribe(ctx, env_id, hook.opted_out)
    updated = await ctx.writer.submit(RecordReports(env_id=env_id, provider="nhn", reports=hook.reports))
    return 200, encode({"message": "success", "updated": updated})


def _numbers(doc: Any) -> list[str]:
    items = doc if isinstance(doc, list) else [doc]
    numbers: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        # NHN names the caller recipientNo / Solapi from / a plain phoneNumber: whoever called the 080 line.
        for field in ("phoneNumber", "recipientNo", "from", "callerNumber"):
            value = item.get(field)
            if isinstance(value, str) and value.strip():
                numbers.append(value)
                break
    return numbers


async def nhn_opt_out(ctx: Context, request: Request) -> Response:
    """Receive NHN Cloud's 080 opt-out webhook: the caller's SMS marketing consent becomes UNSUBSCRIBED."""
    doc = decode_json(request.body)
    if isinstance(doc, dict) and "event" in doc:
        return await _nhn_webhook(ctx, request)
    return await _opt_out(ctx, request, "nhn")


async def solapi_opt_out(ctx: Context, request: Request) -> Response:
    """Receive Solapi's 080 opt-out webhook: the caller's SMS marketing consent becomes UNSUBSCRIBED."""
    return await _opt_out(ctx, request, "solapi")


async def _opt_out(ctx: Context, request: Request, gateway: str) -> Response:
    env_id, _ = await _gateway_settings(ctx, request, gateway)
    return await _unsubscribe(ctx, env_id, _numbers(decode_json(request.body)))


async def _unsubscribe(ctx: Context, env_id: int, numbers: list[str]) -> Response:
    hashes: list[str] = []
    for raw in numbers:
        try:
            hashes.append(ctx.cipher.blind_index(normalize(raw)))
        except InvalidRequest:
            continue
    if not hashes:
        raise InvalidRequest("no phone number in the opt-out (hooks[].recipientNo, phoneNumber, recipientNo or from)")
    users = await ctx.read(lambda conn: users_by_phone(conn, ctx.db, env_id=env_id, phone_hashes=hashes))
    changed = await ctx.writer.submit(UnsubscribeUsers(env_id=env_id, user_ids=users)) if users else 0
    if not changed:
        return 200, SUCCESS
    return 200, encode({"message": "success", "unsubscribed": changed})
