"""Migration 0003 backfills the hourly counts and click attribution from rows already stored."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from magpie.store.db import Database

HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR  # the start of an hour


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    admin = request.getfixturevalue("pg_admin_url")  # skips or fails when PostgreSQL is unreachable, as configured
    name = f"magpie_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{admin.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migration_backfills_counts_and_attribution(empty_url: str) -> None:
    db = Database(empty_url)
    db.upgrade("0002_sdk_events")
    rows = {
        "INSERT INTO dispatches (id, exec_id, env_id, campaign_key, status, users, requested, created_at) "
        "VALUES (?, ?, 1, ?, 'COMPLETED', '[]', ?, ?)": [("d1", 1, 5, 3, T0 + 10), ("d2", 2, 6, 1, T0 + HOUR)],
        "INSERT INTO recipients (dispatch_id, idx, env_id, user_id, outcome, reason, updated_at) "
        "VALUES (?, ?, 1, ?, ?, ?, ?)": [
            ("d1", 0, "u1", "SENT", None, T0 + 20),
            ("d1", 1, "u2", "EXCLUDED", "NO_CONSENT", T0 + HOUR + 5),
            ("d1", 2, "u3", "FAILED", "UNREGISTERED", T0 + 30),
            ("d2", 0, "u1", "SENT", None, T0 + HOUR + 1),
        ],
        "INSERT INTO deliveries (id, env_id, dispatch_id, recipient_idx, campaign_key, user_key, device_id, token, "
        "provider, status, attempts, created_at, updated_at) VALUES (?, 1, ?, 0, ?, 'u:u1', 'dv1', ?, 'sandbox', "
        "'SENT', 1, 0, 0)": [(101, "d1", 5, "t1"), (102, "d2", 6, "t2")],
        "INSERT INTO events (env_id, insert_id, kind, ident, event_key, ts, received_at) "
        "VALUES (1, ?, ?, ?, '$push_click', 0, 0)": [
            ("c1", "u", "u1"),
            ("c2", "u", "u1"),
            ("c3", "u", "u2"),
            ("c4", "u", "u1"),
        ],
        "INSERT INTO push_clicks (env_id, insert_id, campaign_key, dispatch_id, delivery_id, clicked_at) "
        "VALUES (1, ?, ?, NULL, ?, ?)": [
            ("c1", 5, 101, T0 + 100),  # attributed
            ("c2", 5, 101, T0 + HOUR + 100),  # attributed, same delivery: not unique
            ("c3", 5, 101, T0 + 200),  # someone else's click on u1's delivery
            ("c4", 5, 102, T0 + 300),  # names campaign 5 on a delivery of campaign 6
        ],
    }
    with db.transaction() as conn:
        for sql, values in rows.items():
            db.executemany(conn, sql, values)
    db.upgrade("0003_campaign_counts")
    with db.transaction(write=False) as conn:
        counts = db.fetchall(conn, "SELECT campaign_key, hour, metric, n FROM campaign_counts")
        attributed = db.fetchall(conn, "SELECT insert_id, attributed FROM push_clicks ORDER BY insert_id")
    per_campaign = [
        (5, 0, "REQUESTED", 3),
        (6, HOUR, "REQUESTED", 1),
        (5, 0, "SENT", 1),
        (5, HOUR, "EXCLUDED:NO_CONSENT", 1),
        (5, 0, "FAILED:UNREGISTERED", 1),
        (6, HOUR, "SENT", 1),
        (5, 0, "CLICK", 1),
        (5, HOUR, "CLICK", 1),
        (5, 0, "UNIQUE_CLICK", 1),
    ]
    environment: dict[tuple[int, str], int] = {}
    for _, hour, metric, n in per_campaign:
        environment[(hour, metric)] = environment.get((hour, metric), 0) + n
    expected = per_campaign + [(0, hour, metric, n) for (hour, metric), n in environment.items()]
    assert sorted((int(k), int(h) - T0, m, int(n)) for k, h, m, n in counts) == sorted(expected)
    assert [(i, int(a)) for i, a in attributed] == [("c1", 1), ("c2", 1), ("c3", 0), ("c4", 0)]
