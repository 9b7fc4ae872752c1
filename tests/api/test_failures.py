"""Errors map to one answer on both routers: JSON ``{code, message}``, never a plain-text 500."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import BaseRoute, Route

from magpie.api.http.asgi import Request, Response
from magpie.api.http.context import Context
from magpie.api.http.failures import INTERNAL_MESSAGE, failure
from magpie.app import create_app
from magpie.config import Settings
from magpie.errors import RateLimited
from tests.support import AppClient


class Boom(Exception):
    pass


async def _lean_boom(ctx: Context, request: Request) -> Response:
    raise Boom("a bug in a handler")


def _admin_boom(ctx: Context) -> list[BaseRoute]:
    async def boom(request: StarletteRequest) -> StarletteResponse:
        raise Boom("a bug in an admin handler")

    return [Route("/admin/v1/boom", boom, methods=["GET"])]


@pytest.fixture
def broken(settings: Settings) -> Iterator[AppClient]:
    app = create_app(settings)
    app.add_route("POST", "/v1/boom", _lean_boom)
    app.admin_extensions.append(_admin_boom)
    with AppClient(settings, app) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [pytest.param("POST", "/v1/boom", id="lean-router"), pytest.param("GET", "/admin/v1/boom", id="starlette")],
)
def test_unexpected_error_is_json_internal_error(broken: AppClient, method: str, path: str) -> None:
    response = broken.request(method, path, json={})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"code": "INTERNAL_ERROR", "message": INTERNAL_MESSAGE}


def test_starlette_method_not_allowed_is_json_with_allow(client: AppClient) -> None:
    response = client.delete("/healthz")
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in response.headers["allow"]


def test_storage_outage_maps_to_service_unavailable() -> None:
    answer = failure(sqlite3.OperationalError("disk I/O error"))
    assert (answer.status, answer.code) == (503, "SERVICE_UNAVAILABLE")


def test_rate_limited_carries_retry_after() -> None:
    answer = failure(RateLimited(retry_after=7))
    assert answer.status == 429
    assert dict(answer.headers) == {b"retry-after": b"7"}
