"""Durability: every update answered 200 survives ``kill -9`` of the server mid-load."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from magpie.config import Settings
from magpie.store.db import Database
from tests.support import ServerProcess, make_env

# Measures time or throughput: runs after the parallel part of `make test`, with the machine to itself.
pytestmark = pytest.mark.alone

TARGET = 1500  # acknowledged updates before the kill
LOAD_SECONDS = 30


async def _load(url: str, key: str, seconds: float, acked: list[int]) -> None:
    stop_at = time.monotonic() + seconds
    counter = iter(range(10_000_000))

    async def worker(http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            n = next(counter)
            body = {"userId": f"user-{n}", "operations": {"$set": {"n": n}, "$increment": {"hits": 1}}}
            try:
                response = await http.post(url + "/v1/properties", json=body, headers={"X-HACKLE-API-KEY": key})
            except httpx.HTTPError:
                return  # the server died under us: unacknowledged, so it may or may not be there
            if response.status_code == 200:
                acked.append(n)

    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=32)) as http:
        await asyncio.gather(*(worker(http) for _ in range(32)))


@pytest.mark.slow
def test_durability_kill9_mid_load_loses_no_acknowledged_update(settings: Settings) -> None:
    db = Database(settings.database_url)
    db.upgrade()
    env = make_env(db)
    server = ServerProcess(
        data_dir=settings.data_dir, database_url=settings.database_url_override, env={"MAGPIE_WORKERS": "0"}
    )
    server.start()
    acked: list[int] = []
    try:

        async def run() -> None:
            load = asyncio.create_task(_load(server.url, env.key, LOAD_SECONDS, acked))
            # The load stops by itself after LOAD_SECONDS: that is the deadline for reaching the target.
            while len(acked) < TARGET and not load.done():
                await asyncio.sleep(0.05)
            if len(acked) >= TARGET:
                server.kill9()  # mid-load: requests are in flight
            await load

        asyncio.run(run())
    finally:
        server.stop()
    if len(acked) < TARGET:
        pytest.fail(
            f"only {len(acked)} of {TARGET} updates were acknowledged in {LOAD_SECONDS} s, so the server was "
            f"never killed mid-load; server output:\n{server.output()[-2000:]}"
        )
    with ServerProcess(data_dir=settings.data_dir, database_url=settings.database_url_override) as restarted:
        assert httpx.get(restarted.url + "/readyz").status_code == 200
    with db.transaction(write=False) as conn:
        rows = db.fetchall(conn, "SELECT ident, properties FROM profiles WHERE env_id = ? AND kind = 'u'", (env.id,))
    stored = dict(rows)
    missing = [n for n in acked if f"user-{n}" not in stored]
    assert missing == []
    for n in acked[:200]:
        assert stored[f"user-{n}"] == f'{{"n":{n},"hits":1}}'
