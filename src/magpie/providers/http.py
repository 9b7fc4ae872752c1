"""The one HTTP exchange the phone gateways make: a JSON request, transport failures as typed errors."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from magpie.providers.base import ProviderUnavailable


async def request_json(
    session: aiohttp.ClientSession, method: str, url: str, *, timeout: aiohttp.ClientTimeout, what: str, **kw: Any
) -> tuple[int, Any]:
    """``(status, decoded JSON or None)``; a timeout or a broken connection is ``ProviderUnavailable``.

    The error text names the exception type only: URLs and bodies may hold keys or phone numbers.
    """
    try:
        async with session.request(method, url, timeout=timeout, allow_redirects=False, **kw) as response:
            raw = await response.read()
            status = response.status
    except TimeoutError as exc:
        raise ProviderUnavailable("TIMEOUT", f"{what} timed out") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ProviderUnavailable("CONNECTION_ERROR", f"{what}: {type(exc).__name__}") from exc
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None
