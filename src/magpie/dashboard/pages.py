"""The dashboard under ``/dashboard``: server-rendered pages over the admin API's data.

Every page needs a session (see ``magpie.dashboard.session``); every state-changing form is a
POST carrying the session's CSRF token. Pages read through ``Context.read`` (one read
transaction on a reader thread); statistics come from the hourly counts in ``store.stats``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode
from zoneinfo import ZoneInfo

import msgspec
import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape
from liquid.exceptions import LiquidError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from magpie.api import admin_consent, views
from magpie.api.context import Context
from magpie.api.failures import failure
from magpie.dashboard import i18n, present, reports
from magpie.dashboard.session import (
    LOGIN_COOKIE,
    LOGIN_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Session,
    Signer,
    cookie_flags,
    new_session_cookie,
    read_session,
)
from magpie.domain import delivery
from magpie.domain.campaigns import parse_campaign
from magpie.domain.environment import effective
from magpie.domain.identity import DEVICE, USER
from magpie.errors import Forbidden, InvalidRequest, NotFound
from magpie.store import accounts, browse, campaigns, dispatches, events, profiles, stats
from magpie.store.crypto import hash_secret

T = TypeVar("T")
_HERE = Path(__file__).parent
_RANGES = {"24h": 1, "7d": 7, "30d": 30, "90d": 90}
_OUTCOMES = ("SENT", "FAILED", "UNKNOWN", "EXCLUDED", "PENDING")
_PAGE_SIZE = 20
_DUE_SHOWN = 200  # rows of the re-confirmation report drawn; the count says how many in all
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: https: http:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass
class View:
    """What a page handler gets: the request, the signed-in session and the chosen environment."""

    request: Request
    ctx: Context
    session: Session
    environments: list[accounts.Environment]
    env: accounts.Environment
    now_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def zone(self) -> str:
        return self.env.timezone

    def url(self, path: str = "", **query: Any) -> str:
        base = f"/dashboard/{self.env.name}{path}"
        clean = {k: v for k, v in query.items() if v not in (None, "")}
        return base + ("?" + urlencode(clean) if clean else "")

    async def read(self, fn: Callable[[Any], Any]) -> Any:
        return await self.ctx.read(fn)


PageHandler = Callable[[View], Awaitable[Response]]


class Dashboard:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.templates = Environment(
            loader=FileSystemLoader(str(_HERE / "templates")),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["num"] = present.number
        self.templates.filters["pct"] = present.percent
        self.templates.filters["token"] = present.mask_token
        i18n.install(self.templates)
        self._signer: Signer | None = None

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = Signer(self.ctx.cipher.key)
        return self._signer

    def render(self, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        view: View | None = values.get("view")
        zone = view.zone if view is not None else "UTC"
        values.setdefault("when", lambda ms, fmt="%Y-%m-%d %H:%M": present.local_time(ms, zone, fmt))
        html = self.templates.get_template(name).render(**values)
        return HTMLResponse(html, status_code=status_code, headers=_SECURITY_HEADERS)

    def error_page(self, exc: BaseException, view: View | None = None) -> HTMLResponse:
        """An error as a page, with the status, code and message the API would answer."""
        answer = failure(exc)
        return self.render("error.html", status_code=answer.status, view=view, code=answer.code, message=answer.message)

    async def _session(self, request: Request) -> Session | None:
        session = read_session(self.signer, request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        live = await self.ctx.read(
            lambda conn: self.ctx.db.fetchone(
                conn, "SELECT 1 FROM admin_tokens WHERE token_hash = ? AND revoked_at IS NULL", (session.token_hash,)
            )
        )
        return session if live else None

    def page(self, handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: require a session, resolve the environment, check CSRF on POST, map errors."""

        async def endpoint(request: Request) -> Response:
            view: View | None = None
            try:
                session = await self._session(request)
                if session is None:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"/dashboard/login?next={quote(target)}", status_code=303)
                if request.method == "POST":
                    form = await _form(request)
                    if not session.csrf_ok(form.get("csrf")):
                        raise Forbidden()
                    request.state.form = form
                environments = await self.ctx.read(lambda conn: _environments(conn, self.ctx))
                if not environments:
                    raise NotFound("there is no environment yet: create one with `magpie env create`")
                name = request.path_params.get("env") or request.query_params.get("env")
                chosen = next((e for e in environments if e.name == name), None) if name else environments[0]
                if chosen is None:
                    raise NotFound(f"no environment named '{name}'")
                view = View(request=request, ctx=self.ctx, session=session, environments=environments, env=chosen)
                return await handler(view)
            except Exception as exc:
                return self.error_page(exc, view)

        return endpoint

    # -- sign in and out -------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        nonce = hash_secret(str(time.time_ns()))[:24]
        response = self.render(
            "login.html", request=request, csrf=nonce, next=_safe_next(request.query_params.get("next")), error=None
        )
        response.set_cookie(
            LOGIN_COOKIE,
            self.signer.dumps({"n": nonce}, ttl=LOGIN_SECONDS),
            **cookie_flags(secure=request.url.scheme == "https", max_age=LOGIN_SECONDS),
        )
        return response

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        pre = self.signer.loads(request.cookies.get(LOGIN_COOKIE))
        next_url = _safe_next(form.get("next"))
        if pre is None or pre.get("n") != form.get("csrf"):
            return self.error_page(Forbidden("The sign-in form expired or was not sent by this browser; reload it"))
        token = form.get("token", "").strip()
        row = None
        if token:
            token_hash = hash_secret(token)
            row = await self.ctx.read(
                lambda conn: self.ctx.db.fetchone(
                    conn,
                    "SELECT name, prefix FROM admin_tokens WHERE token_hash = ? AND revoked_at IS NULL",
                    (token_hash,),
                )
            )
        if row is None:
            response = self.render(
                "login.html",
                status_code=401,
                request=request,
                csrf=pre["n"],
                next=next_url,
                error="That admin token is not valid.",
            )
            return response
        actor = f"{row[0] or 'admin'} ({row[1]}…)"
        redirect = RedirectResponse(next_url, status_code=303)
        secure = request.url.scheme == "https"
        redirect.set_cookie(
            SESSION_COOKIE,
            new_session_cookie(self.signer, token_hash=hash_secret(token), actor=actor),
            **cookie_flags(secure=secure, max_age=SESSION_SECONDS),
        )
        redirect.delete_cookie(LOGIN_COOKIE, path="/dashboard")
        return redirect

    async def logout(self, view: View) -> Response:
        response = RedirectResponse("/dashboard/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/dashboard")
        return response

    async def home(self, view: View) -> Response:
        return RedirectResponse(view.url("/"), status_code=303)

    # -- overview --------------------------------------------------------------------------------

    async def overview(self, view: View) -> Response:
        zone = ZoneInfo(view.zone)
        now = view.now_ms
        local_now = datetime.fromtimestamp(now / 1000, zone)
        midnight = int(datetime.combine(local_now.date(), datetime.min.time(), zone).timestamp() * 1000)
        month_ago = now - 30 * stats.DAY_MS

        def load(conn: Any) -> dict[str, Any]:
            db, env_id = self.ctx.db, view.env.id
            # One read of the month's hourly counts serves every period, the chart and the alerts.
            series = stats.series(conn, db, env_id=env_id, since=month_ago, until=now + 1)
            periods = {
                "Today": stats.totals_of(series, since=midnight, until=now + 1),
                "7 days": stats.totals_of(series, since=now - 7 * stats.DAY_MS, until=now + 1),
                "30 days": stats.totals_of(series, since=month_ago, until=now + 1),
            }
            busiest = stats.per_campaign(conn, db, env_id=env_id, since=now - 7 * stats.DAY_MS, until=now + 1)
            names = {
                c["key"]: c["name"]
                for c in [views.campaign(c) for c in campaigns.list_campaigns(conn, db, env_id=env_id)]
            }
            last_hour = stats.totals_of(series, since=now - stats.HOUR_MS, until=now + 1)
            return {
                "periods": periods,
                "series": series,
                "busiest": sorted(busiest.items(), key=lambda kv: -kv[1].requested)[:5],
                "names": names,
                "latest": browse.latest_dispatches(conn, db, env_id=env_id, limit=10),
                "work": browse.work_status(conn, db, env_id=env_id, now_ms=now),
                "failing": last_hour.failed,
            }

        data = await view.read(load)
        chart = _chart(data["series"], since=month_ago, until=now, zone=view.zone, grain="day")
        return self.render("overview.html", view=view, chart=chart, **data)

    # -- campaigns -------------------------------------------------------------------------------

    async def campaign_list(self, view: View) -> Response:
        query = view.request.query_params
        sort = query.get("sort", "key")
        text = query.get("q", "").strip().lower()
        status = query.get("status", "")
        now = view.now_ms

        def load(conn: Any) -> list[dict[str, Any]]:
            db, env_id = self.ctx.db, view.env.id
            week = stats.per_campaign(conn, db, env_id=env_id, since=now - 7 * stats.DAY_MS, until=now + 1)
            rows = []
            for c in [views.campaign(c) for c in campaigns.list_campaigns(conn, db, env_id=env_id)]:
                if status and c["status"] != status:
                    continue
                if text and text not in c["name"].lower() and text != str(c["key"]) and text not in c["tags"]:
                    continue
                t = week.get(c["key"], stats.Totals())
                last = browse.last_dispatch_at(conn, db, env_id=env_id, campaign_key=c["key"])
                rows.append({**c, "week": t, "lastSend": last})
            return rows

        rows = await view.read(load)
        keys: dict[str, Callable[[dict[str, Any]], Any]] = {
            "key": lambda r: r["key"],
            "name": lambda r: r["name"].lower(),
            "status": lambda r: r["status"],
            "last": lambda r: -(r["lastSend"] or 0),
            "sent": lambda r: -r["week"].sent,
            "ctr": lambda r: -r["week"].ctr,
        }
        rows.sort(key=keys.get(sort, keys["key"]))
        return self.render("campaigns.html", view=view, rows=rows, sort=sort, q=query.get("q", ""), status=status)

    async def campaign(self, view: View) -> Response:
        key = _int_param(view.request.path_params["key"], "campaign key")
        query = view.request.query_params
        since, until, chosen = _range(query, view.zone, view.now_ms)
        grain = query.get("grain") or ("hour" if until - since <= 2 * stats.DAY_MS else "day")
        if grain not in ("hour", "day"):
            raise InvalidRequest("grain is hour or day")

        def load(conn: Any) -> dict[str, Any]:
            db, env_id = self.ctx.db, view.env.id
            definition = views.campaign(campaigns.get_campaign(conn, db, env_id=env_id, key=key))
            series = stats.series(conn, db, env_id=env_id, since=since, until=until, campaign_key=key)
            return {
                "c": definition,
                "totals": stats.totals_of(series, since=since, until=until),
                "series": series,
                "latest": browse.latest_dispatches(conn, db, env_id=env_id, campaign_key=key, limit=10),
                "audit": browse.audit(conn, db, env_id=env_id, target=f"campaign:{key}"),
            }

        data = await view.read(load)
        definition = data["c"]
        settings = effective(view.env.settings)
        preview = _preview(definition, settings)
        file_form = {k: v for k, v in definition.items() if k not in ("createdAt", "updatedAt")}
        return self.render(
            "campaign.html",
            view=view,
            chart=_chart(data["series"], since=since, until=until, zone=view.zone, grain=grain),
            grain=grain,
            range=chosen,
            since=since,
            until=until,
            preview=preview,
            audience=present.describe_audience(definition.get("audience", {})),
            caps=[present.describe_cap(c) for c in settings["frequencyCaps"]],
            settings=settings,
            yaml_text=yaml.safe_dump(file_form, allow_unicode=True, sort_keys=False),
            **data,
        )

    async def status_confirm(self, view: View) -> Response:
        key = _int_param(view.request.path_params["key"], "campaign key")
        target = view.request.query_params.get("to", "")
        if target not in ("ACTIVE", "PAUSED"):
            raise InvalidRequest("to must be ACTIVE or PAUSED")
        definition = await view.read(
            lambda conn: views.campaign(campaigns.get_campaign(conn, self.ctx.db, env_id=view.env.id, key=key))
        )
        return self.render("confirm_status.html", view=view, c=definition, to=target)

    async def status_change(self, view: View) -> Response:
        key = _int_param(view.request.path_params["key"], "campaign key")
        target = view.request.state.form.get("to", "")
        await _in_thread(
            self.ctx,
            lambda: campaigns.set_campaign_status(
                self.ctx.db, env_id=view.env.id, key=key, status=target, actor=view.session.actor
            ),
        )
        return RedirectResponse(view.url(f"/campaigns/{key}"), status_code=303)

    # -- dispatches ------------------------------------------------------------------------------

    async def dispatch(self, view: View) -> Response:
        dispatch_id = view.request.path_params["dispatch_id"]
        query = view.request.query_params
        outcome = query.get("outcome", "")
        if outcome and outcome not in _OUTCOMES:
            raise InvalidRequest(f"outcome is one of {', '.join(_OUTCOMES)}")
        page = _int_param(query.get("page", "1"), "page")
        data = await view.read(
            lambda conn: views.dispatch(
                dispatches.dispatch_view(conn, self.ctx.db, env_id=view.env.id, dispatch_id=dispatch_id)
            )
        )
        recipients = [r for r in data["recipients"] if not outcome or r["outcome"] == outcome]
        pages = max(1, -(-len(recipients) // _PAGE_SIZE))
        page = min(max(1, page), pages)
        shown = recipients[(page - 1) * _PAGE_SIZE : page * _PAGE_SIZE]
        return self.render(
            "dispatch.html", view=view, d=data, recipients=shown, outcome=outcome, page=page, pages=pages
        )

    # -- users -----------------------------------------------------------------------------------

    async def users(self, view: View) -> Response:
        wanted = view.request.query_params.get("q", "").strip()
        if not wanted:
            return self.render("users.html", view=view, q="", u=None)

        def load(conn: Any) -> dict[str, Any] | None:
            db, env_id = self.ctx.db, view.env.id
            found: dict[str, Any] | None = None
            device: dict[str, Any] | None = None
            try:
                found = views.row(profiles.user_view(conn, db, self.ctx.cipher, env_id=env_id, user_id=wanted))
            except NotFound:
                try:
                    device = views.device(
                        profiles.device_view(conn, db, self.ctx.cipher, env_id=env_id, device_id=wanted)
                    )
                except NotFound:
                    return None
                found = device.get("user")
            if found is not None:
                user_key = f"{USER}:{found['userId']}"
                recent = views.rows(events.recent_events(conn, db, env_id=env_id, user_id=found["userId"]))
            else:
                user_key = f"{DEVICE}:{wanted}"
                recent = views.rows(events.recent_events(conn, db, env_id=env_id, user_id=None, device_id=wanted))
            clicks = [e["insertId"] for e in recent if e["key"] == "$push_click"]
            return {
                "user": found,
                "device": device,
                "events": recent,
                "attributed": browse.click_attribution(conn, db, env_id=env_id, insert_ids=clicks),
                "deliveries": browse.user_deliveries(conn, db, env_id=env_id, user_key=user_key),
            }

        data = await view.read(load)
        return self.render("users.html", view=view, q=wanted, u=data)

    # -- sandbox inbox ---------------------------------------------------------------------------

    async def inbox(self, view: View) -> Response:
        who = view.request.query_params.get("user", "").strip()
        user_key = f"{USER}:{who}" if who else None
        messages = await view.read(
            lambda conn: browse.inbox(conn, self.ctx.db, env_id=view.env.id, user_key=user_key, limit=50)
        )
        return self.render("inbox.html", view=view, messages=messages, who=who)

    # -- the two-year consent re-confirmation ----------------------------------------------------

    async def consent(self, view: View, *, sent: dict[str, Any] | None = None) -> Response:
        # After sending, the form's choices (the page was posted, not asked with a query).
        query = view.request.state.form if sent is not None else view.request.query_params
        channel, within = query.get("channel", ""), query.get("withinDays", "") or "30"
        report = await admin_consent.due(self.ctx, env_id=view.env.id, channel=channel, within_days=within)

        def notices(conn: Any) -> list[dict[str, Any]]:
            """ACTIVE informational campaigns: what the notice can be sent through."""
            found = []
            for row in campaigns.list_campaigns(conn, self.ctx.db, env_id=view.env.id):
                campaign = parse_campaign(row.definition)
                if campaign.status == "ACTIVE" and not campaign.is_marketing:
                    found.append({"key": campaign.key, "name": campaign.name, "channel": campaign.channel})
            return found

        return self.render(
            "consent.html",
            view=view,
            due=report["due"][:_DUE_SHOWN],
            count=report["count"],
            channel=channel,
            within=within,
            notices=await view.read(notices),
            sent=sent,
        )

    async def consent_send(self, view: View) -> Response:
        form = view.request.state.form
        sent = await admin_consent.notify(
            self.ctx,
            env_id=view.env.id,
            key=_int_param(form.get("campaign", ""), "campaign"),
            channel=form.get("channel") or None,
            within_days=form.get("withinDays") or None,
        )
        return await self.consent(view, sent=sent)

    # -- keys ------------------------------------------------------------------------------------

    async def keys(self, view: View, *, created: str | None = None) -> Response:
        keys = await _in_thread(self.ctx, lambda: accounts.list_api_keys(self.ctx.db, environment=view.env.name))
        return self.render("keys.html", view=view, keys=keys, created=created)

    async def key_create(self, view: View) -> Response:
        name = view.request.state.form.get("name", "").strip()[:128]
        key, _ = await _in_thread(
            self.ctx, lambda: accounts.create_api_key(self.ctx.db, environment=view.env.name, name=name)
        )
        return await self.keys(view, created=key)

    async def key_revoke_confirm(self, view: View) -> Response:
        prefix = view.request.path_params["prefix"]
        keys = await _in_thread(self.ctx, lambda: accounts.list_api_keys(self.ctx.db, environment=view.env.name))
        key = next((k for k in keys if k.prefix == prefix), None)
        if key is None:
            raise NotFound(f"no API key {prefix} in this environment")
        return self.render("confirm_revoke.html", view=view, key=key)

    async def key_revoke(self, view: View) -> Response:
        prefix = view.request.path_params["prefix"]
        keys = await _in_thread(self.ctx, lambda: accounts.list_api_keys(self.ctx.db, environment=view.env.name))
        if not any(k.prefix == prefix for k in keys):
            raise NotFound(f"no API key {prefix} in this environment")
        await _in_thread(self.ctx, lambda: accounts.revoke_api_key(self.ctx.db, key_or_prefix=prefix))
        self.ctx.auth.clear()
        return RedirectResponse(view.url("/keys"), status_code=303)

    # -- routes ----------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        p = self.page
        e = "/{env}"
        extra = reports.Reports(self.ctx, self.render)
        return [
            Mount(
                "/dashboard",
                routes=[
                    Mount("/static", app=StaticFiles(directory=str(_HERE / "static")), name="dashboard-static"),
                    *i18n.routes(),
                    Route("/login", self.login_form, methods=["GET"]),
                    Route("/login", self.login, methods=["POST"]),
                    Route("/logout", p(self.logout), methods=["POST"]),
                    Route("/", p(self.home), methods=["GET"]),
                    Route(e + "/", p(extra.comparing(self.overview)), methods=["GET"]),
                    Route(e, p(self.home), methods=["GET"]),
                    Route(e + "/campaigns", p(self.campaign_list), methods=["GET"]),
                    Route(e + "/campaigns/{key}", p(extra.comparing(self.campaign, campaign=True)), methods=["GET"]),
                    Route(e + "/campaigns/{key}/status", p(self.status_confirm), methods=["GET"]),
                    Route(e + "/campaigns/{key}/status", p(self.status_change), methods=["POST"]),
                    Route(e + "/dispatches/{dispatch_id}", p(self.dispatch), methods=["GET"]),
                    Route(e + "/users", p(self.users), methods=["GET"]),
                    Route(e + "/inbox", p(self.inbox), methods=["GET"]),
                    Route(e + "/consent", p(self.consent), methods=["GET"]),
                    Route(e + "/consent", p(self.consent_send), methods=["POST"]),
                    Route(e + "/keys", p(self.keys), methods=["GET"]),
                    Route(e + "/keys", p(self.key_create), methods=["POST"]),
                    Route(e + "/keys/{prefix}/revoke", p(self.key_revoke_confirm), methods=["GET"]),
                    Route(e + "/keys/{prefix}/revoke", p(self.key_revoke), methods=["POST"]),
                    *extra.routes(p, e),
                ],
            )
        ]


def dashboard_routes(ctx: Context) -> list[BaseRoute]:
    return Dashboard(ctx).routes()


# -- helpers ---------------------------------------------------------------------------------------


async def _in_thread(ctx: Context, fn: Callable[[], T]) -> T:
    return await ctx.runtime.reader.call(fn)


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind the dashboard's forms send)."""
    raw = await request.body()
    if len(raw) > 64 * 1024:
        raise InvalidRequest("the form is too large")
    parsed = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _environments(conn: Any, ctx: Context) -> list[accounts.Environment]:
    rows = ctx.db.fetchall(conn, "SELECT id, name, timezone, settings, created_at FROM environments ORDER BY id")
    return [
        accounts.Environment(id=r[0], name=r[1], timezone=r[2], settings=msgspec.json.decode(r[3]), created_at=r[4])
        for r in rows
    ]


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/dashboard") and not value.startswith("//"):
        return value
    return "/dashboard/"


def _int_param(raw: str, name: str) -> int:
    if not raw.isdigit() or len(raw) > 12:
        raise InvalidRequest(f"{name} must be a positive number")
    return int(raw)


def _range(query: Any, zone: str, now_ms: int) -> tuple[int, int, str]:
    """``[since, until)`` from ``range`` (24h, 7d, 30d, 90d) or ``from``/``to`` dates in the zone."""
    chosen = query.get("range", "")
    if query.get("from") or query.get("to"):
        tz = ZoneInfo(zone)
        try:
            start = date.fromisoformat(query.get("from") or "")
            end = date.fromisoformat(query.get("to") or "")
        except ValueError as exc:
            raise InvalidRequest("from and to are dates (YYYY-MM-DD)") from exc
        if end < start or (end - start).days > 366:
            raise InvalidRequest("to must be on or after from, at most a year later")
        since = int(datetime.combine(start, datetime.min.time(), tz).timestamp() * 1000)
        until = int(datetime.combine(end + timedelta(days=1), datetime.min.time(), tz).timestamp() * 1000)
        return since, until, "custom"
    if chosen not in _RANGES:
        chosen = "7d"
    return now_ms - _RANGES[chosen] * stats.DAY_MS, now_ms + 1, chosen


def _chart(rows: list[tuple[int, str, int]], *, since: int, until: int, zone: str, grain: str) -> dict[str, Any]:
    """Chart.js data: one label per hour or local day of the range, sent / failed / excluded / clicks."""
    tz = ZoneInfo(zone)
    labels: list[str] = []
    index: dict[Any, int] = {}
    if grain == "hour":
        hour = stats.hour_of(since)
        while hour < until:
            index[hour] = len(labels)
            labels.append(datetime.fromtimestamp(hour / 1000, tz).strftime("%m-%d %H:00"))
            hour += stats.HOUR_MS
    else:
        day = datetime.fromtimestamp(since / 1000, tz).date()
        last = datetime.fromtimestamp((until - 1) / 1000, tz).date()
        while day <= last:
            index[day] = len(labels)
            labels.append(day.strftime("%m-%d"))
            day += timedelta(days=1)
    series = {name: [0] * len(labels) for name in ("sent", "failed", "excluded", "clicks")}
    for hour, metric, n in rows:
        slot = index.get(hour if grain == "hour" else datetime.fromtimestamp(hour / 1000, tz).date())
        if slot is None:
            continue
        name = metric.partition(":")[0].lower()
        if metric == "UNIQUE_CLICK":
            name = "clicks"
        if name in series:
            series[name][slot] += n
    return {"labels": labels, **series}


def _preview(definition: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The message as a recipient sees it, with sample personalization and the marketing rules."""
    campaign = parse_campaign({k: v for k, v in definition.items() if k not in ("createdAt", "updatedAt")})
    sample_api = {"productNumber": "A-1024", "n": 3}
    sample_user = {"name": "김민지"}
    sample = {"api_properties": sample_api, "user_properties": sample_user, "user": {"id": "user-1024"}}
    try:
        message = delivery.render(
            campaign=campaign,
            api_properties=sample_api,
            user_properties=sample_user,
            user_id="user-1024",
            device_id="device-1024",
            settings=settings,
        )
    except LiquidError as exc:  # a template that fails on the sample data: show why instead of the page failing
        return {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__, "sample": sample}
    return {
        "title": message.title,
        "body": message.body,
        "link": message.link,
        "imageUrl": definition.get("message", {}).get("imageUrl"),
        "sample": sample,
    }
