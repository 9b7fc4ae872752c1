"""Test helpers: the app over ASGI from synchronous tests, real server processes, environments."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from magpie.app import MagpieApp, create_app
from magpie.config import Settings
from magpie.store import accounts
from magpie.store.db import Database

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


# Hackle's trigger-send seed request, byte for byte (the stray spaces included).
SEED_TRIGGER = """{
    "campaignKey": 1,
    "users": [
      {  
        "userId": "eb24b2d8-21a3-4e95-b801-626ba0904e01",
        "apiProperties": {
          "productNumber": "123"
        }
      }
    ]
  }"""


@dataclass
class Env:
    name: str
    id: int
    key: str
    admin_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-HACKLE-API-KEY": self.key, "Content-Type": "application/json"}

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


def make_env(db: Database, *, timezone: str = "Asia/Seoul") -> Env:
    name = "t-" + uuid.uuid4().hex[:12]
    environment = accounts.create_environment(db, name=name, timezone=timezone)
    key, _ = accounts.create_api_key(db, environment=name)
    token = accounts.create_admin_token(db)
    return Env(name=name, id=environment.id, key=key, admin_token=token)


class AppClient:
    """The real ASGI app on its own event loop thread, called synchronously through httpx.

    >>> with AppClient(settings) as c:  # doctest: +SKIP
    ...     c.post("/v1/properties", json={...}, headers=env.headers)
    """

    def __init__(self, settings: Settings, app: MagpieApp | None = None) -> None:
        self.settings = settings
        self.app = app or create_app(settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.http: httpx.AsyncClient | None = None

    def __enter__(self) -> AppClient:
        self._thread.start()
        self.run(self.app.startup())
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://magpie.test")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.http is not None
        self.run(self.http.aclose())
        self.run(self.app.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        assert self.http is not None
        return self.run(self.http.request(method, url, **kw))

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)

    def gather(self, calls: Iterable[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
        """Send many requests concurrently on the app's loop."""
        assert self.http is not None
        http = self.http

        async def _all() -> list[httpx.Response]:
            return await asyncio.gather(*(http.request(m, u, **kw) for m, u, kw in calls))

        return self.run(_all())

    def user(self, env: Env, user_id: str) -> dict[str, Any]:
        response = self.get(f"/admin/v1/environments/{env.name}/users/{user_id}", headers=env.admin)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """``magpie serve`` (or any magpie command) as a real process on a loopback port."""

    def __init__(
        self,
        *,
        data_dir: Path,
        database_url: str | None = None,
        port: int | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self._port_chosen = port is None
        self.data_dir = data_dir
        self.database_url = database_url
        self.args = args or ["serve"]
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> ServerProcess:
        environ = dict(os.environ)
        environ.update(
            {
                "MAGPIE_DATA_DIR": str(self.data_dir),
                "MAGPIE_PORT": str(self.port),
                "MAGPIE_HOST": "127.0.0.1",
                **self.extra_env,
            }
        )
        if self.database_url:
            environ["MAGPIE_DATABASE_URL"] = self.database_url
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "magpie.cli", *self.args],
                env=environ,
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        if wait and self.args[0] == "serve":
            try:
                self.wait_ready()
            except RuntimeError:
                # The free port was taken by another process (often an outgoing connection's
                # ephemeral port) before the server bound it: take another one, once.
                if not (self._port_chosen and "address already in use" in self.output()):
                    raise
                self._port_chosen = False
                self.port = free_port()
                return self.start(wait=wait)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready: {self.log_path.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def credentials(self) -> tuple[str, str]:
        """The API key and admin token a first start printed."""
        return first_run_credentials(self.output())


def first_run_credentials(output: str) -> tuple[str, str]:
    """The API key and admin token printed by the first start of ``magpie serve``."""
    lines = output.splitlines()
    key = next(line.split()[-1] for line in lines if "API key:" in line)
    token = next(line.split()[-1] for line in lines if "admin token:" in line)
    return key, token


def provider_settings(*, fcm: Any = None, apns: Any = None) -> dict[str, Any]:
    """Environment ``providers`` settings pointing at the fake FCM and APNs servers of ``tests/fakes``."""
    providers: dict[str, Any] = {}
    if fcm is not None:
        providers["fcm"] = {
            "projectId": fcm.project_id,
            "serviceAccount": fcm.service_account(),
            "baseUrl": fcm.base_url,
        }
    if apns is not None:
        providers["apns"] = {
            "teamId": apns.team_id,
            "keyId": apns.key_id,
            "privateKey": apns.private_key_pem,
            "topic": apns.topic,
            "baseUrl": apns.base_url,
            "caFile": apns.ca_pem_path,
        }
    return providers


def register_tokens(writer: Any, env_id: int, count: int, *, width: int = 0) -> None:
    """FCM tokens for users ``u0``.. (``d0``/``tok-0``..), numbers zero-padded to ``width``, through ``writer``."""
    from magpie.store.tokens import RegisterToken

    for i in range(count):
        n = f"{i:0{width}d}"
        writer.run_sync(
            RegisterToken(
                key_hash=None, env_id=env_id, device_id=f"d{n}", user_id=f"u{n}", provider_type="FCM", token=f"tok-{n}"
            )
        )


def magpie_cli(*args: str, data_dir: Path, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, MAGPIE_DATA_DIR=str(data_dir))
    if database_url:
        environ["MAGPIE_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "magpie.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


class FakeClock:
    """A settable clock for night-time and frequency-cap tests."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def no_sleep(seconds: float) -> None:
    """Retries in tests skip the real backoff wait, but still yield to the loop."""
    await asyncio.sleep(0)


class FixedJitter(random.Random):
    """A jitter source that always draws ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def make_dispatcher(
    client: AppClient, *, clock: Any = None, sleep: Any = None, rng: Any = None, **settings: Any
) -> Any:
    """A dispatcher on the client's app, with an injected clock, sleep and jitter source."""
    from magpie.dispatch.worker import Dispatcher

    ctx = client.app.ctx
    assert ctx is not None
    merged = client.settings.with_(**settings) if settings else client.settings

    async def build() -> Any:
        return Dispatcher(ctx.runtime, settings=merged, clock=clock or time.time, sleep=sleep or no_sleep, rng=rng)

    return client.run(build())


def drain(client: AppClient, dispatcher: Any) -> int:
    """Run the dispatcher until no work is available; returns the items processed."""
    processed: int = client.run(dispatcher.run_until_idle())
    return processed


def close_dispatcher(client: AppClient, dispatcher: Any) -> None:
    client.run(dispatcher.aclose())


def run_dispatcher(client: AppClient, **options: Any) -> None:
    """Build a dispatcher (``make_dispatcher`` options), process all available work, close it."""
    dispatcher = make_dispatcher(client, **options)
    try:
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)


def outcomes(view: dict[str, Any]) -> list[tuple[str, str | None]]:
    """``(outcome, reason)`` of each recipient of a dispatch view."""
    return [(r["outcome"], r["reason"]) for r in view["recipients"]]


def inbox(client: AppClient, env: Env) -> list[dict[str, Any]]:
    """The environment's sandbox inbox, newest first."""
    response = client.get(f"/admin/v1/environments/{env.name}/inbox", headers=env.admin)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def apply_campaign(client: AppClient, env: Env, **fields: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "key": 7,
        "name": "Test campaign",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "provider": "sandbox",
        "consentRule": "SUBSCRIBED_OR_UNKNOWN",
        "message": {"title": "Hello {{ user.id }}", "body": "Body {{ api_properties.n }}"},
    }
    definition.update(fields)
    response = client.post(f"/admin/v1/environments/{env.name}/campaigns", json=definition, headers=env.admin)
    assert response.status_code == 200, response.text
    return definition


def add_token(
    client: AppClient,
    env: Env,
    *,
    device_id: str,
    token: str,
    user_id: str | None = None,
    provider: str = "FCM",
) -> None:
    body: dict[str, Any] = {"deviceId": device_id, "providerType": provider, "token": token}
    if user_id is not None:
        body["userId"] = user_id
    response = client.post("/v1/push-tokens", json=body, headers=env.headers)
    assert response.status_code == 200, response.text


def trigger(
    client: AppClient,
    env: Env,
    users: list[dict[str, Any]],
    *,
    key: int = 7,
    headers: dict[str, str] | None = None,
) -> str:
    response = client.post(
        "/v1/push-message/trigger/send",
        json={"campaignKey": key, "users": users},
        headers=headers or env.headers,
    )
    assert response.status_code == 200, response.text
    dispatch_id: str = response.json()["dispatchId"]
    return dispatch_id


def dispatch(client: AppClient, env: Env, dispatch_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/push-message/dispatches/{dispatch_id}", headers=env.headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def store_campaign(db: Database, env: Env, **fields: Any) -> None:
    """Store an ACTIVE sandbox campaign with key 7 directly (for tests driving a server process)."""
    from magpie.store import campaigns

    raw: dict[str, Any] = {
        "key": 7,
        "name": "Test campaign",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "provider": "sandbox",
        "message": {"title": "Hi {{ user.id }}", "body": "b"},
        **fields,
    }
    campaigns.apply_campaign(db, env_id=env.id, raw=raw)
