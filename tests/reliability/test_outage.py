"""A PostgreSQL outage mid-load: fast 503s, a few JSON log lines, nothing acknowledged lost."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from magpie.store.db import Database
from tests.reliability._scenario import PrivatePostgres, Tally, property_load, stored_users
from tests.support import ServerProcess, free_port, make_env, store_campaign

# Measures time or throughput: runs after the parallel part of `make test`, with the machine to itself.
pytestmark = pytest.mark.alone

LOAD_SECONDS = 9.0
OUTAGE_AT = 2.0
OUTAGE_SECONDS = 3.0


async def _triggers(url: str, key: str, seconds: float, accepted: list[str], statuses: dict[int, int]) -> None:
    stop_at = time.monotonic() + seconds
    n = 0
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < stop_at:
            n += 1
            body = {"campaignKey": 7, "users": [{"userId": f"t-{n}-{i}"} for i in range(3)]}
            try:
                response = await http.post(
                    url + "/v1/push-message/trigger/send", json=body, headers={"X-HACKLE-API-KEY": key}
                )
            except httpx.HTTPError:
                continue
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                accepted.append(response.json()["dispatchId"])
            await asyncio.sleep(0.1)


def _open_recipients(db: Database, ids: list[str]) -> tuple[int, int]:
    """(recipients expected, recipients with exactly one outcome) over the accepted dispatches."""
    with db.transaction(write=False) as conn:
        expected = 0
        done = 0
        for dispatch_id in ids:
            row = db.fetchone(conn, "SELECT requested FROM dispatches WHERE id = ?", (dispatch_id,))
            assert row is not None, f"accepted dispatch {dispatch_id} was lost"
            expected += row[0]
            decided = db.fetchone(
                conn, "SELECT COUNT(*) FROM recipients WHERE dispatch_id = ? AND outcome IS NOT NULL", (dispatch_id,)
            )
            done += decided[0] if decided else 0
    return expected, done


@pytest.mark.slow
@pytest.mark.pg
def test_postgres_outage_loses_nothing_and_backs_off(tmp_path: Path) -> None:
    pg = PrivatePostgres(Path(tempfile.mkdtemp(prefix="magpie-pg-")), free_port()).init()
    pg.start()
    try:
        db = Database(pg.url)
        db.upgrade()
        env = make_env(db)
        store_campaign(db, env)
        server = ServerProcess(
            data_dir=tmp_path / "data", database_url=pg.url, env={"MAGPIE_WORKERS": "1", "MAGPIE_BOOTSTRAP": "0"}
        )
        tally = Tally()
        accepted: list[str] = []
        trigger_statuses: dict[int, int] = {}
        with server:

            async def outage() -> None:
                await asyncio.sleep(OUTAGE_AT)
                await asyncio.to_thread(pg.stop)
                await asyncio.sleep(OUTAGE_SECONDS)
                await asyncio.to_thread(pg.start)

            async def run() -> None:
                await asyncio.gather(
                    property_load(server.url, env.key, seconds=LOAD_SECONDS, tally=tally, prefix="w", workers=16),
                    _triggers(server.url, env.key, LOAD_SECONDS, accepted, trigger_statuses),
                    outage(),
                )

            asyncio.run(run())
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                expected, decided = _open_recipients(db, accepted)
                if decided == expected:
                    break
                time.sleep(0.5)
        output = server.output()
        stored = stored_users(db, env.id, tally.acknowledged)
    finally:
        try:
            pg.stop("fast")
        finally:
            shutil.rmtree(pg.directory, ignore_errors=True)
    # The start and stop lines for a person go to stdout (``magpie … listening on …``); every
    # log record, the writer process's included, is one JSON object.
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith("magpie ")]
    not_json = [line for line in lines if not line.startswith("{")]
    unavailable = tally.statuses.get(503, 0)
    tally.summary(
        "postgres outage",
        stored,
        unavailable_503=unavailable,
        dispatches_accepted=len(accepted),
        recipients=f"{decided}/{expected}",
        log_lines=len(lines),
    )
    assert stored == len(tally.acknowledged) > 0
    assert unavailable > 0  # the outage was felt ...
    assert set(tally.statuses) <= {200, 503} and set(trigger_statuses) <= {200, 503}  # ... as 503s, never a 500
    assert accepted and decided == expected  # every recipient of every accepted dispatch has one outcome
    assert not_json == [], not_json[:5]
    # About one line a second per process and condition, not one per request.
    assert len(lines) < 20 * (OUTAGE_SECONDS + 2), lines[-20:]
    assert all(json.loads(line)["level"] in ("info", "warning", "error") for line in lines)
