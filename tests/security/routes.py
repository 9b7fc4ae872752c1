"""Every route magpie serves, read from the app's own route tables, as concrete requests."""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.routing import BaseRoute, Mount, Route

from magpie.app import MagpieApp

_VALUES = {"env": "development", "key": "1", "prefix": "mgp_00000000"}


def _concrete(template: str) -> str:
    """A path for a route template: each ``{name}`` (or ``{name:path}``) filled with a plausible value."""
    return re.sub(r"\{([A-Za-z_]+)(?::[a-z]+)?\}", lambda m: _VALUES.get(m.group(1), "x"), template)


def _starlette(routes: Iterable[BaseRoute], prefix: str = "") -> Iterable[tuple[str, str]]:
    for route in routes:
        if isinstance(route, Mount):
            inner = route.routes
            if inner:
                yield from _starlette(inner, prefix + route.path)
            else:  # a mounted app (static files): any path below it
                yield "GET", prefix + route.path + "/x.css"
        elif isinstance(route, Route):
            for method in sorted(route.methods or {"GET"}):
                yield method, prefix + route.path


def every_route(app: MagpieApp) -> list[tuple[str, str]]:
    """``(method, path)`` of every route: the lean router's and the Starlette side's (admin, docs, dashboard)."""
    assert app._fallback is not None, "start the app first"
    found = [(method, path) for method, path in app.routes]
    found += [(method, template) for method, _, _, template in app.param_routes]
    found += list(_starlette(app._fallback.routes))
    return sorted({(method, _concrete(path)) for method, path in found})
