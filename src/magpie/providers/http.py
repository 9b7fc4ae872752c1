"""The HTTP exchanges the phone gateways make: a JSON request (transport failures as typed errors), and
fetching an MMS image to upload.

A URL a campaign names (an MMS or brand image) is fetched by ``ImageFetcher`` only from public
addresses: every connection, to a name or to an address however written, every redirect hop and
every DNS answer, is checked at connect time against ``address_allowed`` (docs/operations.md#outbound-fetches).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any, Final

import aiohttp
import msgspec
from yarl import URL

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
        return status, msgspec.json.decode(raw) if raw else None
    except ValueError:
        return status, None


class ImageRefused(Exception):
    """An MMS image magpie cannot hand to a gateway; ``code`` is the recipient's reason."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)


_JPEG_MAGIC = b"\xff\xd8\xff"
# The one reason of every image magpie could not fetch, refusals included: which of them it was
# (an address refused, a port closed, a 404) is nobody's business outside the log.
IMAGE_UNAVAILABLE: Final = "MMS_IMAGE_UNAVAILABLE"
MAX_REDIRECTS: Final = 3

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, Teredo), which is where it leads."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    return ip.teredo[1] if ip.teredo is not None else None


def address_allowed(ip: Address, allow: Iterable[Network] = ()) -> bool:
    """Whether magpie may connect to ``ip`` to fetch a URL: a public unicast address, or one in ``allow``.

    Refused: loopback, private (RFC 1918, IPv6 unique-local), shared (CGNAT 100.64/10), link-local
    (169.254/16 with the cloud metadata address, fe80::/10), unspecified, multicast, reserved, and an
    IPv6 address carrying one of those as IPv4.

    >>> address_allowed(ipaddress.ip_address("169.254.169.254"))
    False
    >>> address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), [ipaddress.ip_network("127.0.0.0/8")])
    True
    """
    allow = tuple(allow)
    if any(ip in network for network in allow):
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False  # a zone: link-local by definition
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_allowed(embedded, allow)
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


class _Refused(OSError):
    """A connection ``ImageFetcher`` does not make."""


class ImageFetcher:
    """Fetches images campaigns name, from public addresses only (or the operator's ``allow`` ranges).

    The check sits where the connection is made (the connector's socket factory), so it sees the
    address actually connected to: a name resolving to a private address, an address written as a
    decimal or hexadecimal integer, IPv6, an answer that changed since the last lookup (DNS
    rebinding) and each redirect hop are all refused the same way.

    >>> fetcher = ImageFetcher(allow=[ipaddress.ip_network("10.20.0.0/16")])
    """

    def __init__(self, *, allow: Iterable[Network] = (), max_redirects: int = MAX_REDIRECTS) -> None:
        self.allow = tuple(allow)
        self.max_redirects = max_redirects
        self._session: aiohttp.ClientSession | None = None

    def _socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _, address = addr_info
        try:
            ip = ipaddress.ip_address(address[0])
        except ValueError:
            raise _Refused("not an IP address") from None
        if not address_allowed(ip, self.allow):
            raise _Refused("address refused")
        return socket.socket(family=family, type=kind, proto=proto)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No DNS cache: every connection is checked against the answer it is made with.
            connector = aiohttp.TCPConnector(use_dns_cache=False, socket_factory=self._socket, limit=16)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def jpeg(self, url: str, *, limit: int, timeout: aiohttp.ClientTimeout) -> bytes:
        """The JPEG at ``url``, at most ``limit`` bytes: both gateways take MMS images only as JPEG files.

        Raises ``ImageRefused``: ``MMS_IMAGE_UNAVAILABLE`` for anything that kept magpie from the image
        (an address refused, a redirect too many, a connection or HTTP failure), ``MMS_IMAGE_TOO_LARGE``
        or ``MMS_IMAGE_NOT_JPEG`` for an image fetched that the gateways would refuse.
        """
        data = bytearray()
        try:
            target = URL(url)
            for _ in range(self.max_redirects + 1):
                if target.scheme not in ("http", "https") or not target.host:
                    raise ImageRefused(IMAGE_UNAVAILABLE)
                async with self._http().get(target, timeout=timeout, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        target = target.join(URL(response.headers["Location"]))
                        continue
                    if response.status != 200:
                        raise ImageRefused(IMAGE_UNAVAILABLE)
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        data += chunk
                        if len(data) > limit:
                            raise ImageRefused("MMS_IMAGE_TOO_LARGE")
                    break
            else:
                raise ImageRefused(IMAGE_UNAVAILABLE)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise ImageRefused(IMAGE_UNAVAILABLE) from exc
        if not data.startswith(_JPEG_MAGIC):
            raise ImageRefused("MMS_IMAGE_NOT_JPEG")
        return bytes(data)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
