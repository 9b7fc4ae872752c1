"""A lean ASGI layer for the hot ingestion paths: read, decode, answer, map errors.

The Hackle-compatible endpoints run here rather than behind a framework's request and
routing objects, whose per-request cost the hot paths cannot afford (docs/benchmarks.md measures them
against a server that parses the same requests and stores nothing). Everything else
(admin, docs, dashboard) is a Starlette app mounted behind this router.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from magpie.api.http.failures import failure
from magpie.domain.bodies import decode_object
from magpie.errors import IncompleteBody, InvalidRequest, PayloadTooLarge

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# API answers are about one client's data at one moment: no cache (a browser's, a proxy's) keeps them.
_JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
_CLOSE = [(b"connection", b"close")]
SUCCESS = b'{"message":"success"}'
_encode = msgspec.json.encode


class Request:
    """What a handler gets: the raw scope, headers by lower-case name, the body, the query."""

    __slots__ = ("body", "headers", "path_params", "scope")

    def __init__(self, scope: Scope, body: bytes, path_params: dict[str, str] | None = None) -> None:
        self.scope = scope
        self.body = body
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.path_params = path_params or {}

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    @property
    def query(self) -> dict[str, str]:
        raw = self.scope.get("query_string", b"").decode("latin-1")
        return dict(parse_qsl(raw, keep_blank_values=True))

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; anything else is a 400 ``INVALID_REQUEST``."""
        return decode_object(self.body)


Response = tuple[int, bytes] | tuple[int, bytes, list[tuple[bytes, bytes]]]
Handler = Callable[[Request], Awaitable[Response]]


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, or an error: a body cut short (by a disconnect) is never handed on.

    The limit holds while reading: a ``Content-Length`` over it is refused before a byte of the
    body is read, and a chunked body is counted as it arrives, so at most ``limit`` bytes (and
    the server's read buffer) are ever held for a request.
    """
    declared = -1
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError as exc:
                raise InvalidRequest("Content-Length is not a number") from exc
            if declared > limit:
                raise PayloadTooLarge(f"the request body is limited to {limit} bytes")
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise IncompleteBody("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body is limited to {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if 0 <= declared != size:
        raise IncompleteBody(f"the body has {size} bytes where Content-Length declared {declared}")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_response(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    all_headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if headers:
        all_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then waits on the connection as before."""
    pending = True

    async def again() -> dict[str, Any]:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def no_store(send: Send) -> Send:
    """A ``send`` that marks JSON answers ``Cache-Control: no-store`` unless they say otherwise."""

    async def sending(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            names = {bytes(name).lower(): bytes(value) for name, value in headers}
            if b"cache-control" not in names and names.get(b"content-type", b"").startswith(b"application/json"):
                message["headers"] = [*headers, (b"cache-control", b"no-store")]
        await send(message)

    return sending


async def send_error(send: Send, exc: BaseException, *, close: bool = False) -> int:
    """Answer ``exc`` as ``failures`` maps it; returns the status sent.

    ``close`` ends the connection after the answer: the rest of a refused body is never read.
    """
    answer = failure(exc)
    await send_response(send, answer.status, answer.body, [*answer.headers, *(_CLOSE if close else ())])
    return answer.status


def encode(value: Any) -> bytes:
    return _encode(value)
