"""What the fake Korean message gateways share, beside the fake servers' loopback socket and background
loop: failure knobs, and the record of every message accepted (so a test can prove nobody got one twice)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.server import HOST, BackgroundLoop, bind_loopback

# The smallest bytes that read as a JPEG file (SOI marker, then an APP0 segment start), for MMS tests.
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(64)) + b"\xff\xd9"


@dataclass(frozen=True)
class Accepted:
    """One message the gateway took: to whom, what, and under which gateway id."""

    to: str
    kind: str
    text: str
    message_id: str
    fields: dict[str, Any]


class GatewayFake:
    """Lifecycle and knobs for a fake gateway; subclasses add their routes in ``routes``.

    Knobs (safe to change while running): ``fail_5xx`` (answer that many send requests with 500
    before taking them), ``drop_after_accept`` (take that many send requests, then close the
    connection without answering, as a timeout or a crash after acceptance looks), ``hold_after_accept``
    (take send requests, then wait that many seconds before answering: time to kill the sender), ``delay``,
    ``fail_queries`` (answer that many lookups of what the gateway holds with 500).
    """

    name = "gateway"

    def __init__(self, *, port: int = 0, record: bool = True) -> None:
        self.images: dict[str, bytes] = {}
        self.fail_5xx = 0
        self.fail_queries = 0
        self.queries = 0
        self.drop_after_accept = 0
        self.delay = 0.0
        self.hold_after_accept = 0.0
        self.record = record
        self._requested_port = port
        self._lock = threading.Lock()
        self._accepted: list[Accepted] = []
        self.send_requests = 0
        self.accepted_count = 0
        self._sock: Any = None
        self._runner: web.AppRunner | None = None
        self._background: BackgroundLoop | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> GatewayFake:
        self._sock = bind_loopback(self._requested_port)
        self.port = self._sock.getsockname()[1]
        self._background = BackgroundLoop(type(self).__name__, self.astart, self.astop)
        self._background.start()
        return self

    def stop(self) -> None:
        if self._background is not None:
            self._background.stop()
            self._background = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def astart(self) -> None:
        if self._sock is None:
            self._sock = bind_loopback(self._requested_port)
            self.port = self._sock.getsockname()[1]
        app = web.Application(client_max_size=1 << 21)
        self.routes(app)
        app.router.add_get("/__fake/stats", self._stats)
        app.router.add_get("/__fake/images/{name}", self._image)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # -- inspection -------------------------------------------------------------------------------

    @property
    def accepted(self) -> list[Accepted]:
        with self._lock:
            return list(self._accepted)

    def sent_twice(self) -> list[str]:
        """Recipients (number and text) the gateway accepted more than once."""
        counts = Counter((a.to, a.text) for a in self.accepted)
        return [f"{to}: {text}" for (to, text), n in counts.items() if n > 1]

    def image_url(self, name: str, data: bytes) -> str:
        """Serve ``data`` at a loopback URL (an MMS image for the gateway client to fetch and upload)."""
        self.images[name] = data
        return f"{self.base_url}/__fake/images/{name}"

    async def _image(self, request: web.Request) -> web.Response:
        data = self.images.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/jpeg")

    async def _stats(self, request: web.Request) -> web.Response:
        with self._lock:
            return web.json_response({"accepted": self.accepted_count, "send_requests": self.send_requests})

    def _take(self, accepted: list[Accepted]) -> None:
        with self._lock:
            self.send_requests += 1
            self.accepted_count += len(accepted)
            if self.record:
                self._accepted.extend(accepted)

    # -- failure knobs, in the order a real outage shows them ----------------------------------------

    async def before_send(self) -> web.StreamResponse | None:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            if self.fail_5xx > 0:
                self.fail_5xx -= 1
                return web.json_response({"message": "Internal Server Error"}, status=500)
        return None

    def before_query(self) -> web.StreamResponse | None:
        with self._lock:
            self.queries += 1
            if self.fail_queries > 0:
                self.fail_queries -= 1
                return web.json_response({"message": "Internal Server Error"}, status=500)
        return None

    async def after_accept(self, request: web.Request) -> None:
        """Drop the connection or hold the answer, as the knobs say, once the messages are taken."""
        if self.hold_after_accept:
            await asyncio.sleep(self.hold_after_accept)
        if self.should_drop():
            self.drop(request)

    def should_drop(self) -> bool:
        with self._lock:
            if self.drop_after_accept > 0:
                self.drop_after_accept -= 1
                return True
        return False

    @staticmethod
    def drop(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError
