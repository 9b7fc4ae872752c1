"""Admin API for what operators check daily: gateway health and paid-message use, and CSV exports
of a dispatch's recipients and a campaign's figures."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from magpie.api.admin import exports
from magpie.api.admin.admin import admin
from magpie.api.http.context import Context
from magpie.domain.bodies import parse_int
from magpie.errors import InvalidRequest
from magpie.store import accounts, campaigns, stats
from magpie.store.exports import figure_rows
from magpie.store.gateways import Answer, GatewayReport, gateway_report
from magpie.store.periods import day_range, recent_days

DEFAULT_DAYS = 7


def days_from_query(query: Mapping[str, str], *, timezone: str, now_ms: int) -> tuple[int, int]:
    """``[since, until)`` from ``from``/``to`` local dates (both included), or the last 7 days.

    Only dates are taken (YYYY-MM-DD, years 1970-9998, at most 366 days): anything else is a 400.
    """
    start, end = query.get("from") or "", query.get("to") or ""
    if not start and not end:
        return recent_days(DEFAULT_DAYS, timezone=timezone, now_ms=now_ms)
    if not start or not end:
        raise InvalidRequest("from and to go together (YYYY-MM-DD)")
    return day_range(start, end, timezone=timezone)


def grain_of(raw: str | None, *, since: int, until: int) -> str:
    grain = raw or ("hour" if until - since <= 2 * stats.DAY_MS else "day")
    if grain not in ("hour", "day"):
        raise InvalidRequest("grain is hour or day")
    return grain


def _answer(found: Answer | None) -> dict[str, Any] | None:
    if found is None:
        return None
    # Not exact: known to the hour only (the statistics' hourly counts), without the provider.
    return {"provider": found.provider or None, "at": found.at, "code": found.code, "exact": found.exact}


def gateway_json(report: GatewayReport) -> dict[str, Any]:
    """The report as the admin API and ``magpie gateways --json`` answer it."""
    return {
        "from": report.since,
        "to": report.until,
        "timezone": report.timezone,
        "channels": [
            {
                "channel": c.channel,
                "configured": [{"name": g.name, **g.details} for g in c.configured],
                "lastSuccess": _answer(c.last_success),
                "lastError": _answer(c.last_error),
                "sent": c.sent,
                "failed": c.failed,
                "unknown": c.unknown_total,
                "unknownByReason": c.unknown,
                "delivered": c.delivered,
                "undelivered": c.undelivered_total,
                "undeliveredByCode": c.undelivered,
                "awaitingReport": c.awaiting_report,
                "inFlight": c.in_flight,
            }
            for c in report.channels
        ],
        "paidMessages": {
            "dailyLimit": report.paid_limit,
            "today": report.today,
            "usedToday": report.paid_today,
            "countedFrom": report.paid_source,
            "byDay": {d.day: d.paid for d in report.days},
        },
        "sentByType": report.sent_by_type,
        "sentByTypePerDay": {d.day: d.sent_by_type for d in report.days},
    }


async def read_gateways(ctx: Context, *, env: accounts.Environment, query: Mapping[str, str]) -> GatewayReport:
    now = int(time.time() * 1000)
    since, until = days_from_query(query, timezone=env.timezone, now_ms=now)
    return await ctx.read(
        lambda conn: gateway_report(
            conn,
            ctx.db,
            env_id=env.id,
            settings=env.settings,
            timezone=env.timezone,
            since=since,
            until=until,
            now_ms=now,
        )
    )


async def _environment(ctx: Context, request: Request) -> accounts.Environment:
    name = request.path_params["env"]
    env: accounts.Environment = await ctx.runtime.reader.call(lambda: accounts.get_environment(ctx.db, name))
    return env


async def get_gateways(ctx: Context, request: Request) -> Any:
    """Gateway health over ``from``..``to`` (local dates; default the last 7 days): paid-message use, sends by type."""
    env = await _environment(ctx, request)
    return gateway_json(await read_gateways(ctx, env=env, query=request.query_params))


async def dispatch_recipients_csv(ctx: Context, request: Request) -> Response:
    """A dispatch's recipients as CSV (streamed; ``outcome`` narrows it), phone numbers masked."""
    env = await _environment(ctx, request)
    return await exports.recipients_csv(
        ctx,
        env_id=env.id,
        dispatch_id=request.path_params["dispatch_id"],
        outcome=request.query_params.get("outcome"),
        timezone=env.timezone,
    )


async def campaign_figures(
    ctx: Context, *, env: accounts.Environment, key: int, since: int, until: int, grain: str
) -> Response:
    def load(conn: Any) -> list[tuple[int, str, int]]:
        campaigns.get_campaign(conn, ctx.db, env_id=env.id, key=key)  # NotFound for a key no campaign has
        return stats.series(conn, ctx.db, env_id=env.id, since=since, until=until, campaign_key=key)

    rows = figure_rows(await ctx.read(load), since=since, until=until, timezone=env.timezone, grain=grain)
    return exports.figures_csv(rows, filename=f"campaign-{key}-per-{grain}.csv")


async def campaign_figures_csv(ctx: Context, request: Request) -> Response:
    """A campaign's figures per ``grain`` (hour or day) over ``from``..``to`` (local dates) as CSV."""
    env = await _environment(ctx, request)
    key = parse_int(request.path_params["key"], name="the campaign key", default=0)
    since, until = days_from_query(request.query_params, timezone=env.timezone, now_ms=int(time.time() * 1000))
    grain = grain_of(request.query_params.get("grain"), since=since, until=until)
    return await campaign_figures(ctx, env=env, key=key, since=since, until=until, grain=grain)


def report_admin_routes(ctx: Context) -> list[BaseRoute]:
    env = "/admin/v1/environments/{env}"
    return [
        Route(env + "/gateways", admin(ctx, get_gateways), methods=["GET"]),
        Route(env + "/dispatches/{dispatch_id}/recipients.csv", admin(ctx, dispatch_recipients_csv), methods=["GET"]),
        Route(env + "/campaigns/{key}/figures.csv", admin(ctx, campaign_figures_csv), methods=["GET"]),
    ]
