"""Dashboard pages for broadcasts: scheduled campaigns with their reachable counts, test send and
"send now", and each occurrence's progress (refreshed without a reload) with pause, resume and cancel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from magpie.api.admin.admin_broadcasts import occurrence_view, progress_view, reach_view
from magpie.api.http.context import Context
from magpie.domain.campaigns import parse_campaign
from magpie.domain.schedules import next_slot
from magpie.errors import InvalidRequest
from magpie.store import broadcasts, campaigns
from magpie.store.accounts import Environment


class View(Protocol):
    """What these pages use of the dashboard's ``View`` (``magpie.dashboard.pages``)."""

    request: Request
    env: Environment
    now_ms: int

    @property
    def zone(self) -> str: ...

    def url(self, path: str = "", **query: Any) -> str: ...

    async def read(self, fn: Callable[[Any], Any]) -> Any: ...


class Dashboard(Protocol):
    """What these pages use of the ``Dashboard``: its context and its templates."""

    ctx: Context

    def render(self, name: str, status_code: int = 200, **values: Any) -> HTMLResponse: ...


PageWrapper = Callable[[Callable[[Any], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]


def _int(raw: str, what: str) -> int:
    if not raw.isdigit() or len(raw) > 12:
        raise InvalidRequest(f"{what} must be a positive number")
    return int(raw)


class BroadcastPages:
    """The broadcast pages, drawn and guarded by the dashboard's own plumbing."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.ctx = dashboard.ctx

    async def index(self, view: View) -> Response:
        db, env_id = self.ctx.db, view.env.id

        def load(conn: Any) -> dict[str, Any]:
            scheduled = []
            for row in campaigns.list_campaigns(conn, db, env_id=env_id):
                definition = row.definition
                if "schedule" not in definition:
                    continue
                campaign = parse_campaign(definition)
                upcoming = (
                    next_slot(campaign.schedule, timezone=view.zone, after_ms=view.now_ms)
                    if campaign.schedule is not None and campaign.status == "ACTIVE"
                    else None
                )
                scheduled.append({"c": definition, "next": upcoming})
            recent = [occurrence_view(o) for o in broadcasts.list_occurrences(conn, db, env_id=env_id, limit=50)]
            return {"scheduled": scheduled, "occurrences": recent}

        data = await view.read(load)
        return self.dashboard.render("broadcasts.html", view=view, **data)

    async def campaign(self, view: View) -> Response:
        key = _int(view.request.path_params["key"], "the campaign key")
        db, env_id = self.ctx.db, view.env.id
        row = await view.read(lambda conn: campaigns.get_campaign(conn, db, env_id=env_id, key=key))
        campaign = parse_campaign(row.definition)
        reader = self.ctx.runtime.reader
        reach = await reader.call(
            lambda: broadcasts.reach(reader.read_here, db, env_id=env_id, campaign=campaign, now_ms=view.now_ms)
        )
        occurrences = await view.read(
            lambda conn: broadcasts.list_occurrences(conn, db, env_id=env_id, campaign_key=key, limit=50)
        )
        upcoming = (
            next_slot(campaign.schedule, timezone=view.zone, after_ms=view.now_ms)
            if campaign.schedule is not None
            else None
        )
        return self.dashboard.render(
            "broadcast.html",
            view=view,
            c=row.definition,
            reach=reach_view(reach),
            next=upcoming,
            occurrences=[occurrence_view(o) for o in occurrences],
            max_test=broadcasts.MAX_TEST_USERS,
        )

    async def test_send(self, view: View) -> Response:
        key = _int(view.request.path_params["key"], "the campaign key")
        raw = view.request.state.form.get("users", "")
        users = [u.strip() for u in raw.replace(",", "\n").splitlines() if u.strip()]
        if not 1 <= len(users) <= broadcasts.MAX_TEST_USERS:
            raise InvalidRequest(f"a test send names 1 to {broadcasts.MAX_TEST_USERS} user ids")
        db, env_id = self.ctx.db, view.env.id
        row = await view.read(lambda conn: campaigns.get_campaign(conn, db, env_id=env_id, key=key))
        occurrence_id = await self.ctx.writer.submit(
            broadcasts.TestSend(
                env_id=env_id, campaign_key=key, channel=parse_campaign(row.definition).channel, user_ids=users
            )
        )
        self.ctx.wake_workers()
        return RedirectResponse(view.url(f"/occurrences/{occurrence_id}"), status_code=303)

    async def send_now(self, view: View) -> Response:
        key = _int(view.request.path_params["key"], "the campaign key")
        db, env_id = self.ctx.db, view.env.id
        row = await view.read(lambda conn: campaigns.get_campaign(conn, db, env_id=env_id, key=key))
        campaign = parse_campaign(row.definition)
        if campaign.status != "ACTIVE":
            raise InvalidRequest(f"campaign {key} is {campaign.status}: only an ACTIVE campaign is sent")
        occurrence_id = await self.ctx.writer.submit(
            broadcasts.CreateOccurrence(
                env_id=env_id,
                campaign_key=key,
                slot_ms=view.now_ms,
                channel=campaign.channel,
                kind=broadcasts.OccurrenceKind.NOW,
            )
        )
        if occurrence_id is None:
            raise InvalidRequest("an occurrence of this campaign was started at the same moment; try again")
        return RedirectResponse(view.url(f"/occurrences/{occurrence_id}"), status_code=303)

    async def _progress(self, view: View) -> dict[str, Any]:
        occurrence_id = _int(view.request.path_params["occurrence_id"], "the occurrence id")
        found = await view.read(
            lambda conn: broadcasts.occurrence_progress(
                conn, self.ctx.db, env_id=view.env.id, occurrence_id=occurrence_id, now_ms=view.now_ms
            )
        )
        return progress_view(found)

    async def occurrence(self, view: View) -> Response:
        data = await self._progress(view)
        return self.dashboard.render("occurrence.html", view=view, o=data["occurrence"], p=data["progress"])

    async def occurrence_json(self, view: View) -> Response:
        """What the occurrence page polls to refresh its figures."""
        return JSONResponse(await self._progress(view), headers={"cache-control": "no-store"})

    async def control(self, view: View) -> Response:
        occurrence_id = _int(view.request.path_params["occurrence_id"], "the occurrence id")
        action = view.request.path_params["action"]
        try:
            control = broadcasts.Control(action)
        except ValueError:
            raise InvalidRequest("the action is pause, resume or cancel") from None
        await self.ctx.writer.submit(
            broadcasts.ControlOccurrence(env_id=view.env.id, occurrence_id=occurrence_id, action=control)
        )
        if control is broadcasts.Control.RESUME:
            self.ctx.wake_workers()
        return RedirectResponse(view.url(f"/occurrences/{occurrence_id}"), status_code=303)

    def routes(
        self, page: Callable[[Callable[[View], Awaitable[Response]]], Callable[[Request], Any]]
    ) -> list[BaseRoute]:
        e = "/{env}"
        return [
            Route(e + "/broadcasts", page(self.index), methods=["GET"]),
            Route(e + "/broadcasts/{key}", page(self.campaign), methods=["GET"]),
            Route(e + "/broadcasts/{key}/test-send", page(self.test_send), methods=["POST"]),
            Route(e + "/broadcasts/{key}/send-now", page(self.send_now), methods=["POST"]),
            Route(e + "/occurrences/{occurrence_id}", page(self.occurrence), methods=["GET"]),
            Route(e + "/occurrences/{occurrence_id}/progress", page(self.occurrence_json), methods=["GET"]),
            Route(e + "/occurrences/{occurrence_id}/{action}", page(self.control), methods=["POST"]),
        ]
