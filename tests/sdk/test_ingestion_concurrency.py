"""The same SDK batches sent to two server processes at once are still applied once per insertId."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from magpie.config import Settings
from magpie.store.db import Database
from tests.sdk.batches import batch, track_event
from tests.support import ServerProcess, make_env


async def _blast(urls: list[str], key: str, bodies: list[dict[str, object]]) -> list[int]:
    headers = {"X-HACKLE-SDK-KEY": key}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64), timeout=60) as http:
        tasks = [
            http.post(urls[i % len(urls)] + "/api/v2/events", json=body, headers=headers)
            for i, body in enumerate(bodies)
        ]
        return [r.status_code for r in await asyncio.gather(*tasks)]


@pytest.mark.slow
def test_events_resent_to_two_processes_are_applied_once(settings: Settings) -> None:
    db = Database(settings.database_url)
    db.upgrade()
    env = make_env(db)
    rng = random.Random(7)
    bodies = []
    for _ in range(64):
        # Overlapping subsets, as retrying SDKs produce; the same insertId even arrives under
        # different users (a client bug), which profile locks alone would not serialise.
        chosen = rng.sample(range(12), k=6)
        bodies.append(
            batch(
                *[
                    track_event(
                        "$properties",
                        user_id=f"u{rng.randrange(10_000)}",
                        properties={"$increment": {"n": 1}},
                        insert_id=f"id-{i}",
                    )
                    for i in chosen
                ]
            )
        )
    servers = [
        ServerProcess(
            data_dir=settings.data_dir,
            database_url=settings.database_url_override,
            env={"MAGPIE_WORKERS": "0", "MAGPIE_BOOTSTRAP": "0"},
        )
        for _ in range(2)
    ]
    try:
        for server in servers:
            server.start()
        statuses = asyncio.run(_blast([s.url for s in servers], env.key, bodies))
    finally:
        for server in servers:
            server.stop()
    assert statuses == [200] * len(bodies)
    with db.transaction(write=False) as conn:
        rows = db.fetchall(conn, "SELECT properties FROM profiles WHERE env_id = ? AND kind = 'u'", (env.id,))
        stored = db.fetchone(conn, "SELECT COUNT(*) FROM events WHERE env_id = ?", (env.id,))
    assert sum(json.loads(r[0]).get("n", 0) for r in rows) == 12
    assert stored is not None and stored[0] == 12
