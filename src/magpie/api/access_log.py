"""The optional access log (``MAGPIE_ACCESS_LOG=1``): one JSON record per request.

Each record names the route template as the OpenAPI document does
(``/v1/push-message/dispatches/{dispatchId}``, never the raw path with its identifiers), the
status, the duration and the environment. API keys, admin
tokens, query strings and bodies are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from starlette.routing import BaseRoute, Match

from magpie.api.admin.fallback import build_fallback
from magpie.api.hackle.routes import Matcher
from magpie.api.http.asgi import Receive, Scope, Send
from magpie.api.http.auth import API_KEY_HEADER, SDK_KEY_HEADER
from magpie.api.http.context import Context
from magpie.store import accounts

log = logging.getLogger("magpie.access")


class RoutedApp(Protocol):
    """What the access log reads of the app it wraps (``magpie.app.MagpieApp``)."""

    routes: dict[tuple[str, str], Any]
    param_routes: list[tuple[str, Matcher, Any, str]]
    admin_extensions: list[Callable[[Context], list[BaseRoute]]]
    ctx: Context | None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]: ...


class AccessLog:
    """ASGI middleware that logs each HTTP request once it is answered."""

    def __init__(self, app: RoutedApp) -> None:
        self.app = app
        self._env_names: dict[int, str] = {}
        self._fallback_routes: list[BaseRoute] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"]
            route, params = self.route(method, scope["path"])
            fields: dict[str, Any] = {
                "event": "request",
                "method": method,
                "route": route,
                "status": status or 500,
                "durationMs": round((time.perf_counter() - started) * 1000, 2),
            }
            env = params.get("env") or await self._key_env(scope)
            if env is not None:
                fields["environment"] = env
            log.info("%s %s %d", method, route, fields["status"], extra={"fields": fields})

    def route(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        """The route template a request matched, and its path parameters (``unmatched`` if none)."""
        if (method, path) in self.app.routes:
            return path, {}
        for route_method, matcher, _, template in self.app.param_routes:
            if route_method == method and matcher(path):
                return template, {}
        probe = {"type": "http", "path": path, "method": method, "root_path": ""}
        for candidate in self._fallback():
            match, child = candidate.matches(probe)
            if match != Match.NONE:
                return str(getattr(candidate, "path", path)), dict(child.get("path_params", {}))
        return "unmatched", {}

    def _fallback(self) -> list[BaseRoute]:
        ctx = self.app.ctx
        if self._fallback_routes is None and ctx is not None:
            extra = [r for extension in self.app.admin_extensions for r in extension(ctx)]
            self._fallback_routes = list(build_fallback(ctx, extra_routes=extra).routes)
        return self._fallback_routes or []

    async def _key_env(self, scope: Scope) -> str | None:
        ctx = self.app.ctx
        if ctx is None:
            return None
        headers = dict(scope["headers"])
        raw = headers.get(API_KEY_HEADER) or headers.get(SDK_KEY_HEADER)
        env_id = ctx.auth.cached_env(raw.decode("latin-1").strip()) if raw else None
        if env_id is None:
            return None
        name = self._env_names.get(env_id)
        if name is None:
            envs = await ctx.runtime.reader.call(lambda: accounts.list_environments(ctx.db))
            self._env_names = {e.id: e.name for e in envs}
            name = self._env_names.get(env_id, str(env_id))
        return name
