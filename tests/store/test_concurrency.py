"""No lost updates: concurrent $increment on one profile, in one process and across two."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from magpie.config import Settings
from magpie.store.db import Database
from tests.support import AppClient, Env, ServerProcess, make_env

INCREMENT = {"userId": "counter", "operations": {"$increment": {"n": 1}}}


def test_increment_200_concurrent_requests_end_at_200(client: AppClient, env: Env) -> None:
    responses = client.gather([("POST", "/v1/properties", {"json": INCREMENT, "headers": env.headers})] * 200)
    assert [r.status_code for r in responses] == [200] * 200
    assert client.user(env, "counter")["properties"] == {"n": 200}


def test_increment_concurrent_with_link_and_set_keeps_every_update(client: AppClient, env: Env) -> None:
    calls = []
    for i in range(150):
        body = {
            "userId": "u1",
            "deviceId": f"d{i % 7}",
            "operations": {"$increment": {"n": 1}, "$appendOnce": {"seen": i % 10}},
        }
        calls.append(("POST", "/v1/properties", {"json": body, "headers": env.headers}))
    assert {r.status_code for r in client.gather(calls)} == {200}
    props = client.user(env, "u1")["properties"]
    assert props["n"] == 150
    assert sorted(props["seen"]) == list(range(10))


async def _blast(urls: list[str], headers: dict[str, str], total: int) -> list[int]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        tasks = [
            http.post(urls[i % len(urls)] + "/v1/properties", json=INCREMENT, headers=headers) for i in range(total)
        ]
        return [r.status_code for r in await asyncio.gather(*tasks)]


@pytest.mark.pg
@pytest.mark.slow
def test_increment_200_concurrent_across_two_server_processes_on_postgres(pg_database: str, tmp_path: Path) -> None:
    db = Database(pg_database)
    env = make_env(db)
    servers = [
        ServerProcess(data_dir=tmp_path / "data", database_url=pg_database, env={"MAGPIE_WORKERS": "0"})
        for _ in range(2)
    ]
    try:
        for server in servers:
            server.start()
        statuses = asyncio.run(_blast([s.url for s in servers], {"X-HACKLE-API-KEY": env.key}, 200))
        assert statuses == [200] * 200
    finally:
        for server in servers:
            server.stop()
    with db.transaction(write=False) as conn:
        row = db.fetchone(conn, "SELECT properties FROM profiles WHERE env_id = ? AND ident = 'counter'", (env.id,))
    assert row is not None and row[0] == '{"n":200}'


def test_increment_200_concurrent_on_server_process(settings: Settings, tmp_path: Path) -> None:
    db = Database(settings.database_url)
    db.upgrade()
    env = make_env(db)
    with ServerProcess(
        data_dir=settings.data_dir, database_url=settings.database_url_override, env={"MAGPIE_WORKERS": "0"}
    ) as server:
        statuses = asyncio.run(_blast([server.url], {"X-HACKLE-API-KEY": env.key}, 200))
    assert statuses == [200] * 200
    with db.transaction(write=False) as conn:
        row = db.fetchone(conn, "SELECT properties FROM profiles WHERE env_id = ? AND ident = 'counter'", (env.id,))
    assert row is not None and row[0] == '{"n":200}'
