"""The dashboard under ``/dashboard``: server-rendered pages over the admin API's data.

Every page needs a session (see ``magpie.dashboard.session``); every state-changing form is a
POST carrying a form token of its session, and answers with a redirect (303) to a page to GET:
a form sent twice (a double click, a reload, the back button) acts once and leads to the same
page. Pages read through ``Context.read`` (one read transaction on a reader thread); statistics
come from the hourly counts in ``store.stats``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode
from zoneinfo import ZoneInfo

import msgspec
import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from magpie.api.admin import admin_consent
from magpie.api.hackle import views
from magpie.api.http.context import Context
from magpie.api.http.failures import failure
from magpie.dashboard import i18n, present, preview, reports
from magpie.dashboard.broadcasts import BroadcastPages
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
from magpie.domain import messages
from magpie.domain.campaigns import parse_campaign
from magpie.domain.environment import effective
from magpie.domain.identity import DEVICE, USER
from magpie.errors import Forbidden, InvalidRequest, MagpieError, NotFound
from magpie.store import accounts, browse, campaigns, dispatches, events, profiles, stats
from magpie.store.conversions import campaign_experiment
from magpie.store.crypto import hash_secret
from magpie.store.db import Connection, Database

T = TypeVar("T")
_HERE = Path(__file__).parent
_FAVICON = _HERE / "static" / "favicon.ico"
_RANGES = {"24h": 1, "7d": 7, "30d": 30, "90d": 90}
_OUTCOMES = ("SENT", "FAILED", "UNKNOWN", "EXCLUDED", "PENDING")
_PAGE_SIZE = 20
_FIRST_DAY, _LAST_DAY = date(1970, 1, 2), date(9999, 12, 30)
_DUE_SHOWN = 200  # rows of the re-confirmation report drawn; the count says how many in all
# The largest form the dashboard accepts, enforced while reading like every body limit (``MagpieApp``).
FORM_MAX_BYTES = 64 * 1024
# Campaign images are previewed from their https URLs (see docs/security.md); plain http is not loaded.
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: https:; style-src 'self'; script-src 'self'; "
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
    # A POST's form, as claimed (``accounts.claim_form``), and what its result page shows once.
    form_key: str | None = None
    result: dict[str, Any] | None = None

    @property
    def zone(self) -> str:
        return self.env.timezone

    def url(self, path: str = "", **query: Any) -> str:
        base = f"/dashboard/{self.env.name}{path}"
        clean = {k: v for k, v in query.items() if v not in (None, "")}
        return base + ("?" + urlencode(clean) if clean else "")

    async def read(self, fn: Callable[[Connection], T]) -> T:
        result: T = await self.ctx.read(fn)
        return result

    def done_url(self, path: str = "", **query: Any) -> str:
        """The page a POST redirects to when it has something to show once (``Dashboard.shown``)."""
        return self.url(path, **query, done=self.form_key)


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
        # Korean (and every other text) as itself in JSON shown on pages, not as escapes.
        self.templates.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
        self.templates.filters["num"] = present.number
        self.templates.filters["pct"] = present.percent
        self.templates.filters["rate"] = present.rate
        self.templates.globals["plural"] = present.plural
        self.templates.globals["channel_labels"] = present.CHANNEL_LABELS
        self.templates.globals["type_labels"] = present.TYPE_LABELS
        self.templates.globals["gateway_labels"] = present.GATEWAY_LABELS
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
            lambda conn: accounts.session_live(conn, self.ctx.db, session_id=session.id, token_hash=session.token_hash)
        )
        return session if live else None

    async def shown(self, view: View) -> dict[str, Any] | None:
        """What the POST that redirected here left to show (``done=``), once, for this session only."""
        form_key = view.request.query_params.get("done", "")
        if not form_key:
            return None
        sealed = await _in_thread(
            self.ctx,
            lambda: accounts.take_form_payload(self.ctx.db, session_id=view.session.id, form_key=form_key[:64]),
        )
        if sealed is None:
            return None
        found: dict[str, Any] = msgspec.json.decode(self.ctx.cipher.decrypt(base64.b64decode(sealed)))
        return found

    async def _claim(self, request: Request, session: Session, form_id: str) -> str | None:
        """Claim a POST's form: its key, or ``None`` when the form was sent before (answered already)."""
        form_key = hashlib.sha256(f"{session.id}\0{form_id}\0{request.url.path}".encode()).hexdigest()
        earlier = await _in_thread(
            self.ctx, lambda: accounts.claim_form(self.ctx.db, session_id=session.id, form_key=form_key)
        )
        if earlier is not None:
            request.state.earlier = earlier
            return None
        return form_key

    async def _finish(self, view: View, response: Response | None) -> None:
        """Record where a POST led (a second send of its form goes there); a refused POST did nothing."""
        form_key = view.form_key
        if form_key is None:
            return
        location = response.headers.get("location") if response is not None else None
        sealed = None
        if view.result is not None and location is not None:
            sealed = base64.b64encode(self.ctx.cipher.encrypt(msgspec.json.encode(view.result).decode())).decode()
        await _in_thread(
            self.ctx,
            lambda: accounts.finish_form(self.ctx.db, form_key=form_key, location=location, payload=sealed),
        )

    def page(self, handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: require a session, resolve the environment, check CSRF on POST, map errors."""

        async def endpoint(request: Request) -> Response:
            view: View | None = None
            form_key: str | None = None
            try:
                session = await self._session(request)
                if session is None:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"/dashboard/login?next={quote(target)}", status_code=303)
                if request.method == "POST":
                    form = await _form(request)
                    form_id = session.form_id(form.get("csrf"))
                    if form_id is None:
                        raise Forbidden()
                    request.state.form = form
                    form_key = await self._claim(request, session, form_id)
                    if form_key is None:  # sent before: nothing again, to where the first send led
                        env_name = request.path_params.get("env")
                        back = request.state.earlier or (f"/dashboard/{env_name}/" if env_name else "/dashboard/")
                        return RedirectResponse(back, status_code=303)
                environments: list[accounts.Environment] = await self.ctx.read(
                    lambda conn: accounts.environments(conn, self.ctx.db)
                )
                if not environments:
                    raise NotFound("there is no environment yet: create one with `magpie env create`")
                name = request.path_params.get("env") or request.query_params.get("env")
                if name:
                    chosen = next((e for e in environments if e.name == name), None)
                else:
                    chosen, *_ = environments
                if chosen is None:
                    raise NotFound(f"no environment named '{name}'")
                view = View(
                    request=request,
                    ctx=self.ctx,
                    session=session,
                    environments=environments,
                    env=chosen,
                    form_key=form_key,
                )
                response = await handler(view)
                if view.form_key is not None:
                    await self._finish(view, response)
                return response
            except Exception as exc:
                if form_key is not None and isinstance(exc, MagpieError) and exc.status < 500:
                    # Refused before acting (not found, invalid, conflict): the form may be sent again.
                    await _in_thread(
                        self.ctx,
                        lambda: accounts.finish_form(self.ctx.db, form_key=form_key, location=None, payload=None),
                    )
                return self.error_page(exc, view)

        return endpoint

    # -- sign in and out -------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        nonce = secrets.token_urlsafe(18)
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
        found: accounts.AdminTokenInfo | None = None
        if token:
            token_hash = hash_secret(token)
            found = await self.ctx.read(
                lambda conn: accounts.live_admin_token(conn, self.ctx.db, token_hash=token_hash)
            )
        if found is None:
            # Throttled like every failed authentication; a valid token is never refused for others' failures.
            address = request.client.host if request.client else None
            limited = self.ctx.auth.failures.failed(address=address, credential=token)
            if limited is not None:
                refused = self.render(
                    "login.html",
                    status_code=limited.status,
                    request=request,
                    csrf=pre["n"],
                    next=next_url,
                    error="Too many failed sign-ins; try again in %(seconds)s s.",
                    error_values={"seconds": limited.retry_after},
                )
                refused.headers["retry-after"] = str(limited.retry_after)
                return refused
            response = self.render(
                "login.html",
                status_code=401,
                request=request,
                csrf=pre["n"],
                next=next_url,
                error="That admin token is not valid.",
            )
            return response
        actor = f"{found.name or 'admin'} ({found.prefix}…)"
        token_hash = hash_secret(token)
        session_id = await _in_thread(
            self.ctx, lambda: accounts.start_session(self.ctx.db, token_hash=token_hash, seconds=SESSION_SECONDS)
        )
        redirect = RedirectResponse(next_url, status_code=303)
        secure = request.url.scheme == "https"
        redirect.set_cookie(
            SESSION_COOKIE,
            new_session_cookie(self.signer, session_id=session_id, token_hash=token_hash, actor=actor),
            **cookie_flags(secure=secure, max_age=SESSION_SECONDS),
        )
        redirect.delete_cookie(LOGIN_COOKIE, path="/dashboard")
        return redirect

    async def logout(self, view: View) -> Response:
        await _in_thread(self.ctx, lambda: accounts.end_session(self.ctx.db, session_id=view.session.id))
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
        week_ago = now - 7 * stats.DAY_MS
        channel = _channel_param(view.request.query_params)

        def load(conn: Connection) -> dict[str, Any]:
            db, env_id = self.ctx.db, view.env.id
            info = _campaign_info(conn, db, env_id)
            keys: dict[str, list[int]] = {}
            for key, c in info.items():
                keys.setdefault(c["channel"], []).append(key)
            in_use = set(keys)
            # One read of the month's hourly counts serves every period and the chart: the environment's
            # own rows when they are the chosen channel's, else the sum of the channel's campaigns.
            since, until = month_ago, now + 1
            if not channel or in_use <= {channel}:
                rows = stats.series(conn, db, env_id=env_id, since=since, until=until)
            else:
                rows = stats.series_of(
                    conn, db, env_id=env_id, since=since, until=until, campaign_keys=keys.get(channel, [])
                )
            if in_use <= set(stats.CLICK_CHANNELS) or channel in stats.CLICK_CHANNELS:
                clickable = rows
            elif not channel:
                clickable_keys = [k for ch in stats.CLICK_CHANNELS for k in keys.get(ch, [])]
                clickable = stats.series_of(
                    conn, db, env_id=env_id, since=since, until=until, campaign_keys=clickable_keys, metric="SENT"
                )
            else:
                clickable = []

            def period(since: int) -> stats.Totals:
                return stats.mixed_totals(rows, clickable=clickable, since=since, until=now + 1)

            week = stats.per_campaign(conn, db, env_id=env_id, since=week_ago, until=now + 1)
            last_hour = stats.per_campaign(conn, db, env_id=env_id, since=now - stats.HOUR_MS, until=now + 1)
            return {
                "periods": {"Today": period(midnight), "7 days": period(week_ago), "30 days": period(month_ago)},
                "channels": stats.by_channel(week),
                "series": rows,
                "busiest": [
                    (key, week[key])
                    for key in sorted(
                        (k for k, t in week.items() if not channel or t.channel == channel),
                        key=lambda k: -week[k].requested,
                    )[:5]
                ],
                "info": info,
                "latest": browse.latest_dispatches(conn, db, env_id=env_id, channel=channel or None, limit=10),
                "work": browse.work_status(conn, db, env_id=env_id, now_ms=now),
                "last_hour": {
                    ch: t
                    for ch, t in stats.by_channel(last_hour).items()
                    if (not channel or ch == channel) and (t.failed or t.unknown)
                },
            }

        data = await view.read(load)
        chart = _chart(
            data["series"],
            since=month_ago,
            until=now,
            zone=view.zone,
            grain="day",
            clicks=channel in ("", *stats.CLICK_CHANNELS),
        )
        return self.render("overview.html", view=view, chart=chart, channel=channel, **data)

    # -- campaigns -------------------------------------------------------------------------------

    async def campaign_list(self, view: View) -> Response:
        query = view.request.query_params
        sort = query.get("sort", "key")
        text = query.get("q", "").strip().lower()
        status = query.get("status", "")
        channel = _channel_param(query)
        now = view.now_ms
        settings = effective(view.env.settings)

        def load(conn: Connection) -> list[dict[str, Any]]:
            db, env_id = self.ctx.db, view.env.id
            week = stats.per_campaign(conn, db, env_id=env_id, since=now - 7 * stats.DAY_MS, until=now + 1)
            rows = []
            for c in [views.campaign(c) for c in campaigns.list_campaigns(conn, db, env_id=env_id)]:
                c_channel = c.get("channel", "push")
                if status and c["status"] != status:
                    continue
                if channel and c_channel != channel:
                    continue
                if text and text not in c["name"].lower() and text != str(c["key"]) and text not in c["tags"]:
                    continue
                t = week.get(c["key"], stats.Totals(channel=c_channel))
                last = browse.last_dispatch_at(conn, db, env_id=env_id, campaign_key=c["key"])
                rows.append(
                    {
                        **c,
                        "channel": c_channel,
                        "channelLabel": present.channel_label(c),
                        "smsType": _sms_type(c, settings),
                        "providerLabel": present.provider_label(c, settings),
                        "week": t,
                        "lastSend": last,
                    }
                )
            return rows

        rows = await view.read(load)
        keys: dict[str, Callable[[dict[str, Any]], Any]] = {
            "key": lambda r: r["key"],
            "name": lambda r: r["name"].lower(),
            "status": lambda r: r["status"],
            "channel": lambda r: (r["channel"], r["key"]),
            "last": lambda r: -(r["lastSend"] or 0),
            "sent": lambda r: -r["week"].sent,
            "ctr": lambda r: -(r["week"].ctr if r["week"].ctr is not None else -1),
        }
        rows.sort(key=keys.get(sort, keys["key"]))
        return self.render(
            "campaigns.html",
            view=view,
            rows=rows,
            sort=sort,
            q=query.get("q", ""),
            status=status,
            channel=channel,
        )

    async def campaign(self, view: View) -> Response:
        key = _int_param(view.request.path_params["key"], "campaign key")
        query = view.request.query_params
        since, until, chosen = _range(query, view.zone, view.now_ms)
        grain = query.get("grain") or ("hour" if until - since <= 2 * stats.DAY_MS else "day")
        if grain not in ("hour", "day"):
            raise InvalidRequest("grain is hour or day")
        as_user = query.get("as", "").strip()[:256]

        def load(conn: Connection) -> dict[str, Any]:
            db, env_id = self.ctx.db, view.env.id
            definition = views.campaign(campaigns.get_campaign(conn, db, env_id=env_id, key=key))
            series = stats.series(conn, db, env_id=env_id, since=since, until=until, campaign_key=key)
            user: profiles.UserView | None = None
            if as_user:
                try:
                    user = profiles.user_view(conn, db, self.ctx.cipher, env_id=env_id, user_id=as_user)
                except NotFound:
                    user = None
            return {
                "c": definition,
                "totals": stats.totals_of(series, since=since, until=until, channel=definition.get("channel", "push")),
                "series": series,
                "latest": browse.latest_dispatches(conn, db, env_id=env_id, campaign_key=key, limit=10),
                "experiment": campaign_experiment(conn, db, env_id=env_id, key=key),
                "audit": browse.audit(conn, db, env_id=env_id, target=f"campaign:{key}"),
                "user": user,
            }

        data = await view.read(load)
        definition = data["c"]
        channel = definition.get("channel", "push")
        settings = effective(view.env.settings)
        campaign = parse_campaign({k: v for k, v in definition.items() if k not in ("createdAt", "updatedAt")})
        user: profiles.UserView | None = data.pop("user")
        shown = preview.render(
            campaign,
            settings,
            user_properties=user.properties if user is not None else None,
            user_id=user.user_id if user is not None else None,
        )
        caps = (
            present.caps_for(settings["frequencyCaps"], channel=channel, tags=list(campaign.tags))
            if campaign.is_marketing
            else []
        )
        file_form = {k: v for k, v in definition.items() if k not in ("createdAt", "updatedAt")}
        lang = i18n.request_language(view.request)
        return self.render(
            "campaign.html",
            view=view,
            chart=_chart(
                data["series"],
                since=since,
                until=until,
                zone=view.zone,
                grain=grain,
                clicks=channel in stats.CLICK_CHANNELS,
            ),
            grain=grain,
            range=chosen,
            since=since,
            until=until,
            preview=shown,
            as_user=as_user,
            as_user_missing=bool(as_user) and user is None,
            channel=channel,
            channel_label=present.channel_label(definition),
            provider_label=present.provider_label(definition, settings),
            audience=present.describe_audience(definition.get("audience", {}), lang=lang),
            caps=[present.describe_cap(c, lang=lang) for c in caps],
            night=messages.night_rule(channel=channel, kind=campaign.kind, purpose=campaign.purpose, settings=settings),
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
        campaigns.check_status_change(current=definition["status"], key=key)
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

        def load(conn: Connection) -> dict[str, Any]:
            db, env_id = self.ctx.db, view.env.id
            found = dispatches.dispatch_view(conn, db, env_id=env_id, dispatch_id=dispatch_id)
            return {
                "d": views.dispatch(found),
                "held": browse.held_until(conn, db, dispatch_id=found.dispatch_id),
                "campaign": _campaign_info(conn, db, env_id).get(found.campaign_key),
            }

        data = await view.read(load)
        d = data["d"]
        held: dict[int, int] = data["held"]
        listed = [
            {**r, "heldUntil": held.get(i) if r["outcome"] == "PENDING" else None}
            for i, r in enumerate(d["recipients"])
        ]
        recipients = [r for r in listed if not outcome or r["outcome"] == outcome]
        pages = max(1, -(-len(recipients) // _PAGE_SIZE))
        page = min(max(1, page), pages)
        shown = recipients[(page - 1) * _PAGE_SIZE : page * _PAGE_SIZE]
        phones: dict[str, str] = {}
        if d["channel"] != "push":
            user_ids = [r["userId"] for r in shown if r["userId"]]
            phones = await view.read(
                lambda conn: browse.masked_phones(
                    conn, self.ctx.db, self.ctx.cipher, env_id=view.env.id, user_ids=user_ids
                )
            )
        return self.render(
            "dispatch.html",
            view=view,
            d=d,
            campaign=data["campaign"],
            recipients=shown,
            phones=phones,
            held=len(held),
            release=min(held.values()) if held else None,
            outcome=outcome,
            page=page,
            pages=pages,
        )

    # -- users -----------------------------------------------------------------------------------

    async def users(self, view: View) -> Response:
        wanted = view.request.query_params.get("q", "").strip()
        if not wanted:
            return self.render("users.html", view=view, q="", u=None)

        def load(conn: Connection) -> dict[str, Any] | None:
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
                outcomes = browse.user_outcomes(conn, db, env_id=env_id, user_id=found["userId"])
            else:
                user_key = f"{DEVICE}:{wanted}"
                recent = views.rows(events.recent_events(conn, db, env_id=env_id, user_id=None, device_id=wanted))
                outcomes = []
            clicks = [e["insertId"] for e in recent if e["key"] == "$push_click"]
            # Recipients named by device id resolve to the user only at send time: their deliveries show them.
            seen = {(o["dispatchId"], o["idx"]) for o in outcomes}
            for d in browse.user_deliveries(conn, db, env_id=env_id, user_key=user_key):
                if (d["dispatchId"], d["recipientIdx"]) not in seen:
                    seen.add((d["dispatchId"], d["recipientIdx"]))
                    outcomes.append(
                        {
                            "dispatchId": d["dispatchId"],
                            "idx": d["recipientIdx"],
                            "outcome": d["outcome"],
                            "reason": d["reason"],
                            "at": d["createdAt"],
                            "campaignKey": d["campaignKey"],
                            "channel": d["channel"],
                            "deliveries": [d],
                        }
                    )
            outcomes.sort(key=lambda o: -o["at"])
            outcomes = outcomes[:20]
            # A recipient without an outcome yet may be held for the end of night time: say until when.
            for dispatch_id in {o["dispatchId"] for o in outcomes if not o["outcome"]}:
                held = browse.held_until(conn, db, dispatch_id=dispatch_id)
                for o in outcomes:
                    if o["dispatchId"] == dispatch_id and not o["outcome"]:
                        o["heldUntil"] = held.get(o["idx"])
            return {
                "user": found,
                "device": device,
                "events": recent,
                "attributed": browse.click_attribution(conn, db, env_id=env_id, insert_ids=clicks),
                "outcomes": outcomes,
                "campaigns": _campaign_info(conn, db, env_id),
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

    async def consent(self, view: View) -> Response:
        sent = await self.shown(view)  # after sending: what was sent, once
        query = view.request.query_params
        channel, within = query.get("channel", ""), query.get("withinDays", "") or "30"
        report = await admin_consent.due(self.ctx, env_id=view.env.id, channel=channel, within_days=within)

        def notices(conn: Connection) -> list[dict[str, Any]]:
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
            idempotency_key=f"dashboard:{view.form_key}",
        )
        view.result = sent
        return RedirectResponse(
            view.done_url("/consent", channel=form.get("channel", ""), withinDays=form.get("withinDays", "")),
            status_code=303,
        )

    # -- keys ------------------------------------------------------------------------------------

    async def keys(self, view: View) -> Response:
        shown = await self.shown(view)  # after creating a key: the key, once
        keys = await _in_thread(self.ctx, lambda: accounts.list_api_keys(self.ctx.db, environment=view.env.name))
        return self.render("keys.html", view=view, keys=keys, created=shown.get("key") if shown else None)

    async def key_create(self, view: View) -> Response:
        name = view.request.state.form.get("name", "").strip()[:128]
        key, _ = await _in_thread(
            self.ctx, lambda: accounts.create_api_key(self.ctx.db, environment=view.env.name, name=name)
        )
        view.result = {"key": key}  # shown once by the page redirected to, kept encrypted until then
        return RedirectResponse(view.done_url("/keys"), status_code=303)

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
            Route("/favicon.ico", _favicon, methods=["GET"]),
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
                    *BroadcastPages(self).routes(p),
                    *extra.routes(p, e),
                ],
            ),
        ]


async def _favicon(_: Request) -> Response:
    """The icon browsers ask every site for (pages link the SVG; this answers those that ask anyway)."""
    return Response(
        _FAVICON.read_bytes(), media_type="image/x-icon", headers={"cache-control": "public, max-age=86400"}
    )


def dashboard_routes(ctx: Context) -> list[BaseRoute]:
    return Dashboard(ctx).routes()


# -- helpers ---------------------------------------------------------------------------------------


async def _in_thread(ctx: Context, fn: Callable[[], T]) -> T:
    return await ctx.runtime.reader.call(fn)


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind the dashboard's forms send).

    Its size was bounded while it was read, to ``FORM_MAX_BYTES`` (``MagpieApp._body_limit``).
    """
    raw = await request.body()
    form: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True):
        form.setdefault(name, value)  # a repeated field counts once: its first value
    return form


def _channel_param(query: Any) -> str:
    """The ``channel`` filter of a page: push, kakao, sms, or '' for every channel."""
    channel = str(query.get("channel", ""))
    if channel and channel not in messages.CHANNELS:
        raise InvalidRequest(f"channel is one of {', '.join(messages.CHANNELS)}")
    return channel


def _sms_type(definition: dict[str, Any], settings: dict[str, Any]) -> str | None:
    """For SMS, the type the message travels as with sample data when it is not plain SMS (``LMS``, ``MMS``)."""
    if definition.get("channel") != "sms":
        return None
    campaign = parse_campaign({k: v for k, v in definition.items() if k not in ("createdAt", "updatedAt")})
    kind = preview.render(campaign, settings).get("kind")
    return str(kind) if kind in ("LMS", "MMS") else None


def _campaign_info(conn: Connection, db: Database, env_id: int) -> dict[int, dict[str, Any]]:
    """Each campaign's name, channel and how to call it, by key (for tables naming campaigns)."""
    found: dict[int, dict[str, Any]] = {}
    for row in campaigns.list_campaigns(conn, db, env_id=env_id):
        c = row.definition
        found[int(c["key"])] = {
            "name": c["name"],
            "channel": c.get("channel", "push"),
            "label": present.channel_label(c),
        }
    return found


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/dashboard") and not value.startswith("//"):
        return value
    return "/dashboard/"


def _int_param(raw: str, name: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
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
        # Days any time zone turns into epoch milliseconds both engines keep (the statistics API's range).
        if start < _FIRST_DAY or end > _LAST_DAY:
            raise InvalidRequest(f"from and to are dates from {_FIRST_DAY} to {_LAST_DAY}")
        if end < start or (end - start).days > 366:
            raise InvalidRequest("to must be on or after from, at most a year later")
        since = int(datetime.combine(start, datetime.min.time(), tz).timestamp() * 1000)
        until = int(datetime.combine(end + timedelta(days=1), datetime.min.time(), tz).timestamp() * 1000)
        return since, until, "custom"
    if chosen not in _RANGES:
        chosen = "7d"
    return now_ms - _RANGES[chosen] * stats.DAY_MS, now_ms + 1, chosen


def _chart(
    rows: list[tuple[int, str, int]], *, since: int, until: int, zone: str, grain: str, clicks: bool = True
) -> dict[str, Any]:
    """Chart.js data: one label per hour or local day of the range, sent / failed / unknown / excluded, and
    unique clicks where messages can be clicked (``clicks``; None otherwise)."""
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
    series = {name: [0] * len(labels) for name in ("sent", "failed", "unknown", "excluded", "clicks")}
    for hour, metric, n in rows:
        slot = index.get(hour if grain == "hour" else datetime.fromtimestamp(hour / 1000, tz).date())
        if slot is None:
            continue
        outcome, _, _ = metric.partition(":")
        name = outcome.lower()
        if metric == "UNIQUE_CLICK":
            name = "clicks"
        if name in series:
            series[name][slot] += n
    return {"labels": labels, **series, "clicks": series["clicks"] if clicks else None}
