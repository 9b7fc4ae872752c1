"""The admin API (``/admin/v1``, bearer admin token), health, metrics and the docs.

These paths are not hot, so they use Starlette's routing and request objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from magpie.api.hackle import views
from magpie.api.http.context import Context
from magpie.api.http.failures import failure
from magpie.domain.bodies import decode_json, parse_int
from magpie.domain.environment import keep_stored_secrets, parse_settings, redact_settings
from magpie.domain.identity import USER
from magpie.errors import InvalidAdminToken, InvalidRequest
from magpie.store import accounts, profiles
from magpie.store.accounts import check_admin_token
from magpie.store.events import list_events

AdminHandler = Callable[[Context, Request], Awaitable[Any]]


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


def error_response(exc: BaseException) -> Response:
    """The JSON answer for ``exc`` (see ``magpie.api.http.failures``)."""
    answer = failure(exc)
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in answer.headers}
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


async def body_json(request: Request) -> Any:
    raw = await request.body()
    return decode_json(raw) if raw else {}


def admin(ctx: Context, handler: AdminHandler, *, status: int = 200) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an admin handler: check the bearer token, encode the result (errors: ``magpie.api.http.failures``)."""

    async def endpoint(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        valid = scheme.lower() == "bearer" and bool(token)
        if valid:
            valid = await ctx.read(lambda conn: check_admin_token(conn, ctx.db, token))
        if not valid:
            # Counted only once the token proved wrong: a valid token is never refused for others' failures.
            address = request.client.host if request.client else None
            raise ctx.auth.failures.failed(address=address, credential=token) or InvalidAdminToken()
        result = await handler(ctx, request)
        if isinstance(result, Response):
            return result
        return _json(result, status)

    endpoint.__doc__ = handler.__doc__  # the summary of the operation in the admin OpenAPI document
    return endpoint


# -- environments and keys --------------------------------------------------------------------


def _environment(env: accounts.Environment) -> dict[str, Any]:
    """An environment as answers show it: provider credentials redacted (they are write-only)."""
    return {**msgspec.to_builtins(env), "settings": redact_settings(env.settings)}


async def list_environments(ctx: Context, request: Request) -> Any:
    """List environments."""
    envs = await ctx.runtime.reader.call(lambda: accounts.list_environments(ctx.db))
    return {"environments": [_environment(e) for e in envs]}


async def create_environment(ctx: Context, request: Request) -> Any:
    """Create an environment and its first API key."""
    body = await body_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise InvalidRequest("name is required")
    tz = body.get("timezone", "Asia/Seoul")
    env = await ctx.runtime.reader.call(lambda: accounts.create_environment(ctx.db, name=body["name"], timezone=tz))
    key, info = await ctx.runtime.reader.call(
        lambda: accounts.create_api_key(ctx.db, environment=env.name, name="default")
    )
    return {"environment": _environment(env), "apiKey": key, "key": msgspec.to_builtins(info)}


async def get_environment(ctx: Context, request: Request) -> Any:
    """Show one environment with its settings."""
    env = await ctx.runtime.reader.call(lambda: accounts.get_environment(ctx.db, request.path_params["env"]))
    return _environment(env)


async def update_environment(ctx: Context, request: Request) -> Any:
    """Replace an environment's settings (compliance, providers) and optionally its time zone."""
    # Provider credentials are write-only: one left out (or sent back as shown) keeps its stored value.
    body = await body_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be an object")
    name = request.path_params["env"]
    stored = await ctx.runtime.reader.call(lambda: accounts.get_environment(ctx.db, name))
    settings = parse_settings(keep_stored_secrets(body.get("settings", {}), stored.settings))
    env = await ctx.runtime.reader.call(
        lambda: accounts.update_environment_settings(
            ctx.db, name=name, settings=settings, timezone=body.get("timezone")
        )
    )
    return _environment(env)


async def list_keys(ctx: Context, request: Request) -> Any:
    """List an environment's API keys (prefixes only)."""
    name = request.path_params["env"]
    await ctx.runtime.reader.call(lambda: accounts.get_environment(ctx.db, name))
    keys = await ctx.runtime.reader.call(lambda: accounts.list_api_keys(ctx.db, environment=name))
    return {"keys": [msgspec.to_builtins(k) for k in keys]}


async def create_key(ctx: Context, request: Request) -> Any:
    """Create an API key; the key is shown in this response only."""
    body = await body_json(request)
    label = body.get("name", "") if isinstance(body, dict) else ""
    key, info = await ctx.runtime.reader.call(
        lambda: accounts.create_api_key(ctx.db, environment=request.path_params["env"], name=str(label))
    )
    return {"apiKey": key, "key": msgspec.to_builtins(info)}


async def revoke_key(ctx: Context, request: Request) -> Any:
    """Revoke an API key by its prefix; it is rejected from the next request on."""
    info = await ctx.runtime.reader.call(
        lambda: accounts.revoke_api_key(ctx.db, key_or_prefix=request.path_params["prefix"])
    )
    ctx.auth.clear()
    return msgspec.to_builtins(info)


# -- users ----------------------------------------------------------------------------------------


async def get_user(ctx: Context, request: Request) -> Any:
    """Look up a user: properties, consents with times, masked phone number, devices and tokens."""
    env, user_id = request.path_params["env"], request.path_params["user_id"]
    view = await ctx.read(
        lambda conn: profiles.user_view(
            conn, ctx.db, ctx.cipher, env_id=accounts.env_id_by_name(conn, ctx.db, env), user_id=user_id
        )
    )
    return views.row(view)


async def get_user_events(ctx: Context, request: Request) -> Any:
    """List a user's stored events, newest first, each with the property snapshot it was stored with."""
    env, user_id = request.path_params["env"], request.path_params["user_id"]
    limit = parse_int(request.query_params.get("limit"), name="limit", default=50, low=1, high=500)
    cursor = request.query_params.get("cursor")
    page = await ctx.read(
        lambda conn: list_events(
            conn,
            ctx.db,
            env_id=accounts.env_id_by_name(conn, ctx.db, env),
            kind=USER,
            ident=user_id,
            limit=limit,
            cursor=cursor,
        )
    )
    return views.row(page)


async def get_device(ctx: Context, request: Request) -> Any:
    """Look up a device, and the user it is linked to."""
    env, device_id = request.path_params["env"], request.path_params["device_id"]
    view = await ctx.read(
        lambda conn: profiles.device_view(
            conn, ctx.db, ctx.cipher, env_id=accounts.env_id_by_name(conn, ctx.db, env), device_id=device_id
        )
    )
    return views.device(view)


# -- health -----------------------------------------------------------------------------------------


def health_routes(ctx: Context) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        await ctx.read(lambda conn: ctx.db.fetchone(conn, "SELECT 1"))  # an outage answers 503
        return _json({"status": "ready"})

    async def metrics(request: Request) -> Response:
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def admin_routes(ctx: Context) -> list[BaseRoute]:
    a = "/admin/v1"
    env = a + "/environments/{env}"
    routes: list[BaseRoute] = [
        Route(a + "/environments", admin(ctx, list_environments), methods=["GET"]),
        Route(a + "/environments", admin(ctx, create_environment, status=201), methods=["POST"]),
        Route(env, admin(ctx, get_environment), methods=["GET"]),
        Route(env, admin(ctx, update_environment), methods=["PUT"]),
        Route(env + "/keys", admin(ctx, list_keys), methods=["GET"]),
        Route(env + "/keys", admin(ctx, create_key, status=201), methods=["POST"]),
        Route(a + "/keys/{prefix}", admin(ctx, revoke_key), methods=["DELETE"]),
        Route(env + "/users/{user_id}", admin(ctx, get_user), methods=["GET"]),
        Route(env + "/users/{user_id}/events", admin(ctx, get_user_events), methods=["GET"]),
        Route(env + "/devices/{device_id}", admin(ctx, get_device), methods=["GET"]),
    ]
    return routes
