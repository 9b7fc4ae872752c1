"""Push endpoints: Hackle's trigger send, and magpie's push tokens and delivery statistics."""

from __future__ import annotations

import time
from typing import Any

from magpie.api.hackle import views
from magpie.api.http.asgi import SUCCESS, Request, Response, encode
from magpie.api.http.context import Context
from magpie.domain.bodies import INT64_MAX, INT64_MIN, parse_int
from magpie.domain.identity import check_identifier, clean_id, require_identifier
from magpie.errors import EmptyIdentifier, ExceedUserMaxLength, InvalidRequest
from magpie.store.dispatches import AcceptTrigger, dispatch_view
from magpie.store.stats import campaign_stats
from magpie.store.tokens import RegisterToken

MAX_USERS = 50
MAX_API_PROPERTIES = 64
MAX_API_VALUE = 1024
_IDEMPOTENCY_HEADER = b"idempotency-key"
# Epoch milliseconds of 0001-01-01 and 9999-12-31: what a date can show.
_MIN_MS = -62_135_596_800_000
_MAX_MS = 253_402_300_799_999


def _api_properties(raw: object, index: int) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest(f"users[{index}].apiProperties must be an object")
    if len(raw) > MAX_API_PROPERTIES:
        raise InvalidRequest(f"users[{index}].apiProperties may hold at most {MAX_API_PROPERTIES} keys")
    for key, value in raw.items():
        if not isinstance(value, str | int | float | bool):
            raise InvalidRequest(f"users[{index}].apiProperties.{key} must be a string, number or boolean")
        if isinstance(value, str) and len(value) > MAX_API_VALUE:
            raise InvalidRequest(f"users[{index}].apiProperties.{key} is longer than {MAX_API_VALUE} characters")
    return raw


def parse_trigger(body: dict[str, Any], *, user_required: bool = False) -> tuple[int, list[dict[str, Any]]]:
    """Validate a trigger-send body exactly as Hackle does; returns the campaign key and users.

    Kakao and SMS go to the phone number of a user, so there ``userId`` is required.
    """
    key = body.get("campaignKey")
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    if not isinstance(key, int) or isinstance(key, bool):
        raise InvalidRequest("campaignKey must be a number")
    if not INT64_MIN <= key <= INT64_MAX:
        raise InvalidRequest("campaignKey must be a 64-bit integer")
    users = body.get("users")
    if not isinstance(users, list):
        raise InvalidRequest("users must be a list of 1 to 50 users")
    if len(users) > MAX_USERS:
        raise ExceedUserMaxLength()
    if not users:
        raise InvalidRequest("users must hold at least one user")
    parsed: list[dict[str, Any]] = []
    for index, user in enumerate(users):
        if not isinstance(user, dict):
            raise InvalidRequest(f"users[{index}] must be an object")
        user_id = clean_id(user.get("userId"), field=f"users[{index}].userId")
        device_id = clean_id(user.get("deviceId"), field=f"users[{index}].deviceId")
        if user_required and user_id is None:
            raise EmptyIdentifier(f"users[{index}].userId is required: the message goes to that user's phone number")
        require_identifier(user_id, device_id)
        entry: dict[str, Any] = {"userId": user_id, "deviceId": device_id}
        props = _api_properties(user.get("apiProperties"), index)
        if props:
            entry["apiProperties"] = props
        parsed.append(entry)
    return key, parsed


async def trigger_send(ctx: Context, request: Request) -> Response:
    """Send an API-triggered push campaign to up to 50 users; delivery happens after the response."""
    return await accept_trigger(ctx, request, channel="push")


async def accept_trigger(ctx: Context, request: Request, *, channel: str) -> Response:
    """Accept a trigger of a campaign of ``channel``: the dispatch and its work item, durably."""
    key_hash, env_id = await ctx.auth.authenticate(request.headers)
    campaign_key, users = parse_trigger(request.json_object(), user_required=channel != "push")
    idempotency = request.header(_IDEMPOTENCY_HEADER)
    if idempotency is not None:
        if not idempotency:
            raise InvalidRequest("Idempotency-Key must be 1 to 255 characters")
        check_identifier(idempotency, field="Idempotency-Key", max_length=255)
    job = AcceptTrigger(
        key_hash=key_hash,
        env_id=env_id,
        campaign_key=campaign_key,
        users=encode(users).decode(),
        requested=len(users),
        idempotency_key=idempotency,
        channel=channel,
    )
    dispatch_id, created = await ctx.writer.submit(job)
    if created:
        ctx.wake_workers()
    return 200, encode({"dispatchId": dispatch_id, "message": "success"})


async def register_push_token(ctx: Context, request: Request) -> Response:
    """Register a device's FCM or APNs token (magpie extension); optionally link it to a user."""
    key_hash, env_id = await ctx.auth.authenticate(request.headers)
    body = request.json_object()
    device_id = clean_id(body.get("deviceId"), field="deviceId")
    user_id = clean_id(body.get("userId"), field="userId")
    if device_id is None:
        raise InvalidRequest("deviceId is required: tokens belong to devices")
    provider = body.get("providerType")
    if provider not in ("FCM", "APN"):
        raise InvalidRequest("providerType must be FCM or APN")
    token = body.get("token")
    if not isinstance(token, str) or not token.strip():
        raise InvalidRequest("token must be a non-empty string of at most 512 characters")
    check_identifier(token, field="token", max_length=512)
    status = await ctx.writer.submit(
        RegisterToken(
            key_hash=key_hash,
            env_id=env_id,
            device_id=device_id,
            user_id=user_id,
            provider_type=provider,
            token=token.strip(),
        )
    )
    if status != "ACTIVE":
        return 200, encode({"message": "success", "tokenStatus": status})
    return 200, SUCCESS


async def get_dispatch(ctx: Context, request: Request) -> Response:
    """Show a dispatch: status, counts by outcome and reason, and per-recipient outcomes."""
    return await show_dispatch(ctx, request, channel="push")


async def show_dispatch(ctx: Context, request: Request, *, channel: str) -> Response:
    key = await ctx.auth.check_read(request.headers)
    dispatch_id = request.path_params["dispatch_id"]
    row = await ctx.read(lambda conn: dispatch_view(conn, ctx.db, env_id=key, dispatch_id=dispatch_id, channel=channel))
    return 200, encode(views.dispatch(row))


def parse_time(value: str | None, *, name: str, default: int) -> int:
    """Epoch milliseconds (years 0 to 9999), or an ISO-8601 time."""
    if value is None or value == "":
        return default
    if value.lstrip("-").isdigit():
        return parse_int(value, name=name, default=default, low=_MIN_MS, high=_MAX_MS)
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidRequest(f"{name} must be epoch milliseconds or an ISO-8601 time") from exc


def parse_range(since: str | None, until: str | None, *, now: int) -> tuple[int, int]:
    """``[from, to)`` of a statistics request (default: the last 7 days); ``to`` must come after ``from``."""
    start = parse_time(since, name="from", default=now - 7 * 86_400_000)
    end = parse_time(until, name="to", default=now + 1)
    if end <= start:
        raise InvalidRequest("to must be after from")
    return start, end


async def get_campaign_stats(ctx: Context, request: Request) -> Response:
    """Campaign statistics over a time range: requested, sent, failed, excluded by reason, clicks, CTR."""
    return await show_campaign_stats(ctx, request, channel="push")


async def show_campaign_stats(ctx: Context, request: Request, *, channel: str) -> Response:
    """Statistics of a campaign of ``channel``; another channel's campaign is ``CAMPAIGN_NOT_FOUND`` here."""
    env_id = await ctx.auth.check_read(request.headers)
    campaign_key = parse_int(request.path_params["campaign_key"], name="the campaign key", default=0)
    now = int(time.time() * 1000)
    query = request.query
    since, until = parse_range(query.get("from"), query.get("to"), now=now)
    stats = await ctx.read(
        lambda conn: campaign_stats(
            conn, ctx.db, env_id=env_id, campaign_key=campaign_key, since=since, until=until, channel=channel
        )
    )
    return 200, encode(views.campaign_stats(stats))
