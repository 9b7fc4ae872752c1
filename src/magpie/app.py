"""``create_app(settings)``: the ASGI application, its routes and the lifespan that owns resources.

The Hackle-compatible endpoints are served by a lean router (``magpie.api.http.asgi``); any
other path falls through to a Starlette app with the admin API, docs, health and metrics
(``magpie.api.admin.fallback``). Both answer errors through ``magpie.api.http.failures``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from magpie.api.admin.fallback import build_fallback
from magpie.api.hackle import routes
from magpie.api.hackle.routes import Matcher, Route
from magpie.api.http import asgi
from magpie.api.http.asgi import Receive, Request, Scope, Send
from magpie.api.http.auth import Authenticator, presented
from magpie.api.http.context import Context
from magpie.config import Settings
from magpie.dashboard.pages import FORM_MAX_BYTES, dashboard_routes
from magpie.dispatch.worker import Workers
from magpie.errors import MagpieError, MethodNotAllowed, NotFound, Unauthorized
from magpie.logs import set_request
from magpie.metrics import Metrics
from magpie.runtime import Runtime
from magpie.store.db import Database

log = logging.getLogger("magpie.app")


class MagpieApp:
    """The ASGI callable. Build it with ``create_app``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.metrics = Metrics()
        self.routes: dict[tuple[str, str], Route] = dict(routes.EXACT)
        # (method, matcher, handler, template): the template labels metrics, never the raw path.
        self.param_routes: list[tuple[str, Matcher, Route, str]] = list(routes.WITH_PARAMS)
        # Routes other parts add to the Starlette side, built from the context at start-up.
        self.admin_extensions: list[Callable[[Context], list[BaseRoute]]] = [dashboard_routes]
        self.ctx: Context | None = None
        self.workers: Workers | None = None
        self._fallback: Starlette | None = None

    def add_route(self, method: str, path: str, handler: Route) -> None:
        self.routes[(method, path)] = handler

    # -- lifespan ---------------------------------------------------------------------------

    async def startup(self) -> None:
        if self.ctx is not None:
            return
        settings = self.settings
        runtime = Runtime.open(settings, db=self.db, metrics=self.metrics, purge_events=True)
        auth = Authenticator(
            reader=runtime.reader,
            rate_per_key=settings.rate_limit_per_key,
            burst=settings.rate_limit_burst,
            cache_seconds=settings.key_cache_seconds,
            failures_per_second=settings.auth_failures_per_second,
        )
        runtime.writer.on_invalid_key = auth.forget_hash
        ctx = Context(runtime=runtime, auth=auth)
        self._fallback = build_fallback(ctx, extra_routes=[r for extra in self.admin_extensions for r in extra(ctx)])
        self.workers = Workers(runtime, count=settings.workers)
        self.workers.start()
        self.ctx = ctx
        # Everything loaded so far (SQLAlchemy, Alembic, templates...) lives for the whole process:
        # move it out of the collector's sight, so that collections on the hot path stay short.
        if settings.freeze_gc:
            gc.collect()
            gc.freeze()

    async def shutdown(self) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        if self.workers is not None:
            await self.workers.stop()
            self.workers = None
        await ctx.runtime.close()
        self.ctx = None

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            set_request(scope["method"], scope["path"])
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _find(self, method: str, path: str) -> tuple[Route, dict[str, str], str] | None:
        """The handler, path parameters and route template for a request, if a route matches."""
        route = self.routes.get((method, path))
        if route is not None:
            return route, {}, path
        if len(path) > 1 and path.endswith("/"):
            stripped = path.rstrip("/")
            route = self.routes.get((method, stripped))
            if route is not None:
                return route, {}, stripped
        for route_method, matcher, handler, template in self.param_routes:
            if route_method == method:
                params = matcher(path)
                if params is not None:
                    return handler, params, template
        return None

    def _other_methods(self, path: str) -> list[str]:
        """Methods some route accepts on ``path``: non-empty means a 405, not a 404."""
        methods = [method for (method, known) in self.routes if known == path.rstrip("/") or known == path]
        methods += [method for method, matcher, _, _ in self.param_routes if matcher(path) is not None]
        return sorted(set(methods))

    def _body_limit(self, path: str) -> int:
        """The largest body a request to ``path`` may carry; the dashboard's forms are small."""
        limit = self.settings.max_body_bytes
        return min(limit, FORM_MAX_BYTES) if path.startswith("/dashboard") else limit

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self.ctx
        if ctx is None:  # served without a lifespan (some test clients): start lazily
            await self.startup()
            ctx = self.ctx
            assert ctx is not None
        path = scope["path"]
        found = self._find(scope["method"], path)
        # Every route's body is read here, once, under one limit: refused while reading (before
        # more than the limit is held), and answered in the JSON error format on every route.
        try:
            body = await asgi.read_body(scope, receive, self._body_limit(path))
        except MagpieError as exc:
            status = await asgi.send_error(send, exc, close=True)
            self.metrics.count(found[2] if found is not None else "unmatched", status)
            return
        if found is None:
            allowed = self._other_methods(path)
            if allowed:
                status = await asgi.send_error(
                    send, MethodNotAllowed(f"{scope['method']} is not allowed here; use {', '.join(allowed)}")
                )
                self.metrics.count("unmatched", status)
            elif path.startswith(("/v1/", "/api/v2/")):
                self.metrics.count(
                    "unmatched", await asgi.send_error(send, NotFound(f"no route for {scope['method']} {path[:200]}"))
                )
            else:
                assert self._fallback is not None
                try:
                    await self._fallback(scope, asgi.replay(body, receive), asgi.no_store(send))
                except Exception:
                    # Answered already: Starlette's catch-all handler maps (and logs) every error,
                    # then re-raises it for servers that log; it has been logged, so stop here.
                    pass
            return
        handler, params, template = found
        request = Request(scope, body, params)
        try:
            result = await handler(ctx, request)
        except Exception as exc:
            if isinstance(exc, Unauthorized):
                # Only failures count, after the credential was checked: a valid key is never refused here.
                client = scope.get("client")
                address = client[0] if client else None
                exc = ctx.auth.failures.failed(address=address, credential=presented(request.headers)) or exc
            self.metrics.count(template, await asgi.send_error(send, exc))
            return
        status = result[0]
        self.metrics.count(template, status)
        await asgi.send_response(send, status, result[1], result[2] if len(result) == 3 else None)


def create_app(settings: Settings) -> MagpieApp:
    """Build magpie's ASGI app; resources open in its lifespan."""
    return MagpieApp(settings)
