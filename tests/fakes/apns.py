"""A fake APNs provider API: hypercorn serving an ASGI app over TLS + HTTP/2 (ALPN h2) on 127.0.0.1.

It checks what Apple checks (path, ES256 provider token, topic, push type, priority, payload) and answers
with Apple's status codes and ``{"reason": ...}`` bodies. ``with FakeApns() as apns: ...`` runs it on a
background thread; give clients ``verify=apns.client_verify`` and ``http2=True``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio import serve
from hypercorn.config import Config

from .server import BackgroundLoop, FakeServer, Knobs, bind_loopback, http_date, pem

__all__ = ["FakeApns", "RecordedRequest", "ScriptedApns", "http_date"]

MAX_PAYLOAD_BYTES = 4096
# Apple refuses provider tokens issued more than an hour ago.
TOKEN_MAX_AGE = 3600
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }
)
_DEFAULT_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "BadPath",
    405: "MethodNotAllowed",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
_PATH = re.compile(r"/3/device/([^/]*)")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request, with pseudo-headers (``:method``, ``:path``, ...) among ``headers``.

    ``status`` is None when the fake dropped the connection instead of answering.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    status: int | None
    http_version: str

    @property
    def device_token(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class ScriptedApns:
    """A canned answer for the next ``count`` matching requests (``match``: device token, None for any)."""

    match: str | None
    status: int
    count: int
    reason: str | None = None
    retry_after: float | str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0


class _Answer(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _TrackingLoop(asyncio.SelectorEventLoop):
    """Remembers each accepted connection's transport, by peer address, so the fake can drop it.

    ASGI offers no way to reset a connection; aborting the transport is what a network fault looks like.
    """

    def __init__(self, connections: dict[tuple[str, int], asyncio.Transport]) -> None:
        super().__init__()
        self._connections = connections

    async def create_server(self, protocol_factory: Any, *args: Any, **kwargs: Any) -> asyncio.Server:
        connections = self._connections

        def tracking_factory() -> Any:
            protocol = protocol_factory()
            made, lost = protocol.connection_made, protocol.connection_lost
            peer: tuple[str, int] | None = None

            def connection_made(transport: asyncio.BaseTransport) -> None:
                nonlocal peer
                address = transport.get_extra_info("peername")
                if address and isinstance(transport, asyncio.Transport):
                    peer = (address[0], address[1])
                    connections[peer] = transport
                made(transport)

            def connection_lost(exc: BaseException | None) -> None:
                if peer is not None:
                    connections.pop(peer, None)
                lost(exc)

            protocol.connection_made = connection_made
            protocol.connection_lost = connection_lost
            return protocol

        return await super().create_server(tracking_factory, *args, **kwargs)


class FakeApns(FakeServer[RecordedRequest, ScriptedApns]):
    """Speaks the APNs provider API; see the module docstring.

    Knobs (safe to change while running): ``unregistered`` (410 Unregistered), ``wrong_topic_tokens``
    (400 DeviceTokenNotForTopic), ``fail_503_rate``, ``fail_429_rate``, ``drop_rate`` (abort the
    connection without answering), ``delay`` (seconds before answering), ``script(...)``.
    """

    def __init__(
        self,
        *,
        team_id: str = "TEAM123456",
        key_id: str = "KEY1234567",
        topic: str = "io.hackle.magpie.test",
        private_key: ec.EllipticCurvePrivateKey | None = None,
        unregistered: Iterable[str] = (),
        wrong_topic_tokens: Iterable[str] = (),
        **knobs: Unpack[Knobs],
    ) -> None:
        super().__init__(**knobs)
        self.team_id = team_id
        self.key_id = key_id
        self.topic = topic
        self._key = private_key or ec.generate_private_key(ec.SECP256R1())
        self.public_key = self._key.public_key()
        self.private_key_pem = pem(self._key)
        self.unregistered: set[str] = set(unregistered)
        self.wrong_topic_tokens: set[str] = set(wrong_topic_tokens)
        self._connections: dict[tuple[str, int], asyncio.Transport] = {}
        self._ca = trustme.CA()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._started: asyncio.Event | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self.ca_pem_path = ""

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def client_verify(self) -> ssl.SSLContext:
        """A fresh ``ssl.SSLContext`` trusting the fake's CA (pass as httpx ``verify=``)."""
        return ssl.create_default_context(cafile=self.ca_pem_path)

    def start(self) -> FakeApns:
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-apns-")
        tmp = Path(self._tmp.name)
        self.ca_pem_path = str(tmp / "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_pem_path)
        server_pem = str(tmp / "server.pem")
        self._ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(server_pem)
        sock = bind_loopback(self._requested_port)
        self.port = sock.getsockname()[1]
        config = Config()
        config.certfile = config.keyfile = server_pem
        config.alpn_protocols = ["h2"]  # APNs is HTTP/2 only
        # Hypercorn adopts the descriptor, so ownership passes to it with detach().
        config.bind = [f"fd://{sock.detach()}"]
        config.errorlog = _log
        config.accesslog = None
        config.graceful_timeout = 1.0
        config.keep_alive_timeout = 30.0
        self._background = BackgroundLoop(
            "FakeApns",
            lambda: self._astart(config),
            self._astop,
            loop_factory=lambda: _TrackingLoop(self._connections),
        )
        try:
            self._background.start()
        except BaseException:
            self._release()
            raise
        return self

    def _release(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def _astart(self, config: Config) -> None:
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._serve_task = asyncio.get_running_loop().create_task(
            serve(self._app, config, shutdown_trigger=self._stopping.wait, mode="asgi")  # type: ignore[arg-type]
        )
        started = asyncio.ensure_future(self._started.wait())
        await asyncio.wait({started, self._serve_task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if self._serve_task.done():
            self._serve_task.result()  # re-raises why hypercorn could not start
        elif not self._started.is_set():
            raise RuntimeError("hypercorn did not start")

    async def _astop(self) -> None:
        assert self._stopping is not None and self._serve_task is not None
        self._stopping.set()
        # Idle HTTP/2 connections would otherwise hold the graceful shutdown for its full timeout.
        for transport in list(self._connections.values()):
            transport.abort()
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve_task

    # -- inspection ------------------------------------------------------------------------------

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._delivered.clear()

    def provider_token(self, *, iat: float | None = None) -> str:
        """A provider token this fake accepts (for tests that talk to it without ApnsProvider)."""
        claims = {"iss": self.team_id, "iat": int(self.clock() if iat is None else iat)}
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.key_id})

    # -- knobs -----------------------------------------------------------------------------------

    def script(
        self,
        token: str | None = None,
        *,
        status: int,
        reason: str | None = None,
        retry_after: float | str | None = None,
        count: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
        drop: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``count`` valid pushes to ``token`` (None: to any) with ``status``.

        The body defaults to ``{"reason": reason}`` (reason defaulting from the status; 410 adds a
        ``timestamp``); ``body`` replaces it (a str/bytes body is sent verbatim).
        """
        entry = ScriptedApns(token, status, count, reason, retry_after, body, dict(headers or {}), drop, delay)
        with self._lock:
            self._scripts.append(entry)

    # -- ASGI app --------------------------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                assert self._started is not None
                self._started.set()
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.delay > 0:
            await self._sleep(self.delay)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        raw = bytes(body)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        pseudo = {":method": scope["method"], ":path": path, ":scheme": scope["scheme"]}
        if "host" in headers:
            pseudo[":authority"] = headers["host"]
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        token = path.rsplit("/", 1)[-1]
        request = RecordedRequest(scope["method"], path, {**pseudo, **headers}, doc, None, scope["http_version"])

        if scope["http_version"] != "2":
            # Apple speaks HTTP/2 only; an HTTP/1.1 client gets nowhere.
            return await self._drop(request, scope, receive)
        reply_headers: dict[str, str] = {}
        try:
            self._validate(scope["method"], path, headers, raw, doc)
            scripted = self._take_script(self._scripts, token)
            if scripted is not None:
                await self._sleep(scripted.delay)
                if scripted.drop:
                    return await self._drop(request, scope, receive)
                reply_headers = dict(scripted.headers)
                if scripted.retry_after is not None:
                    reply_headers["retry-after"] = str(scripted.retry_after)
                if scripted.body is not None:
                    return await self._answer(send, request, scripted.status, scripted.body, reply_headers)
                raise _Answer(scripted.status, scripted.reason or _DEFAULT_REASONS.get(scripted.status, "Error"))
            if self.drop_rate and self._rng.random() < self.drop_rate:
                return await self._drop(request, scope, receive)
            if self.fail_503_rate and self._rng.random() < self.fail_503_rate:
                raise _Answer(503, "ServiceUnavailable")
            if self.fail_429_rate and self._rng.random() < self.fail_429_rate:
                raise _Answer(429, "TooManyRequests")
            if token in self.unregistered:
                raise _Answer(410, "Unregistered")
        except _Answer as answer:
            error: dict[str, Any] = {"reason": answer.reason}
            if answer.status == 410:
                error["timestamp"] = int(self.clock() * 1000)
            return await self._answer(send, request, answer.status, error, reply_headers)
        await self._answer(send, request, 200, None, reply_headers, delivered=token)

    def _validate(self, method: str, path: str, headers: dict[str, str], raw: bytes, doc: Any) -> None:
        """Raise the ``_Answer`` APNs would give, checking in roughly Apple's order."""
        if method != "POST":
            raise _Answer(405, "MethodNotAllowed")
        match = _PATH.fullmatch(path)
        if match is None:
            raise _Answer(404, "BadPath")
        token = match.group(1)
        if not token:
            raise _Answer(400, "MissingDeviceToken")
        if not _HEX.fullmatch(token):
            raise _Answer(400, "BadDeviceToken")
        self._check_provider_token(headers.get("authorization"))
        topic = headers.get("apns-topic")
        if not topic:
            raise _Answer(400, "MissingTopic")
        if topic != self.topic:
            raise _Answer(400, "TopicDisallowed")
        if headers.get("apns-push-type") not in PUSH_TYPES:
            raise _Answer(400, "InvalidPushType")
        if headers.get("apns-priority", "10") not in ("5", "10"):
            raise _Answer(400, "BadPriority")
        if not headers.get("apns-expiration", "0").isdigit():
            raise _Answer(400, "BadExpirationDate")
        if "apns-id" in headers:
            try:
                uuid.UUID(headers["apns-id"])
            except ValueError:
                raise _Answer(400, "BadMessageId") from None
        if len(headers.get("apns-collapse-id", "").encode("latin-1")) > 64:
            raise _Answer(400, "BadCollapseId")
        if not raw:
            raise _Answer(400, "PayloadEmpty")
        if len(raw) > MAX_PAYLOAD_BYTES:
            raise _Answer(413, "PayloadTooLarge")
        if not isinstance(doc, dict) or not isinstance(doc.get("aps"), dict):
            raise _Answer(400, "BadPayload")
        if token in self.wrong_topic_tokens:
            raise _Answer(400, "DeviceTokenNotForTopic")

    def _check_provider_token(self, authorization: str | None) -> None:
        if not authorization:
            raise _Answer(403, "MissingProviderToken")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise _Answer(403, "InvalidProviderToken")
        try:
            header = jwt.get_unverified_header(value)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                raise _Answer(403, "InvalidProviderToken")
            # iat is checked against our clock, which tests may drive, not PyJWT's time.time().
            claims = jwt.decode(
                value,
                self.public_key,
                algorithms=["ES256"],
                options={"verify_iat": False, "verify_exp": False, "require": ["iss", "iat"]},
            )
        except jwt.PyJWTError:
            raise _Answer(403, "InvalidProviderToken") from None
        iat = claims["iat"]
        if claims["iss"] != self.team_id or not isinstance(iat, int | float):
            raise _Answer(403, "InvalidProviderToken")
        now = self.clock()
        if iat > now + 300:
            raise _Answer(403, "InvalidProviderToken")
        if now - iat > TOKEN_MAX_AGE:
            raise _Answer(403, "ExpiredProviderToken")

    async def _answer(
        self,
        send: Send,
        request: RecordedRequest,
        status: int,
        body: Any,
        headers: dict[str, str],
        delivered: str | None = None,
    ) -> None:
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4()).upper()
        if body is None:
            payload = b""
        elif isinstance(body, bytes | str):
            payload = body.encode() if isinstance(body, str) else body
        else:
            payload = json.dumps(body).encode()
        raw_headers = [(b"apns-id", apns_id.encode())]
        if payload:
            raw_headers.append((b"content-type", b"application/json"))
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self._record(request, status, delivered)
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})

    async def _drop(self, request: RecordedRequest, scope: Scope, receive: Receive) -> None:
        self._record(request, None, None)
        client = scope.get("client")
        transport = self._connections.get((client[0], client[1])) if client else None
        if transport is not None:
            transport.abort()
        # Wait for the server to notice, so it does not try to answer on a dead stream.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while (await receive())["type"] != "http.disconnect":
                    pass

    def _record(self, request: RecordedRequest, status: int | None, delivered: str | None) -> None:
        if not self.record:
            return
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    request.method, request.path, request.headers, request.json, status, request.http_version
                )
            )
            if delivered is not None:
                self._delivered.append(delivered)
