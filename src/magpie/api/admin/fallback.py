"""The Starlette app behind the lean router: admin API, health, metrics and the docs.

Every error it raises is answered by ``magpie.api.http.failures``, the unexpected ones included.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from magpie.api.admin.admin import admin_routes, error_response, health_routes
from magpie.api.admin.admin_broadcasts import broadcast_admin_routes
from magpie.api.admin.admin_consent import consent_admin_routes
from magpie.api.admin.admin_experiments import experiment_admin_routes
from magpie.api.admin.admin_push import push_admin_routes
from magpie.api.admin.admin_reports import report_admin_routes
from magpie.api.http.context import Context
from magpie.api.openapi.document import docs_routes
from magpie.errors import MagpieError


async def _error(request: Request, exc: Exception) -> Response:
    return error_response(exc)


def build_fallback(ctx: Context, *, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    """The Starlette app for ``ctx``; ``extra_routes`` come last (pages mounted by other parts)."""
    admin_api = [
        *admin_routes(ctx),
        *push_admin_routes(ctx),
        *consent_admin_routes(ctx),
        *broadcast_admin_routes(ctx),
        *experiment_admin_routes(ctx),
        *report_admin_routes(ctx),
    ]
    return Starlette(
        routes=[
            *health_routes(ctx),
            *admin_api,
            *docs_routes(admin_api=admin_api),
            *(extra_routes or []),
        ],
        # Exception (and 500) goes to Starlette's outermost handler, which answers and then
        # re-raises for the server to log; MagpieApp stops it there, as it was answered.
        exception_handlers={Exception: _error, HTTPException: _error, MagpieError: _error},
    )
