"""Admin API for the law's two-year notice: who is due, and sending the notice through a campaign."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from magpie.api.admin.admin import admin, body_json
from magpie.api.admin.admin_push import _env_id
from magpie.api.http.context import Context
from magpie.domain.identity import check_identifier
from magpie.domain.messages import CHANNELS
from magpie.errors import CampaignNotFound, InvalidRequest
from magpie.store.campaigns import CampaignCache
from magpie.store.dispatches import AcceptTrigger
from magpie.store.profiles import reconfirmations_due

MAX_REPORT = 100_000
_DAY_MS = 86_400_000


def _channels(raw: object) -> tuple[str, ...]:
    if raw in (None, ""):
        return CHANNELS
    if raw not in CHANNELS:
        raise InvalidRequest("channel must be push, kakao or sms (or absent: every channel)")
    return (str(raw),)


def _within(raw: object) -> int:
    value = 30 if raw in (None, "") else raw
    try:
        days = int(str(value))
    except ValueError:
        days = -1
    if not 0 <= days <= 365:
        raise InvalidRequest("withinDays must be between 0 and 365")
    return days * _DAY_MS


async def due(ctx: Context, *, env_id: int, channel: object, within_days: object) -> dict[str, Any]:
    """Users whose marketing consent is due for the two-year notice: ``{"due": [...], "count": n}``.

    ``channel`` is push, kakao or sms (absent: every channel); ``within_days`` 0 to 365 (absent: 30).
    """
    channels = _channels(channel)
    within = _within(within_days)
    now = int(time.time() * 1000)
    users = await ctx.read(
        lambda conn: reconfirmations_due(
            conn, ctx.db, env_id=env_id, channels=channels, now_ms=now, within_ms=within, limit=MAX_REPORT
        )
    )
    return {"due": users, "count": len(users)}


async def due_report(ctx: Context, request: Request) -> Any:
    """Users whose marketing consent is due for the two-year re-confirmation notice (``channel``, ``withinDays``)."""
    env_id = await _env_id(ctx, request)
    query = request.query_params
    return await due(ctx, env_id=env_id, channel=query.get("channel"), within_days=query.get("withinDays"))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


async def send_notice(ctx: Context, request: Request) -> Any:
    """Send the two-year notice through an informational campaign to every user due (50 per dispatch).

    With an ``Idempotency-Key`` header, sending again with the same key sends nothing again.
    """
    env_id = await _env_id(ctx, request)
    body = await body_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("campaignKey"), int):
        raise InvalidRequest("body: {campaignKey: number, channel?: push|kakao|sms, withinDays?: number}")
    idempotency = request.headers.get("idempotency-key")
    if idempotency is not None:
        check_identifier(idempotency, field="Idempotency-Key", max_length=200)
        if not idempotency:
            raise InvalidRequest("Idempotency-Key must be 1 to 200 characters")
    return await notify(
        ctx,
        env_id=env_id,
        key=int(body["campaignKey"]),
        channel=body.get("channel"),
        within_days=body.get("withinDays"),
        idempotency_key=idempotency,
    )


async def notify(
    ctx: Context, *, env_id: int, key: int, channel: object, within_days: object, idempotency_key: str | None = None
) -> dict[str, Any]:
    """Trigger campaign ``key`` for every user due (50 per dispatch): ``{"recipients": n, "dispatchIds": [...]}``.

    The campaign must be ACTIVE and informational; ``channel`` defaults to the campaign's. With an
    ``idempotency_key``, each dispatch carries it (and its index): a repeat answers the dispatches
    already made instead of making them again.
    """
    campaign = await ctx.read(lambda conn: CampaignCache().load(conn, ctx.db, env_id=env_id, key=key))
    if campaign is None:
        raise CampaignNotFound(channel=None)
    if campaign.status != "ACTIVE":
        raise InvalidRequest(f"campaign {key} is {campaign.status}: the notice is sent through an ACTIVE campaign")
    if campaign.is_marketing:
        raise InvalidRequest("the re-confirmation notice is informational: use a campaign with purpose INFORMATION")
    report = await due(ctx, env_id=env_id, channel=channel or campaign.channel, within_days=within_days)
    users = [
        {
            "userId": d["userId"],
            "apiProperties": {
                "consentChannel": d["channel"],
                "confirmedAt": _iso(int(d["confirmedAt"] or 0)),
                "dueAt": _iso(int(d["dueAt"])),
            },
        }
        for d in report["due"]
    ]
    dispatch_ids: list[str] = []
    created_any = False
    for start in range(0, len(users), 50):
        chunk = users[start : start + 50]
        dispatch_id, created = await ctx.writer.submit(
            AcceptTrigger(
                key_hash=None,
                env_id=env_id,
                campaign_key=key,
                users=msgspec.json.encode(chunk).decode(),
                requested=len(chunk),
                idempotency_key=None if idempotency_key is None else f"{idempotency_key}#{start // 50}",
                channel=campaign.channel,
            )
        )
        dispatch_ids.append(dispatch_id)
        created_any = created_any or created
    if created_any:
        ctx.wake_workers()
    return {"recipients": len(users), "dispatchIds": dispatch_ids}


def consent_admin_routes(ctx: Context) -> list[BaseRoute]:
    env = "/admin/v1/environments/{env}"
    return [
        Route(env + "/consent-reconfirmations", admin(ctx, due_report), methods=["GET"]),
        Route(env + "/consent-reconfirmations/send", admin(ctx, send_notice), methods=["POST"]),
    ]
