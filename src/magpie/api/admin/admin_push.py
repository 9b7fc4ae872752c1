"""Admin API for campaigns, static cohorts, dispatches, statistics and the sandbox inbox."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from magpie.api.admin.admin import admin, body_json
from magpie.api.hackle import views
from magpie.api.hackle.push import parse_range
from magpie.api.http.context import Context
from magpie.domain.bodies import parse_int
from magpie.domain.campaigns import campaign_problems
from magpie.domain.messages import where
from magpie.errors import InvalidCampaign, InvalidRequest
from magpie.store import accounts, campaigns, dispatches, stats


async def _env_id(ctx: Context, request: Request) -> int:
    name = request.path_params["env"]
    env_id: int = await ctx.read(lambda conn: accounts.env_id_by_name(conn, ctx.db, name))
    return env_id


def _key(request: Request) -> int:
    return parse_int(request.path_params["key"], name="the campaign key", default=0)


async def list_campaigns(ctx: Context, request: Request) -> Any:
    """List an environment's campaigns."""
    env_id = await _env_id(ctx, request)
    rows = await ctx.read(lambda conn: campaigns.list_campaigns(conn, ctx.db, env_id=env_id))
    return {"campaigns": [views.campaign(row) for row in rows]}


async def apply_campaign(ctx: Context, request: Request) -> Any:
    """Create or update a campaign by its key (declarative apply)."""
    env_id = await _env_id(ctx, request)
    body = await body_json(request)
    if "key" in request.path_params:
        if not isinstance(body, dict):
            raise InvalidRequest("a campaign must be an object")
        body = {**body, "key": _key(request)}
    try:
        # Warn when the environment has no settings for the campaign's provider; ?strict=true refuses instead.
        warnings = await ctx.runtime.reader.call(lambda: campaigns.check_delivery(ctx.db, env_id=env_id, raw=body))
        if warnings and request.query_params.get("strict", "").lower() in ("1", "true", "yes"):
            raise InvalidRequest("strict: not applied: " + "; ".join(warnings))
        campaign, created = await ctx.runtime.reader.call(
            lambda: campaigns.apply_campaign(ctx.db, env_id=env_id, raw=body)
        )
    except InvalidCampaign as exc:
        raise _with_every_problem(exc, body) from None
    return {"campaign": campaign.to_json(), "created": created, "warnings": warnings}


def _with_every_problem(exc: InvalidCampaign, raw: Any) -> InvalidCampaign:
    """``exc``, its message still the first problem, listing every problem of the definition beside it."""
    found = [(where(p.path), p.message) for p in campaign_problems(raw)]
    first = next((f for f in found if f[1] == exc.message), ("", exc.message))
    found = [first, *(f for f in found if f != first)]
    if len(found) > 1:
        exc.every_problem = tuple(found)
    return exc


async def archive_campaign(ctx: Context, request: Request) -> Any:
    """Archive a campaign: it stops sending and keeps its statistics."""
    env_id = await _env_id(ctx, request)
    key = _key(request)
    campaign = await ctx.runtime.reader.call(lambda: campaigns.archive_campaign(ctx.db, env_id=env_id, key=key))
    return {"campaign": campaign.to_json()}


async def get_campaign(ctx: Context, request: Request) -> Any:
    """Show one campaign."""
    env_id = await _env_id(ctx, request)
    key = _key(request)
    return views.campaign(await ctx.read(lambda conn: campaigns.get_campaign(conn, ctx.db, env_id=env_id, key=key)))


async def campaign_stats(ctx: Context, request: Request) -> Any:
    """Campaign statistics over ``from``..``to`` (epoch ms or ISO-8601; default the last 7 days)."""
    env_id = await _env_id(ctx, request)
    key = _key(request)
    now = int(time.time() * 1000)
    since, until = parse_range(request.query_params.get("from"), request.query_params.get("to"), now=now)
    found = await ctx.read(
        lambda conn: stats.campaign_stats(conn, ctx.db, env_id=env_id, campaign_key=key, since=since, until=until)
    )
    return views.campaign_stats(found)


async def list_cohorts(ctx: Context, request: Request) -> Any:
    """List static cohorts with their sizes."""
    env_id = await _env_id(ctx, request)
    rows = await ctx.read(lambda conn: campaigns.list_cohorts(conn, ctx.db, env_id=env_id))
    return {"cohorts": views.rows(rows)}


async def put_cohort(ctx: Context, request: Request) -> Any:
    """Replace a static cohort's members: ``{"members": ["user-1", ...]}``."""
    env_id = await _env_id(ctx, request)
    body = await body_json(request)
    members = body.get("members") if isinstance(body, dict) else None
    name = request.path_params["name"]
    size = await ctx.runtime.reader.call(
        lambda: campaigns.set_cohort(ctx.db, env_id=env_id, name=name, members=members)
    )
    return {"name": name, "size": size}


async def get_cohort(ctx: Context, request: Request) -> Any:
    """Show a static cohort (the first 1,000 members)."""
    env_id = await _env_id(ctx, request)
    name = request.path_params["name"]
    return views.row(await ctx.read(lambda conn: campaigns.cohort_view(conn, ctx.db, env_id=env_id, name=name)))


async def get_dispatch(ctx: Context, request: Request) -> Any:
    """Show a dispatch with per-recipient outcomes and deliveries."""
    env_id = await _env_id(ctx, request)
    dispatch_id = request.path_params["dispatch_id"]
    row = await ctx.read(lambda conn: dispatches.dispatch_view(conn, ctx.db, env_id=env_id, dispatch_id=dispatch_id))
    return views.dispatch(row)


async def get_inbox(ctx: Context, request: Request) -> Any:
    """The sandbox inbox, newest first (``limit``, ``before`` for paging)."""
    env_id = await _env_id(ctx, request)
    limit = parse_int(request.query_params.get("limit"), name="limit", default=50, low=1, high=500)
    before = request.query_params.get("before")
    after = parse_int(before, name="before", default=0, low=0) if before else None
    rows = await ctx.read(lambda conn: dispatches.inbox(conn, ctx.db, env_id=env_id, limit=limit, after=after))
    return {"messages": views.rows(rows)}


def push_admin_routes(ctx: Context) -> list[BaseRoute]:
    env = "/admin/v1/environments/{env}"
    return [
        Route(env + "/campaigns", admin(ctx, list_campaigns), methods=["GET"]),
        Route(env + "/campaigns", admin(ctx, apply_campaign), methods=["POST"]),
        Route(env + "/campaigns/{key}", admin(ctx, get_campaign), methods=["GET"]),
        Route(env + "/campaigns/{key}", admin(ctx, apply_campaign), methods=["PUT"]),
        Route(env + "/campaigns/{key}/archive", admin(ctx, archive_campaign), methods=["POST"]),
        Route(env + "/campaigns/{key}/stats", admin(ctx, campaign_stats), methods=["GET"]),
        Route(env + "/cohorts", admin(ctx, list_cohorts), methods=["GET"]),
        Route(env + "/cohorts/{name}", admin(ctx, put_cohort), methods=["PUT"]),
        Route(env + "/cohorts/{name}", admin(ctx, get_cohort), methods=["GET"]),
        Route(env + "/dispatches/{dispatch_id}", admin(ctx, get_dispatch), methods=["GET"]),
        Route(env + "/inbox", admin(ctx, get_inbox), methods=["GET"]),
    ]
