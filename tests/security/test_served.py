"""Against a real ``magpie serve`` on a loopback port: one body limit for every route, enforced while
reading (100 MB bodies, bounded memory), and client addresses that cannot be picked by the client."""

from __future__ import annotations

import json
import re
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from magpie.config import Settings
from tests.security.routes import every_route
from tests.support import AppClient, ServerProcess

HUNDRED_MB = 100 * 1024 * 1024
_CHUNK = b"x" * 65536
_GIVE_UP = 16 * 1024 * 1024


def _routes(tmp: Path) -> list[tuple[str, str]]:
    settings = Settings(data_dir=tmp, bootstrap=False, workers=0, writer="thread", freeze_gc=False)
    with AppClient(settings) as client:
        return every_route(client.app)


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _body(chunked: bool) -> Iterator[bytes]:
    """A 100 MB body, as raw bytes or as HTTP/1.1 chunks, then its end."""
    for _ in range(HUNDRED_MB // len(_CHUNK)):
        yield b"%x\r\n%s\r\n" % (len(_CHUNK), _CHUNK) if chunked else _CHUNK
    if chunked:
        yield b"0\r\n\r\n"


def send_big(port: int, method: str, path: str, *, chunked: bool) -> tuple[int, dict[str, str], bytes, int]:
    """Stream a 100 MB body until the server answers: status, headers, body, and the bytes sent.

    Sending stops after ``_GIVE_UP`` bytes without an answer (a server reading it all): the test
    has seen enough, and a failing run stays short.
    """
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUNDRED_MB}"
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode())
        pending = b""
        body: Iterator[bytes] | None = _body(chunked)
        while True:
            sending = body is not None and sent < _GIVE_UP
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 5)
            if readable or not (sending and writable):
                break  # answered, or nothing more to send (then read what comes, within the timeout)
            if not pending:
                pending = next(body, b"") if body is not None else b""
                if not pending:
                    body = None
                    continue
            try:
                n = sock.send(pending)
            except OSError:
                break  # closed while we were sending: the answer is waiting
            sent += n
            pending = pending[n:]
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
                head_end = answer.find(b"\r\n\r\n")
                if head_end >= 0:
                    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", answer[:head_end])
                    if length and len(answer) >= head_end + 4 + int(length.group(1)):
                        break
        except OSError:  # reset, or no answer within the timeout
            pass
    status_line, _, rest = answer.partition(b"\r\n")
    raw_headers, _, payload = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in raw_headers.split(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1]) if status_line else 0
    return status, headers, payload, sent


def _code(payload: bytes) -> str | None:
    try:
        found = json.loads(payload)
    except ValueError:
        return None
    return found.get("code") if isinstance(found, dict) else None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(data_dir=tmp_path_factory.mktemp("serve") / "data") as process:
        yield process


def test_body_limit_every_route_refuses_100_mb_with_413_in_bounded_memory(
    server: ServerProcess, tmp_path: Path
) -> None:
    routes = _routes(tmp_path / "routes")
    # The route table covers every part: public Hackle API, webhooks, admin API, docs, dashboard.
    for part in ("/v1/properties", "/v1/gateways/", "/admin/v1/", "/docs", "/dashboard/login", "/openapi.json"):
        assert any(path.startswith(part) for _, path in routes), part
    assert server.proc is not None
    pid = server.proc.pid
    before = _peak_kib(pid)
    failures = []
    for method, path, chunked in [(m, p, c) for m, p in routes for c in (False, True)]:
        if len(failures) < 6:  # enough to tell; a failing run stays short
            status, headers, payload, sent = send_big(server.port, method, path, chunked=chunked)
            framing = "chunked" if chunked else "content-length"
            code = "PAYLOAD_TOO_LARGE" if method == "HEAD" else _code(payload)
            if status != 413 or code != "PAYLOAD_TOO_LARGE":
                failures.append(f"{method} {path} ({framing}): {status} {payload[:120]!r}")
            elif headers.get("connection") != "close":
                failures.append(f"{method} {path} ({framing}): the connection stays open for the rest")
            elif sent >= _GIVE_UP:
                failures.append(f"{method} {path} ({framing}): read {sent} bytes before answering")
    rise_mb = (_peak_kib(pid) - before) / 1024
    assert not failures, "\n".join(failures)
    assert rise_mb < 50, f"peak RSS rose {rise_mb:.0f} MB"
    # The server still serves after all that.
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200


def test_rotating_forwarded_for_does_not_escape_the_throttle(server: ServerProcess) -> None:
    # From loopback, where uvicorn would trust X-Forwarded-For by default: each guess claims another client.
    http = httpx.Client(base_url=server.url, timeout=5)  # one connection: quick enough to outpace the refill
    statuses = [
        http.post(
            "/v1/properties",
            json={"userId": "u", "operations": {"$set": {"a": 1}}},
            headers={"X-HACKLE-API-KEY": f"mgp_{i:08d}-guess", "X-Forwarded-For": f"203.0.113.{i}"},
        ).status_code
        for i in range(40)
    ]
    assert statuses[:20] == [401] * 20 and 429 in statuses[20:], statuses
    key, _ = server.credentials()
    valid = http.post(
        "/v1/properties", json={"userId": "u", "operations": {"$set": {"a": 1}}}, headers={"X-HACKLE-API-KEY": key}
    )
    http.close()
    assert valid.status_code == 200, valid.text


def test_forwarded_for_from_a_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    with (
        ServerProcess(data_dir=tmp_path / "data", env={"MAGPIE_TRUSTED_PROXIES": "127.0.0.0/8"}) as proxied,
        httpx.Client(base_url=proxied.url, timeout=5) as http,
    ):
        statuses = [
            http.post(
                "/v1/properties",
                json={"userId": "u", "operations": {"$set": {"a": 1}}},
                headers={"X-HACKLE-API-KEY": f"mgp_{i:08d}-guess", "X-Forwarded-For": f"203.0.113.{i}"},
            ).status_code
            for i in range(30)
        ]
        # Each client behind the proxy has its own budget: nobody reached four failures.
        assert statuses == [401] * 30
        same = [
            http.post(
                "/v1/properties",
                json={},
                headers={"X-HACKLE-API-KEY": f"mgp_{i:08d}-other", "X-Forwarded-For": "198.51.100.7"},
            ).status_code
            for i in range(100, 140)
        ]
        assert same[:20] == [401] * 20 and 429 in same[20:], same
