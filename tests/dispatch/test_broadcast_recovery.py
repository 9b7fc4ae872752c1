"""Two ``magpie worker`` processes (each with its scheduler) on one store, one killed with ``kill -9``
mid-occurrence: every reachable user is planned exactly once and every recipient ends with one outcome."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from magpie.config import Settings
from magpie.domain.environment import parse_settings
from magpie.store import accounts, broadcasts, campaigns
from magpie.store.db import Database
from magpie.store.writer import GroupCommitWriter
from tests.fakes.fcm import FakeFcm
from tests.support import ServerProcess, make_env, provider_settings, register_tokens

USERS = 120


def _progress(db: Database, env_id: int, occurrence_id: int) -> broadcasts.Progress:
    with db.transaction(write=False) as conn:
        return broadcasts.occurrence_progress(
            conn, db, env_id=env_id, occurrence_id=occurrence_id, now_ms=int(time.time() * 1000)
        )


@pytest.mark.slow
def test_broadcast_survives_a_worker_killed_mid_occurrence(settings: Settings, tmp_path: Path) -> None:
    db = Database(settings.database_url)
    db.upgrade()
    env = make_env(db)
    with FakeFcm(delay=0.05) as fcm:
        accounts.update_environment_settings(
            db, name=env.name, settings=parse_settings({"providers": provider_settings(fcm=fcm)})
        )
        campaigns.apply_campaign(
            db,
            env_id=env.id,
            raw={
                "key": 3,
                "name": "weekly",
                "status": "ACTIVE",
                "purpose": "INFORMATION",
                "provider": "push",
                "message": {"title": "t {{ user.id }}", "body": "b"},
                "schedule": {"type": "weekly", "days": ["MON"], "time": "19:30"},
            },
        )
        writer = GroupCommitWriter(db=db)
        writer.start()
        try:
            register_tokens(writer, env.id, USERS, width=3)
            occurrence_id = writer.run_sync(
                broadcasts.CreateOccurrence(
                    env_id=env.id,
                    campaign_key=3,
                    slot_ms=int(time.time() * 1000),
                    channel="push",
                    kind=broadcasts.OccurrenceKind.NOW,
                )
            )
        finally:
            writer.stop()
        assert occurrence_id is not None
        worker_env = {
            "MAGPIE_LEASE_SECONDS": "2",
            "MAGPIE_WORKER_CONCURRENCY": "4",
            "MAGPIE_POLL_INTERVAL": "0.05",
            "MAGPIE_BROADCAST_POLL_SECONDS": "0.1",
            "MAGPIE_BROADCAST_PAGE_SIZE": "10",
        }
        workers = [
            ServerProcess(
                data_dir=settings.data_dir, database_url=settings.database_url_override, args=["worker"], env=worker_env
            ).start(wait=False)
            for _ in range(2)
        ]
        try:
            deadline = time.monotonic() + 60
            while len(fcm.delivered) < 20 and time.monotonic() < deadline:
                time.sleep(0.02)
            workers[0].kill9()
            assert len(fcm.delivered) < USERS, workers[0].output()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if _progress(db, env.id, occurrence_id).occurrence.state == "completed":
                    break
                time.sleep(0.2)
        finally:
            workers[1].stop()
        progress = _progress(db, env.id, occurrence_id)
        assert progress.occurrence.state == "completed", workers[1].output()
        assert (progress.planned, progress.sent, progress.remaining) == (USERS, USERS, 0)
        # Each user was planned into exactly one dispatch of the occurrence.
        with db.transaction(write=False) as conn:
            planned = [
                user["userId"]
                for (users,) in db.fetchall(
                    conn,
                    "SELECT d.users FROM dispatches d JOIN broadcast_dispatches b ON b.dispatch_id = d.id "
                    "WHERE b.occurrence_id = ?",
                    (occurrence_id,),
                )
                for user in json.loads(users)
            ]
        assert sorted(planned) == [f"u{i:03d}" for i in range(USERS)]
        # Every token got its push; sends in flight at the kill may go out twice (delivery is at least once).
        assert set(fcm.delivered) == {f"tok-{i:03d}" for i in range(USERS)}
        assert len(fcm.delivered) - USERS <= 8
