"""What the fake FCM and APNs servers share: a loopback socket, a private event loop on a thread,
fault knobs, recorded requests and scripted answers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Generic, Protocol, Self, TypedDict, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

HOST = "127.0.0.1"


class Scripted(Protocol):
    """A canned answer for the next ``count`` requests to the device token ``match`` (None: any)."""

    match: str | None
    count: int


class Knobs(TypedDict, total=False):
    """The keyword arguments every fake takes (see ``FakeServer``)."""

    fail_503_rate: float
    fail_429_rate: float
    drop_rate: float
    delay: float
    seed: int
    record: bool
    clock: Callable[[], float]
    port: int  # 0: a free one


RequestT = TypeVar("RequestT")
ScriptT = TypeVar("ScriptT", bound=Scripted)


def http_date(ts: float) -> str:
    """An RFC 9110 HTTP-date, for scripting ``Retry-After`` as a date."""
    return formatdate(ts, usegmt=True)


def bind_loopback(port: int = 0) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (port 0: a free one), so the port is known before serving."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class BackgroundLoop:
    """Runs a server on a private event loop in a daemon thread: ``start`` awaits ``startup`` there,
    ``stop`` stops the loop, awaits ``shutdown`` and cancels whatever is left."""

    def __init__(
        self,
        name: str,
        startup: Callable[[], Awaitable[None]],
        shutdown: Callable[[], Awaitable[None]],
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self._name = name
        self._startup = startup
        self._shutdown = shutdown
        self._loop_factory = loop_factory
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self._name} did not start within {timeout}s")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"{self._name} failed to start") from self._error

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None or self.loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        loop = self._loop_factory()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._startup())
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
        finally:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)
            loop.close()


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    """The key as unencrypted PKCS#8 PEM, the form service accounts and APNs .p8 files use."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class FakeServer(Generic[RequestT, ScriptT]):
    """Fault knobs, recording and scripting shared by the fakes; each subclass speaks its protocol.

    ``record=False`` keeps nothing (benchmarks); ``clock`` is what provider-token ages are measured
    against; ``port`` 0 picks a free one. Knobs (safe to change while running): ``fail_503_rate``,
    ``fail_429_rate``, ``drop_rate`` (end the connection without answering), ``delay`` (seconds
    before answering); ``seed`` makes the faults repeatable. ``with Fake() as fake:`` runs it on a
    background thread with its own event loop.
    """

    def __init__(
        self,
        *,
        fail_503_rate: float = 0.0,
        fail_429_rate: float = 0.0,
        drop_rate: float = 0.0,
        delay: float = 0.0,
        seed: int = 0,
        record: bool = True,
        clock: Callable[[], float] = time.time,
        port: int = 0,
    ) -> None:
        self.fail_503_rate = fail_503_rate
        self.fail_429_rate = fail_429_rate
        self.drop_rate = drop_rate
        self.delay = delay
        self.record = record
        self.clock = clock
        self._rng = random.Random(seed)
        self._requested_port = port
        self._lock = threading.Lock()
        self._requests: list[RequestT] = []
        self._delivered: list[str] = []
        self._scripts: deque[ScriptT] = deque()
        self._stopping: asyncio.Event | None = None
        self._background: BackgroundLoop | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        raise NotImplementedError

    def _release(self) -> None:
        """Free what ``start`` acquired besides the background loop."""

    def stop(self) -> None:
        if self._background is not None:
            self._background.stop()
            self._background = None
        self._release()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- inspection ------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestT]:
        """Every push request answered (or dropped), oldest first; a copy."""
        with self._lock:
            return list(self._requests)

    @property
    def delivered(self) -> list[str]:
        """Device tokens of the pushes answered 200, in order."""
        with self._lock:
            return list(self._delivered)

    # -- answering -------------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less when the server stops, so shutdown never waits for a delay."""
        if seconds <= 0:
            return
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _take_script(self, queue: deque[ScriptT], token: str | None) -> ScriptT | None:
        if not queue:  # cheap check first: the hot path has no scripts
            return None
        with self._lock:
            for entry in queue:
                if entry.match is None or entry.match == token:
                    entry.count -= 1
                    if entry.count <= 0:
                        queue.remove(entry)
                    return entry
        return None


class Serves(Protocol):
    port: int

    async def astart(self) -> None: ...

    async def astop(self) -> None: ...


async def serve_until_signalled(fake: Serves, *, ready: Callable[[], None] | None = None) -> None:
    """Serve on this loop, print ``READY <port>`` (benchmarks read it), stop on SIGINT or SIGTERM."""
    await fake.astart()
    if ready is not None:
        ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {fake.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await fake.astop()
