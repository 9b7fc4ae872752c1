"""The Hackle user-property endpoints: properties, phone numbers and the three consents."""

from __future__ import annotations

from typing import Any

from magpie.api.http.asgi import SUCCESS, Request, Response
from magpie.api.http.context import Context
from magpie.domain import consent, phone
from magpie.domain.bodies import request_ids, require_action
from magpie.domain.identity import clean_id
from magpie.errors import EmptyIdentifier
from magpie.store.profiles import PropertiesBody, SetConsent, SetPhone


async def update_properties(ctx: Context, request: Request) -> Response:
    """Update a user's properties with $set, $setOnce, $unset and Hackle's other operations."""
    key_hash, env_id = await ctx.auth.authenticate(request.headers)
    await ctx.writer.submit(PropertiesBody(key_hash, env_id, request.body))
    return 200, SUCCESS


async def set_phone_number(ctx: Context, request: Request) -> Response:
    """Set a user's phone number (E.164; a number without country code is read as Korean)."""
    key_hash, env_id = await ctx.auth.authenticate(request.headers)
    body = request.json_object()
    user_id, _ = request_ids(body, user_required=True)
    number = phone.normalize(body.get("phoneNumber"))
    await ctx.writer.submit(SetPhone(phone=number, key_hash=key_hash, env_id=env_id, user_id=user_id, device_id=None))
    return 200, SUCCESS


async def delete_phone_number(ctx: Context, request: Request) -> Response:
    """Delete a user's phone number."""
    key_hash, env_id = await ctx.auth.authenticate(request.headers)
    user_id = clean_id(request.query.get("userId"), field="userId")
    if user_id is None:
        raise EmptyIdentifier("userId is required")
    await ctx.writer.submit(SetPhone(phone=None, key_hash=key_hash, env_id=env_id, user_id=user_id, device_id=None))
    return 200, SUCCESS


def _changes(body: dict[str, Any], channel: str) -> dict[str, str]:
    changes: dict[str, str] = {}
    for field, purpose in consent.status_fields(channel):
        status = consent.parse_status(field, body.get(field))
        if status is not None:
            changes[purpose] = status
    return changes


async def _subscriptions(ctx: Context, request: Request, channel: str) -> Response:
    key_hash, env_id = await ctx.auth.authenticate(request.headers)
    body = request.json_object()
    statuses = tuple(field for field, _ in consent.status_fields(channel))
    require_action(body, acts_on=statuses, known=("userId", "deviceId", *statuses))
    user_id, device_id = request_ids(body, user_required=channel != "push")
    job = SetConsent(
        channel=channel,
        changes=_changes(body, channel),
        key_hash=key_hash,
        env_id=env_id,
        user_id=user_id,
        device_id=device_id,
    )
    await ctx.writer.submit(job)
    return 200, SUCCESS


async def push_subscriptions(ctx: Context, request: Request) -> Response:
    """Record push consent (marketing, information, and magpie's night-time flag)."""
    return await _subscriptions(ctx, request, "push")


async def kakao_subscriptions(ctx: Context, request: Request) -> Response:
    """Record KakaoTalk message consent; userId is required."""
    return await _subscriptions(ctx, request, "kakao")


async def sms_subscriptions(ctx: Context, request: Request) -> Response:
    """Record text-message consent (and magpie's night-time flag); userId is required."""
    return await _subscriptions(ctx, request, "sms")
