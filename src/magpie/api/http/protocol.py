"""The HTTP connection as uvicorn's httptools protocol runs it, with magpie's limits on slow clients.

uvicorn times out idle keep-alive connections only. A client that sends its request head or
body a byte at a time would hold its connection (and a task) forever, so:

- the request head must arrive within ``header_timeout_seconds`` of the connection opening
  (or of the previous response), and the body within ``body_timeout_seconds`` of the head:
  otherwise the client gets ``408 REQUEST_TIMEOUT`` and the connection closes;
- at most ``max_connections`` connections are served at once per process; one more is
  answered ``503 SERVICE_UNAVAILABLE`` and closed;
- a request the HTTP parser cannot read is answered ``400 INVALID_REQUEST`` in the JSON error
  format rather than uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from magpie.api.http.failures import failure
from magpie.config import Settings
from magpie.errors import InvalidRequest, MagpieError, RequestTimeout, ServiceUnavailable


class GuardedHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with read deadlines and a connection cap (see the module docstring).

    A deadline is a time stamp on the connection, not a timer: setting one per request phase
    costs a clock read, and one sweep per server looks for late connections a few times a second
    (``sweep_interval``), so a late client is cut off within that much of its deadline.
    """

    header_timeout = 10.0
    body_timeout = 30.0
    max_connections = 2048
    _deadline_at = 0.0  # the event loop's time by which the awaited part must arrive; 0: none awaited
    _awaiting = ""
    _allowed = 0.0
    # The connection sets (one per server) a sweep is running for.
    _swept: ClassVar[dict[int, set[Any]]] = {}

    @property
    def sweep_interval(self) -> float:
        return min(0.5, max(0.05, min(self.header_timeout, self.body_timeout) / 8))

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(ServiceUnavailable("too many connections to this server; retry later"))
            return
        self._arm(self.header_timeout, "the request head")
        if id(self.connections) not in self._swept:
            self._swept[id(self.connections)] = self.connections
            self.loop.call_later(self.sweep_interval, _sweep, self.loop, self.connections, self.sweep_interval)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline_at = 0.0
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout, "the request head")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout, "the request body")

    def on_message_complete(self) -> None:
        self._deadline_at = 0.0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle until the next request: uvicorn's keep-alive timeout applies, then ours once it starts.
        self._deadline_at = 0.0

    def send_400_response(self, msg: str) -> None:
        del msg  # uvicorn's plain-text wording; the JSON error says the same
        self._refuse(InvalidRequest("the request is not valid HTTP/1.1"))

    # -- deadlines --------------------------------------------------------------------------------

    def _arm(self, seconds: float, what: str) -> None:
        if seconds > 0:
            self._deadline_at = self.loop.time() + seconds
            self._awaiting = what
            self._allowed = seconds
        else:
            self._deadline_at = 0.0

    def _expired(self) -> None:
        self._deadline_at = 0.0
        cycle: Any = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()  # too late for an error response: just end the connection
            return
        self._refuse(RequestTimeout(f"{self._awaiting} did not arrive within {self._allowed:g} seconds"))

    def _refuse(self, exc: MagpieError) -> None:
        """Answer ``exc`` in the JSON error format and close the connection."""
        self._deadline_at = 0.0
        if self.transport.is_closing():
            return
        body = failure(exc).body
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[exc.status],
                    b"content-type: application/json\r\n",
                    b"cache-control: no-store\r\n",
                    b"content-length: " + str(len(body)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                )
            )
        )
        self.transport.close()


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any], interval: float) -> None:
    """Cut off the connections of one server that are past their deadline; again in ``interval``.

    The sweep ends when the server has no connection left; the next connection starts another.
    """
    now = loop.time()
    for connection in list(connections):
        if isinstance(connection, GuardedHttpProtocol) and 0 < connection._deadline_at <= now:
            connection._expired()
    if connections:
        loop.call_later(interval, _sweep, loop, connections, interval)
    else:
        GuardedHttpProtocol._swept.pop(id(connections), None)


def server_options(settings: Settings) -> dict[str, Any]:
    """What ``uvicorn.run`` needs to serve magpie with its connection limits."""
    protocol = type(
        "MagpieHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
            "max_connections": settings.max_connections,
        },
    )
    # X-Forwarded-For names the client only when a configured proxy sent it; by default no one is
    # trusted (uvicorn's own default trusts loopback, so anything on the host could pick its address).
    proxies = settings.trusted_proxy_networks
    return {
        "http": protocol,
        "loop": "uvloop",
        "timeout_keep_alive": 5,
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": [str(network) for network in proxies] or None,
    }
