"""A worker killed with ``kill -9`` mid-dispatch loses nothing: its lease lapses, another finishes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from magpie.api.hackle import views
from magpie.config import Settings
from magpie.domain.environment import parse_settings
from magpie.store import accounts, campaigns
from magpie.store.crypto import hash_secret
from magpie.store.db import Database
from magpie.store.dispatches import AcceptTrigger, dispatch_view
from magpie.store.writer import GroupCommitWriter
from tests.fakes.fcm import FakeFcm
from tests.support import ServerProcess, make_env, provider_settings, register_tokens

USERS = 100


def _views(db: Database, env_id: int, ids: list[str]) -> list[dict[str, object]]:
    with db.transaction(write=False) as conn:
        return [views.dispatch(dispatch_view(conn, db, env_id=env_id, dispatch_id=i)) for i in ids]


@pytest.mark.slow
def test_recovery_worker_kill9_mid_dispatch_finishes_every_recipient_once(settings: Settings, tmp_path: Path) -> None:
    db = Database(settings.database_url)
    db.upgrade()
    env = make_env(db)
    with FakeFcm(delay=0.05) as fcm:
        accounts.update_environment_settings(
            db,
            name=env.name,
            settings=parse_settings({"providers": provider_settings(fcm=fcm)}),
        )
        campaigns.apply_campaign(
            db,
            env_id=env.id,
            raw={
                "key": 3,
                "name": "recovery",
                "status": "ACTIVE",
                "purpose": "INFORMATION",
                "provider": "push",
                "message": {"title": "t {{ user.id }}", "body": "b"},
            },
        )
        writer = GroupCommitWriter(db=db)
        writer.start()
        try:
            register_tokens(writer, env.id, USERS)
            ids = []
            for start in range(0, USERS, 50):
                users = "[" + ",".join(f'{{"userId":"u{i}"}}' for i in range(start, start + 50)) + "]"
                dispatch_id, _ = writer.run_sync(
                    AcceptTrigger(
                        key_hash=hash_secret(env.key),
                        env_id=env.id,
                        campaign_key=3,
                        users=users,
                        requested=50,
                        idempotency_key=None,
                    )
                )
                ids.append(dispatch_id)
        finally:
            writer.stop()

        worker_env = {
            "MAGPIE_LEASE_SECONDS": "2",
            "MAGPIE_WORKER_CONCURRENCY": "4",
            "MAGPIE_POLL_INTERVAL": "0.05",
        }
        first = ServerProcess(
            data_dir=settings.data_dir,
            database_url=settings.database_url_override,
            args=["worker"],
            env=worker_env,
        )
        first.start(wait=False)
        deadline = time.monotonic() + 60
        while len(fcm.delivered) < 15 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.kill9()
        delivered_before = len(fcm.delivered)
        assert 15 <= delivered_before < USERS, first.output()

        second = ServerProcess(
            data_dir=settings.data_dir,
            database_url=settings.database_url_override,
            args=["worker"],
            env=worker_env,
        )
        second.start(wait=False)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if all(v["status"] == "COMPLETED" for v in _views(db, env.id, ids)):
                    break
                time.sleep(0.2)
        finally:
            second.stop()
        views = _views(db, env.id, ids)
        assert [v["status"] for v in views] == ["COMPLETED", "COMPLETED"], second.output()
        for view in views:
            assert view["counts"] == {"SENT": 50, "FAILED": 0, "EXCLUDED": 0, "PENDING": 0}
            for recipient in view["recipients"]:  # type: ignore[attr-defined]
                assert len(recipient["deliveries"]) == 1
        # Every token got its push. Sends in flight at the kill (at most 4, the concurrency) and sends
        # answered but not yet recorded (at most 4 more) may go out twice: delivery is at least once.
        assert set(fcm.delivered) == {f"tok-{i}" for i in range(USERS)}
        assert len(fcm.delivered) - USERS <= 8
    with db.transaction(write=False) as conn:
        open_items = db.fetchone(conn, "SELECT COUNT(*) FROM work_items WHERE env_id = ? AND done = 0", (env.id,))
        outcomes = db.fetchall(
            conn,
            "SELECT outcome, COUNT(*) FROM recipients r JOIN dispatches d ON d.id = r.dispatch_id "
            "WHERE d.env_id = ? GROUP BY outcome",
            (env.id,),
        )
    assert open_items == (0,)
    assert outcomes == [("SENT", USERS)]
