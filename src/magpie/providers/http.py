"""The HTTP exchanges the phone gateways make: a JSON request (transport failures as typed errors), and
fetching an MMS image to upload."""

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


class ImageRefused(Exception):
    """An MMS image magpie cannot hand to a gateway; ``code`` is the recipient's reason."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)


_JPEG_MAGIC = b"\xff\xd8\xff"


async def fetch_jpeg(session: aiohttp.ClientSession, url: str, *, limit: int, timeout: aiohttp.ClientTimeout) -> bytes:
    """The JPEG at ``url``, at most ``limit`` bytes: both gateways take MMS images only as JPEG files.

    Raises ``ImageRefused`` with ``MMS_IMAGE_UNAVAILABLE``, ``MMS_IMAGE_TOO_LARGE`` or ``MMS_IMAGE_NOT_JPEG``.
    """
    data = bytearray()
    try:
        async with session.get(url, timeout=timeout) as response:
            if response.status != 200:
                raise ImageRefused("MMS_IMAGE_UNAVAILABLE")
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise ImageRefused("MMS_IMAGE_TOO_LARGE")
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        raise ImageRefused("MMS_IMAGE_UNAVAILABLE") from exc
    if not data.startswith(_JPEG_MAGIC):
        raise ImageRefused("MMS_IMAGE_NOT_JPEG")
    return bytes(data)
