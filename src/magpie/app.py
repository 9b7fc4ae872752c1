"""``create_app(settings)``: the ASGI application, its routes and the lifespan that owns resources.

The Hackle-compatible endpoints are served by a lean router (``magpie.api.asgi``); any
other path falls through to a Starlette app with the admin API, docs, health and metrics.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from magpie.api import asgi, routes
from magpie.api.asgi import Receive, Request, Response, Scope, Send
from magpie.api.auth import Authenticator
from magpie.api.context import Context
from magpie.config import Settings
from magpie.errors import MethodNotAllowed, NotFound
from magpie.metrics import Metrics
from magpie.store.crypto import Cipher
from magpie.store.db import Database
from magpie.store.writer import GroupCommitWriter, ProcessWriter, Writer

log = logging.getLogger("magpie.app")

Route = Callable[[Context, Request], Awaitable[Response]]
Matcher = Callable[[str], dict[str, str] | None]


class MagpieApp:
    """The ASGI callable. Build it with ``create_app``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.metrics = Metrics()
        self.routes: dict[tuple[str, str], Route] = {}
        self.param_routes: list[tuple[str, Matcher, Route]] = []
        from magpie.api.admin_consent import consent_admin_routes
        from magpie.api.admin_push import push_admin_routes

        self.admin_extensions: list[Callable[[MagpieApp], list[Any]]] = [push_admin_routes, consent_admin_routes]
        from magpie.api.openapi_messages import message_paths
        from magpie.api.openapi_push import push_paths

        self.openapi_extensions: list[Callable[[], dict[str, Any]]] = [push_paths, message_paths]
        self.ctx: Context | None = None
        self.dispatchers: list[Any] = []
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._worker_stop = asyncio.Event()
        self._starlette: Any = None
        self._started = False
        self._on_start: list[Callable[[Context], Awaitable[None]]] = []
        self._on_stop: list[Callable[[Context], Awaitable[None]]] = []
        routes.install(self)

    def add_route(self, method: str, path: str, handler: Route) -> None:
        self.routes[(method, path)] = handler

    def add_param_route(self, method: str, matcher: Matcher, handler: Route) -> None:
        self.param_routes.append((method, matcher, handler))

    def on_start(self, hook: Callable[[Context], Awaitable[None]]) -> None:
        self._on_start.append(hook)

    def on_stop(self, hook: Callable[[Context], Awaitable[None]]) -> None:
        self._on_stop.append(hook)

    # -- lifespan ---------------------------------------------------------------------------

    async def startup(self) -> None:
        if self._started:
            return
        settings = self.settings
        self.db.upgrade()
        cipher = Cipher.load(secret_key=settings.secret_key, data_dir=settings.data_dir)
        executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="magpie-read")
        writer: Writer
        if settings.writer == "process":
            writer = ProcessWriter(
                db=self.db, batch_max=settings.batch_max, secret_key=cipher.key, on_batch=self.metrics.observe_batch
            )
        else:
            writer = GroupCommitWriter(
                db=self.db, batch_max=settings.batch_max, secret=cipher, on_batch=self.metrics.observe_batch
            )
        writer.start()
        auth = Authenticator(
            db=self.db,
            executor=executor,
            rate_per_key=settings.rate_limit_per_key,
            burst=settings.rate_limit_burst,
        )
        writer.on_invalid_key = auth.forget_hash
        self.ctx = Context(settings=settings, db=self.db, writer=writer, auth=auth, executor=executor, cipher=cipher)
        self.ctx.extras["metrics"] = self.metrics
        from magpie.api.admin import build_admin

        self._starlette = build_admin(self)
        for hook in self._on_start:
            await hook(self.ctx)
        await self._start_workers(self.ctx)
        self._started = True
        # Everything loaded so far (SQLAlchemy, Alembic, templates...) lives for the whole process:
        # move it out of the collector's sight, so that collections on the hot path stay short.
        if self.settings.freeze_gc:
            gc.collect()
            gc.freeze()

    async def _start_workers(self, ctx: Context) -> None:
        from magpie.dispatch.worker import Dispatcher

        self._worker_stop = asyncio.Event()
        self.dispatchers = [
            Dispatcher(
                db=self.db,
                writer=ctx.writer,
                settings=self.settings,
                executor=ctx.executor,
                metrics=self.metrics,
                cipher=ctx.cipher,
            )
            for _ in range(self.settings.workers)
        ]
        self._worker_tasks = [asyncio.create_task(d.run(self._worker_stop)) for d in self.dispatchers]
        ctx.wakers.extend(d.wake.set for d in self.dispatchers)

    async def _stop_workers(self) -> None:
        self._worker_stop.set()
        if self._worker_tasks:
            await asyncio.wait(self._worker_tasks, timeout=30)
        for dispatcher in self.dispatchers:
            await dispatcher.aclose()
        self.dispatchers = []
        self._worker_tasks = []

    async def shutdown(self) -> None:
        if not self._started or self.ctx is None:
            return
        await self._stop_workers()
        for hook in reversed(self._on_stop):
            try:
                await hook(self.ctx)
            except Exception:
                log.exception("shutdown hook failed")
        self.ctx.writer.stop()
        self.ctx.executor.shutdown(wait=True)
        self.db.close_readers()
        self._started = False

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
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

    def _find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        route = self.routes.get((method, path))
        if route is not None:
            return route, {}
        if len(path) > 1 and path.endswith("/"):
            route = self.routes.get((method, path.rstrip("/")))
            if route is not None:
                return route, {}
        for route_method, matcher, handler in self.param_routes:
            if route_method == method:
                params = matcher(path)
                if params is not None:
                    return handler, params
        return None

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self.ctx
        if ctx is None:  # served without a lifespan (some test clients): start lazily
            await self.startup()
            ctx = self.ctx
            assert ctx is not None
        found = self._find(scope["method"], scope["path"])
        if found is None:
            path = scope["path"]
            if any(known == path for (_, known) in self.routes):
                await asgi.send_error(send, MethodNotAllowed(f"{scope['method']} is not allowed on {path}"))
            elif path.startswith(("/v1/", "/api/v2/")):
                await asgi.send_error(send, NotFound(f"no route for {scope['method']} {path}"))
            else:
                try:
                    await self._starlette(scope, receive, send)
                except Exception:
                    # Starlette answered it already (its catch-all handler maps and logs every error)
                    # and re-raises it for servers that log; it has been logged, so stop here.
                    pass
            return
        handler, params = found
        try:
            body = await asgi.read_body(scope, receive, self.settings.max_body_bytes)
            result = await handler(ctx, Request(scope, body, params))
        except Exception as exc:
            self.metrics.count(scope["path"], await asgi.send_error(send, exc))
            return
        status = result[0]
        self.metrics.count(scope["path"], status)
        await asgi.send_response(send, status, result[1], result[2] if len(result) == 3 else None)


def create_app(settings: Settings) -> MagpieApp:
    """Build magpie's ASGI app; resources open in its lifespan."""
    return MagpieApp(settings)
