"""The load stage reads a batch's recipients by key: its cost does not grow with the environment's devices."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from magpie.domain.identity import DEVICE, USER
from magpie.store import accounts
from magpie.store.db import Database
from magpie.store.deliveries import WorkItem, load_snapshot

NOW = 1_700_000_000_000


def _store(path: Path, *, other_devices: int) -> tuple[Database, WorkItem]:
    """A store whose dispatch names users u1 and u2 (with devices d1 and d2), beside ``other_devices``
    devices of other users."""
    path.mkdir()
    db = Database(f"sqlite:///{path / 'magpie.db'}")
    db.upgrade()
    env = accounts.create_environment(db, name="load")
    with db.transaction() as conn:
        rows = [(env.id, USER, "u1", None), (env.id, DEVICE, "d1", "u1")]
        rows += [(env.id, USER, "u2", None), (env.id, DEVICE, "d2", "u2")]
        rows += [(env.id, DEVICE, f"other-{i}", f"someone-{i}") for i in range(other_devices)]
        db.executemany(
            conn,
            "INSERT INTO profiles (env_id, kind, ident, properties, crm, linked_user, created_at, updated_at) "
            "VALUES (?, ?, ?, '{}', '{}', ?, 0, 0)",
            rows,
        )
        db.execute(
            conn,
            "INSERT INTO dispatches (id, exec_id, env_id, campaign_key, status, users, requested, idempotency_key, "
            "created_at, channel) VALUES ('dsp-1', 1, ?, 1, 'ACCEPTED', ?, 2, 'k', ?, 'push')",
            (env.id, json.dumps([{"userId": "u1"}, {"userId": "u2"}]), NOW),
        )
    return db, WorkItem(id=1, env_id=env.id, dispatch_id="dsp-1", payload={}, attempts=1)


def _steps(db: Database, item: WorkItem) -> int:
    """SQLite virtual machine steps (in thousands) that loading the item takes."""
    conn = db.connect()
    assert isinstance(conn, sqlite3.Connection)
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    conn.set_progress_handler(tick, 1000)
    try:
        snap = load_snapshot(conn, db, item=item)
    finally:
        conn.close()
    devices = [t.device_ids if t is not None else None for t in snap.targets.values()]
    assert devices == [("d1",), ("d2",)]
    return counted[0]


def test_loading_a_batch_finds_a_users_devices_by_index_not_by_scanning_the_environment(tmp_path: Path) -> None:
    few = _steps(*_store(tmp_path / "small", other_devices=0))
    many = _steps(*_store(tmp_path / "large", other_devices=20_000))
    # 20,000 other devices scanned would take hundreds of thousands of steps; looked up by index, a handful.
    assert many <= few + 5, (few, many)
