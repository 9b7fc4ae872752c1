"""Dashboard pages for what a marketer checks daily: gateway health and paid-message use, figures
against the previous period, two campaigns side by side, and CSV exports of the tables.

The pages plug into ``magpie.dashboard.pages`` through ``routes``: each handler gets the page's
``View`` (described here by ``PageView``, so this module does not import the pages) and renders
through the dashboard's templates. The comparisons shown on the overview and campaign pages are
read before those pages' own handlers run (``comparing``) and left on the request for the
``_period_compare.html`` include.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from magpie.api.admin import exports
from magpie.api.admin.admin_reports import campaign_figures, grain_of, read_gateways
from magpie.api.hackle import views
from magpie.api.http.context import Context
from magpie.domain import messages
from magpie.errors import InvalidRequest
from magpie.store import accounts, campaigns, stats
from magpie.store.periods import (
    FIGURES,
    compare_periods,
    compare_totals,
    day_range,
    figure,
    today_vs_yesterday,
)
from magpie.store.stats import Totals

RANGES = {"24h": 1, "7d": 7, "30d": 30, "90d": 90}
LABELS = {
    "requested": "Requested",
    "sent": "Sent",
    "failed": "Failed",
    "unknown": "Unknown",
    "excluded": "Excluded",
    "unique_clicks": "Unique clicks",
    "clicks": "Total clicks",
    "ctr": "CTR",
}


class PageView(Protocol):
    """What these pages need of the dashboard's ``View``."""

    request: Request
    ctx: Context
    env: accounts.Environment
    now_ms: int

    @property
    def zone(self) -> str: ...

    def url(self, path: str = "", **query: Any) -> str: ...

    async def read(self, fn: Callable[[Any], Any]) -> Any: ...


Handler = Callable[[Any], Awaitable[Response]]
Page = Callable[[Handler], Callable[[Request], Awaitable[Response]]]
Render = Callable[..., HTMLResponse]


@dataclass(frozen=True, slots=True)
class Period:
    """The period a page shows: a rolling range (``24h``…``90d``) or local dates, as the page's form chose."""

    since: int
    until: int
    range: str  # 24h, 7d, 30d, 90d or custom
    start: str = ""
    end: str = ""


def chosen_period(query: Mapping[str, str], *, timezone: str, now_ms: int) -> Period:
    """The campaign page's choice: ``from``/``to`` local dates, else ``range`` (default 7 days)."""
    start, end = query.get("from") or "", query.get("to") or ""
    if start or end:
        if not start or not end:
            raise InvalidRequest("from and to go together (YYYY-MM-DD)")
        since, until = day_range(start, end, timezone=timezone)
        return Period(since=since, until=until, range="custom", start=start, end=end)
    chosen = query.get("range") or "7d"
    if chosen not in RANGES:
        chosen = "7d"
    return Period(since=now_ms - RANGES[chosen] * stats.DAY_MS, until=now_ms + 1, range=chosen)


CLICK_FIGURES = ("unique_clicks", "clicks", "ctr")


def _key(raw: str, name: str) -> int:
    """A campaign key from the URL: ASCII digits only (``int`` would take ``²`` or ``٣`` too)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise InvalidRequest(f"{name} must be a positive number")
    return int(raw)


def _rows(current: Totals, previous: Totals, *, clicks: tuple[bool, bool] = (True, True)) -> list[dict[str, Any]]:
    """One row per figure: its value now and before, and the change (None where a figure is absent).

    ``clicks`` says whether each side counts clicks at all (push does; Kakao and SMS do not): where
    it does not, click figures and CTR are absent, never 0.
    """
    changes = compare_totals(current, previous)
    rows = []
    for name in FIGURES:
        now, before = figure(current, name), figure(previous, name)
        change = changes[name]
        if name in CLICK_FIGURES:
            now = now if clicks[0] else None
            before = before if clicks[1] else None
            change = change if all(clicks) else None
        rows.append({"name": name, "label": LABELS[name], "now": now, "before": before, "change": change})
    return rows


def _clicks(definition: Mapping[str, Any]) -> bool:
    """Whether a campaign's channel has clicks to count (push only)."""
    return str(definition.get("channel") or "push") == "push"


class Reports:
    def __init__(self, ctx: Context, render: Render) -> None:
        self.ctx = ctx
        self.render = render

    # -- comparisons on the overview and campaign pages --------------------------------------------

    def comparing(self, handler: Handler, *, campaign: bool = False) -> Handler:
        """``handler`` with today against yesterday and the chosen period against the previous one
        read first, for the page's ``_period_compare.html`` include."""

        async def wrapped(view: PageView) -> Response:
            query = view.request.query_params
            key = _key(view.request.path_params["key"], "campaign key") if campaign else None
            period = chosen_period(query, timezone=view.zone, now_ms=view.now_ms)
            # The overview's channel filter applies to its comparisons too (the page refuses any other value).
            wanted = query.get("channel") or None
            channel = wanted if not campaign and wanted in messages.CHANNELS else None
            db, env_id = self.ctx.db, view.env.id

            def load(conn: Any) -> dict[str, Any]:
                shown = campaigns.get_campaign(conn, db, env_id=env_id, key=key).definition if key is not None else {}
                today = today_vs_yesterday(
                    conn, db, env_id=env_id, timezone=view.zone, now_ms=view.now_ms, campaign_key=key, channel=channel
                )
                chosen = compare_periods(
                    conn, db, env_id=env_id, since=period.since, until=period.until, campaign_key=key, channel=channel
                )
                clicks = _clicks(shown) if key is not None else channel in (None, *stats.CLICK_CHANNELS)
                return {"today": today, "chosen": chosen, "clicks": clicks}

            found = await view.read(load)
            both = (found["clicks"], found["clicks"])
            today, chosen = found["today"], found["chosen"]
            view.request.state.comparisons = {
                "today": {"c": today, "rows": _rows(today.current, today.previous, clicks=both)},
                "chosen": {"c": chosen, "rows": _rows(chosen.current, chosen.previous, clicks=both)},
                "period": period,
                "form": not campaign,  # the campaign page has its own range form
            }
            return await handler(view)

        return wrapped

    # -- two campaigns side by side ----------------------------------------------------------------

    async def compare(self, view: PageView) -> Response:
        query = view.request.query_params
        period = chosen_period(query, timezone=view.zone, now_ms=view.now_ms)
        chosen = [query.get("a", ""), query.get("b", "")]
        keys: list[int | None] = []
        for raw in chosen:
            keys.append(_key(raw, "a and b") if raw else None)
        db, env_id = self.ctx.db, view.env.id

        def load(conn: Any) -> dict[str, Any]:
            listed = [views.campaign(row) for row in campaigns.list_campaigns(conn, db, env_id=env_id)]
            sides: list[dict[str, Any] | None] = []
            for key in keys:
                if key is None:
                    sides.append(None)
                    continue
                row = views.campaign(campaigns.get_campaign(conn, db, env_id=env_id, key=key))
                t = stats.totals(
                    conn,
                    db,
                    env_id=env_id,
                    since=period.since,
                    until=period.until,
                    campaign_key=key,
                    channel=str(row.get("channel") or "push"),
                )
                sides.append({"c": row, "totals": t})
            return {"campaigns": listed, "sides": sides}

        data = await view.read(load)
        a, b = data["sides"]
        # B against A: A is the "before" of each change.
        rows = None
        if a is not None and b is not None:
            rows = _rows(b["totals"], a["totals"], clicks=(_clicks(b["c"]), _clicks(a["c"])))
        return self.render(
            "compare.html",
            view=view,
            period=period,
            campaigns=data["campaigns"],
            a=a,
            b=b,
            chosen=chosen,
            rows=rows,
        )

    # -- gateways ----------------------------------------------------------------------------------

    async def gateways(self, view: PageView) -> Response:
        query = view.request.query_params
        report = await read_gateways(self.ctx, env=view.env, query=query)
        types = sorted({kind for day in report.days for kind in day.sent_by_type})
        return self.render(
            "gateways.html",
            view=view,
            report=report,
            types=types,
            start=query.get("from") or report.days[0].day,
            end=query.get("to") or report.days[-1].day,
        )

    # -- CSV ---------------------------------------------------------------------------------------

    async def dispatch_csv(self, view: PageView) -> Response:
        return await exports.recipients_csv(
            self.ctx,
            env_id=view.env.id,
            dispatch_id=view.request.path_params["dispatch_id"],
            outcome=view.request.query_params.get("outcome"),
            timezone=view.zone,
        )

    async def campaign_csv(self, view: PageView) -> Response:
        raw = view.request.path_params["key"]
        _key(raw, "campaign key")
        query = view.request.query_params
        period = chosen_period(query, timezone=view.zone, now_ms=view.now_ms)
        grain = grain_of(query.get("grain"), since=period.since, until=period.until)
        return await campaign_figures(
            self.ctx, env=view.env, key=_key(raw, "campaign key"), since=period.since, until=period.until, grain=grain
        )

    def routes(self, page: Page, prefix: str) -> list[BaseRoute]:
        return [
            Route(prefix + "/gateways", page(self.gateways), methods=["GET"]),
            Route(prefix + "/compare", page(self.compare), methods=["GET"]),
            Route(prefix + "/dispatches/{dispatch_id}/recipients.csv", page(self.dispatch_csv), methods=["GET"]),
            Route(prefix + "/campaigns/{key}/figures.csv", page(self.campaign_csv), methods=["GET"]),
        ]
