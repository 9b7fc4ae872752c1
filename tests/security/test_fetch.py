"""Outbound fetches: an image URL a campaign names is fetched from public addresses only, in every
spelling of a refused address, through redirects and DNS answers, with one failure reason; the
operator's MAGPIE_FETCH_ALLOW_CIDRS opens a range. No test traffic leaves loopback: refused addresses
are refused before a socket exists."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from magpie.config import Settings
from magpie.providers.http import IMAGE_UNAVAILABLE, ImageFetcher, ImageRefused, address_allowed
from tests.dispatch.test_messages import run, send, setup, sms, user, view
from tests.fakes.gateway import JPEG
from tests.fakes.nhn import FakeNhn
from tests.support import AppClient, Env

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
TIMEOUT = aiohttp.ClientTimeout(total=5)


def fetch(url: str, *, allow: list[Any] | None = None, served: Callable[[int], Awaitable[None]] | None = None) -> Any:
    """Fetch ``url`` (``{port}`` is a loopback image server's port) and return the bytes or the refusal code."""

    async def main() -> Any:
        app = web.Application()

        async def image(_: web.Request) -> web.Response:
            return web.Response(body=JPEG, content_type="image/jpeg")

        async def hop(request: web.Request) -> web.Response:
            raise web.HTTPFound(request.query["to"])

        app.router.add_get("/a.jpg", image)
        app.router.add_get("/hop", hop)
        runner = web.AppRunner(app)
        await runner.setup()
        sites = [web.TCPSite(runner, host, 0) for host in ("127.0.0.1",)]
        await sites[0].start()
        port = sites[0]._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        second = web.TCPSite(runner, "127.0.0.2", port)
        await second.start()
        fetcher = ImageFetcher(allow=allow or [])
        try:
            return await fetcher.jpeg(url.format(port=port), limit=100_000, timeout=TIMEOUT)
        except ImageRefused as exc:
            return exc.code
        finally:
            await fetcher.aclose()
            await runner.cleanup()

    return asyncio.run(main())


LOOPBACK_SPELLINGS = [
    pytest.param("http://127.0.0.1:{port}/a.jpg", id="dotted"),
    pytest.param("http://localhost:{port}/a.jpg", id="name"),
    pytest.param("http://2130706433:{port}/a.jpg", id="decimal"),
    pytest.param("http://0x7f000001:{port}/a.jpg", id="hex"),
    pytest.param("http://0x7f.1:{port}/a.jpg", id="hex-short"),
    pytest.param("http://017700000001:{port}/a.jpg", id="octal"),
    pytest.param("http://0177.0.0.1:{port}/a.jpg", id="octal-dotted"),
    pytest.param("http://127.1:{port}/a.jpg", id="short"),
    pytest.param("http://[::1]:{port}/a.jpg", id="ipv6"),
    pytest.param("http://[::ffff:127.0.0.1]:{port}/a.jpg", id="ipv4-mapped"),
    pytest.param("http://[::ffff:7f00:1]:{port}/a.jpg", id="ipv4-mapped-hex"),
    pytest.param("http://0.0.0.0:{port}/a.jpg", id="unspecified"),
    pytest.param("http://127.0.0.2:{port}/hop?to=http://127.0.0.1:{port}/a.jpg", id="redirect"),
]


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_fetch_refuses_loopback_in_every_spelling(url: str) -> None:
    assert fetch(url) == IMAGE_UNAVAILABLE


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://10.1.2.3/a.jpg", id="rfc1918-10"),
        pytest.param("http://172.16.0.1/a.jpg", id="rfc1918-172"),
        pytest.param("http://192.168.0.1/a.jpg", id="rfc1918-192"),
        pytest.param("http://100.64.0.1/a.jpg", id="cgnat"),
        pytest.param("http://169.254.169.254/latest/meta-data/", id="metadata"),
        pytest.param("http://169.254.1.1/a.jpg", id="link-local"),
        pytest.param("http://[fd00:ec2::254]/latest/meta-data/", id="metadata-ipv6"),
        pytest.param("http://[fe80::1]/a.jpg", id="link-local-ipv6"),
        pytest.param("http://[fc00::1]/a.jpg", id="unique-local"),
        pytest.param("http://[::]/a.jpg", id="unspecified-ipv6"),
        pytest.param("http://224.0.0.1/a.jpg", id="multicast"),
        pytest.param("http://[ff02::1]/a.jpg", id="multicast-ipv6"),
        pytest.param("http://[::ffff:169.254.169.254]/a.jpg", id="ipv4-mapped-metadata"),
        pytest.param("http://[2002:a9fe:a9fe::]/a.jpg", id="6to4-metadata"),
        pytest.param("http://2852039166/latest/meta-data/", id="metadata-decimal"),
        pytest.param("http://127.0.0.2:{port}/hop?to=http://169.254.169.254/", id="redirect-to-metadata"),
        pytest.param("http://127.0.0.2:{port}/hop?to=http://[::1]:{port}/a.jpg", id="redirect-to-ipv6"),
        pytest.param("file:///etc/passwd", id="file-scheme"),
        pytest.param("http://127.0.0.2:{port}/hop?to=file:///etc/passwd", id="redirect-to-file"),
    ],
)
def test_fetch_refuses_private_link_local_and_metadata_addresses(url: str) -> None:
    # 127.0.0.2 is allowed, so its redirects are followed to the hop that is refused.
    assert fetch(url, allow=[ipaddress.ip_network("127.0.0.2/32")]) == IMAGE_UNAVAILABLE


def test_fetch_gives_one_reason_for_a_refusal_a_closed_port_and_a_missing_image() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    assert fetch(f"http://127.0.0.1:{port}/a.jpg", allow=LOOPBACK) == IMAGE_UNAVAILABLE  # nothing listens
    assert fetch("http://127.0.0.1:{port}/missing.jpg", allow=LOOPBACK) == IMAGE_UNAVAILABLE  # 404
    assert fetch("http://127.0.0.1:{port}/a.jpg") == IMAGE_UNAVAILABLE  # refused


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:{port}/a.jpg", id="dotted"),
        pytest.param("http://localhost:{port}/a.jpg", id="name"),
        pytest.param("http://0x7f.1:{port}/a.jpg", id="hex-short"),
        pytest.param("http://[::ffff:127.0.0.1]:{port}/a.jpg", id="ipv4-mapped"),
        pytest.param("http://127.0.0.2:{port}/hop?to=http://127.0.0.1:{port}/a.jpg", id="redirect"),
    ],
)
def test_fetch_from_an_allowed_range(url: str) -> None:
    assert fetch(url, allow=LOOPBACK) == JPEG


def test_fetch_follows_a_few_redirects_only() -> None:
    hop = "http://127.0.0.1:{port}/hop?to="
    three = hop + hop + hop + "http://127.0.0.1:{port}/a.jpg"
    assert fetch(three, allow=LOOPBACK) == JPEG
    assert fetch(hop + three, allow=LOOPBACK) == IMAGE_UNAVAILABLE


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """``images.example`` answers a public address, then loopback (DNS rebinding), at the network edge."""
    answers = ["93.184.216.34", "127.0.0.1"]
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host == "images.example":
            address = answers.pop(0) if len(answers) > 1 else answers[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield answers


def test_fetch_checks_the_address_each_connection_is_made_to(rebinding_dns: list[str]) -> None:
    # The first answer (public) is not connected to here: the fetch that follows gets loopback and is refused.
    assert address_allowed(ipaddress.ip_address("93.184.216.34"))
    rebinding_dns.pop(0)
    assert fetch("http://images.example:{port}/a.jpg") == IMAGE_UNAVAILABLE
    assert fetch("http://images.example:{port}/a.jpg", allow=LOOPBACK) == JPEG


def test_fetch_allow_setting_is_read_and_checked() -> None:
    settings = Settings.from_env({"MAGPIE_FETCH_ALLOW_CIDRS": "10.20.0.0/16, fd00::/8"})
    assert settings.fetch_allow_networks == (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00::/8"))
    assert Settings().fetch_allow_networks == ()
    with pytest.raises(ValueError, match="MAGPIE_FETCH_ALLOW_CIDRS: 'nope' is not a CIDR range"):
        Settings.from_env({"MAGPIE_FETCH_ALLOW_CIDRS": "nope"})


@pytest.fixture
def nhn() -> Iterator[FakeNhn]:
    with FakeNhn() as fake:
        yield fake


@pytest.mark.parametrize(
    ("allow", "outcome"),
    [
        pytest.param("", ("FAILED", IMAGE_UNAVAILABLE), id="default"),
        pytest.param("127.0.0.0/8", ("SENT", None), id="allowed"),
    ],
)
def test_fetch_mms_image_from_loopback_needs_the_allow_setting(
    client: AppClient, env: Env, nhn: FakeNhn, allow: str, outcome: tuple[str, str | None]
) -> None:
    campaign = sms(purpose="INFORMATION")
    campaign["message"] = {"text": "봄 신상품", "title": "봄 신상품", "imageUrls": [nhn.image_url("a.jpg", JPEG)]}
    setup(client, env, {"smsGateway": "nhn", "providers": {"nhn": nhn.config()}}, campaign)
    user(client, env, "u1")
    dispatch_id = send(client, env, "sms", 12, [{"userId": "u1"}])
    run(client, fetch_allow_cidrs=allow)
    [recipient] = view(client, env, "sms", dispatch_id)["recipients"]
    assert (recipient["outcome"], recipient["reason"]) == outcome
    assert (list(nhn.files.values()), len(nhn.accepted)) == (([JPEG], 1) if allow else ([], 0))
