"""Admin API for broadcasts: reachable counts, test sends, "send now", occurrences and their controls."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from magpie.api.admin.admin import admin, body_json
from magpie.api.admin.admin_push import _env_id, _key
from magpie.api.http.context import Context
from magpie.domain.bodies import parse_int
from magpie.domain.campaigns import Campaign, parse_campaign
from magpie.domain.identity import clean_id
from magpie.errors import InvalidRequest
from magpie.store import broadcasts, campaigns
from magpie.store.broadcasts import Control, OccurrenceKind, OccurrenceRow, Progress, Reach


def _now() -> int:
    return int(time.time() * 1000)


async def _campaign(ctx: Context, env_id: int, key: int) -> Campaign:
    row = await ctx.read(lambda conn: campaigns.get_campaign(conn, ctx.db, env_id=env_id, key=key))
    return parse_campaign(row.definition)


def occurrence_view(row: OccurrenceRow) -> dict[str, Any]:
    """An occurrence as every surface shows it."""
    return {
        "id": row.id,
        "campaignKey": row.campaign_key,
        "slot": row.slot_ms,
        "kind": row.kind,
        "state": row.state,
        "channel": row.channel,
        "planned": row.planned,
        "unreachable": row.unreachable,
        "error": row.error,
        "createdAt": row.created_at,
        "startedAt": row.started_at,
        "plannedAt": row.planned_at,
        "finishedAt": row.finished_at,
    }


def progress_view(progress: Progress) -> dict[str, Any]:
    counts = asdict(progress)
    del counts["occurrence"]
    return {
        "occurrence": occurrence_view(progress.occurrence),
        "progress": {
            "planned": progress.planned,
            "sent": progress.sent,
            "failed": progress.failed,
            "excluded": progress.excluded,
            "held": progress.held,
            "unknown": progress.unknown,
            "remaining": progress.remaining,
            "excludedBy": progress.excluded_by,
            "failedBy": progress.failed_by,
            "ratePerMinute": progress.rate_per_minute,
            "estimatedFinish": progress.eta_ms,
        },
    }


def reach_view(found: Reach) -> dict[str, Any]:
    return {
        "channel": found.channel,
        "users": found.users,
        "audience": found.audience,
        "reachable": found.reachable,
        "unreachable": found.unreachable,
    }


async def get_reach(ctx: Context, request: Request) -> Any:
    """Count who a campaign would reach now on its channel, and why the rest of its audience would not be."""
    env_id = await _env_id(ctx, request)
    campaign = await _campaign(ctx, env_id, _key(request))
    db = ctx.db
    reader = ctx.runtime.reader
    found = await reader.call(
        lambda: broadcasts.reach(reader.read_here, db, env_id=env_id, campaign=campaign, now_ms=_now())
    )
    return reach_view(found)


async def test_send(ctx: Context, request: Request) -> Any:
    """Send a campaign now to 1 to 5 named users, as a test occurrence."""
    env_id = await _env_id(ctx, request)
    key = _key(request)
    body = await body_json(request)
    users = body.get("userIds") if isinstance(body, dict) else None
    if not isinstance(users, list) or not 1 <= len(users) <= broadcasts.MAX_TEST_USERS:
        raise InvalidRequest(f"userIds must list 1 to {broadcasts.MAX_TEST_USERS} user ids")
    ids = [clean_id(u, field=f"userIds[{i}]") for i, u in enumerate(users)]
    campaign = await _campaign(ctx, env_id, key)
    occurrence_id = await ctx.writer.submit(
        broadcasts.TestSend(
            env_id=env_id, campaign_key=key, channel=campaign.channel, user_ids=[u for u in ids if u is not None]
        )
    )
    ctx.wake_workers()
    return await _progress(ctx, env_id, occurrence_id)


async def send_now(ctx: Context, request: Request) -> Any:
    """Start an occurrence of a campaign now, to its whole audience ("send now")."""
    env_id = await _env_id(ctx, request)
    key = _key(request)
    campaign = await _campaign(ctx, env_id, key)
    if campaign.status != "ACTIVE":
        raise InvalidRequest(f"campaign {key} is {campaign.status}: only an ACTIVE campaign is sent")
    occurrence_id = await ctx.writer.submit(
        broadcasts.CreateOccurrence(
            env_id=env_id, campaign_key=key, slot_ms=_now(), channel=campaign.channel, kind=OccurrenceKind.NOW
        )
    )
    if occurrence_id is None:
        raise InvalidRequest("an occurrence of this campaign was started at the same millisecond; try again")
    return await _progress(ctx, env_id, occurrence_id)


async def list_occurrences(ctx: Context, request: Request) -> Any:
    """List a campaign's occurrences, newest first."""
    env_id = await _env_id(ctx, request)
    key = _key(request)
    limit = parse_int(request.query_params.get("limit"), name="limit", default=50, low=1, high=500)
    rows = await ctx.read(
        lambda conn: broadcasts.list_occurrences(conn, ctx.db, env_id=env_id, campaign_key=key, limit=limit)
    )
    return {"occurrences": [occurrence_view(r) for r in rows]}


async def occurrence_statistics(ctx: Context, request: Request) -> Any:
    """Statistics of a campaign's occurrences, newest first, one per occurrence (format=csv for CSV)."""
    env_id = await _env_id(ctx, request)
    key = _key(request)
    limit = parse_int(request.query_params.get("limit"), name="limit", default=50, low=1, high=500)
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest("format must be json or csv")
    await _campaign(ctx, env_id, key)
    rows = await ctx.read(
        lambda conn: broadcasts.occurrence_statistics(
            conn, ctx.db, env_id=env_id, campaign_key=key, now_ms=_now(), limit=limit
        )
    )
    if fmt == "csv":
        return Response(
            broadcasts.statistics_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="campaign-{key}-occurrences.csv"'},
        )
    return {"occurrences": [progress_view(r) for r in rows]}


async def _progress(ctx: Context, env_id: int, occurrence_id: int) -> dict[str, Any]:
    found = await ctx.read(
        lambda conn: broadcasts.occurrence_progress(
            conn, ctx.db, env_id=env_id, occurrence_id=occurrence_id, now_ms=_now()
        )
    )
    return progress_view(found)


def _occurrence_id(request: Request) -> int:
    return parse_int(request.path_params["occurrence_id"], name="the occurrence id", default=0, low=1)


async def get_occurrence(ctx: Context, request: Request) -> Any:
    """Show an occurrence: state and progress (planned, sent, failed, excluded, held, unknown, remaining)."""
    env_id = await _env_id(ctx, request)
    return await _progress(ctx, env_id, _occurrence_id(request))


async def _control(ctx: Context, request: Request, action: Control) -> Any:
    env_id = await _env_id(ctx, request)
    occurrence_id = _occurrence_id(request)
    await ctx.writer.submit(broadcasts.ControlOccurrence(env_id=env_id, occurrence_id=occurrence_id, action=action))
    if action is Control.RESUME:
        ctx.wake_workers()
    return await _progress(ctx, env_id, occurrence_id)


async def pause_occurrence(ctx: Context, request: Request) -> Any:
    """Pause an occurrence: planning stops and its waiting batches wait until resumed."""
    return await _control(ctx, request, Control.PAUSE)


async def resume_occurrence(ctx: Context, request: Request) -> Any:
    """Resume a paused occurrence."""
    return await _control(ctx, request, Control.RESUME)


async def cancel_occurrence(ctx: Context, request: Request) -> Any:
    """Cancel an occurrence: nothing more is sent; its waiting recipients end EXCLUDED BROADCAST_CANCELLED."""
    return await _control(ctx, request, Control.CANCEL)


def broadcast_admin_routes(ctx: Context) -> list[BaseRoute]:
    env = "/admin/v1/environments/{env}"
    occ = env + "/occurrences/{occurrence_id}"
    return [
        Route(env + "/campaigns/{key}/reach", admin(ctx, get_reach), methods=["GET"]),
        Route(env + "/campaigns/{key}/test-send", admin(ctx, test_send), methods=["POST"]),
        Route(env + "/campaigns/{key}/send-now", admin(ctx, send_now), methods=["POST"]),
        Route(env + "/campaigns/{key}/occurrences", admin(ctx, list_occurrences), methods=["GET"]),
        Route(env + "/campaigns/{key}/occurrence-statistics", admin(ctx, occurrence_statistics), methods=["GET"]),
        Route(occ, admin(ctx, get_occurrence), methods=["GET"]),
        Route(occ + "/pause", admin(ctx, pause_occurrence), methods=["POST"]),
        Route(occ + "/resume", admin(ctx, resume_occurrence), methods=["POST"]),
        Route(occ + "/cancel", admin(ctx, cancel_occurrence), methods=["POST"]),
    ]
