"""Migrations 0010 to 0012 (experiments, conversion and exposure counts) go up and down on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool

from magpie.store.db import Database
from tests.dashboard.test_migration import empty_url as empty_url

MIGRATIONS = Path(__file__).resolve().parents[2] / "src" / "magpie" / "store" / "migrations"


def _downgrade(db: Database, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(db.sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, revision)
    finally:
        engine.dispose()


@pytest.fixture
def db(empty_url: str) -> Iterator[Database]:
    yield Database(empty_url)


def test_experiments_migration_adds_the_arm_and_goes_back(db: Database) -> None:
    db.upgrade("0009_broadcast_occurrences")
    with db.transaction() as conn:
        db.execute(
            conn,
            "INSERT INTO recipients (dispatch_id, idx, env_id, user_id, outcome, reason, updated_at) "
            "VALUES ('d1', 0, 1, 'u1', 'SENT', NULL, 1)",
        )
    db.upgrade("0010_experiments")
    with db.transaction() as conn:
        assert db.fetchall(conn, "SELECT user_id, variant FROM recipients") == [("u1", None)]
        db.execute(conn, "UPDATE recipients SET variant = 2")
        assert db.fetchall(conn, "SELECT COUNT(*) FROM exposures") == [(0,)]
        assert db.fetchall(conn, "SELECT COUNT(*) FROM conversions") == [(0,)]
    _downgrade(db, "0009_broadcast_occurrences")
    with db.transaction() as conn:
        assert db.fetchall(conn, "SELECT user_id, outcome FROM recipients") == [("u1", "SENT")]
        with pytest.raises(Exception, match=r"(?i)exposures"):
            db.fetchall(conn, "SELECT COUNT(*) FROM exposures")


def test_conversion_counts_migration_counts_stored_conversions_per_hour_and_arm(db: Database) -> None:
    hour = 3_600_000
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % hour
    db.upgrade("0010_experiments")
    with db.transaction() as conn:
        db.execute(
            conn,
            "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n) VALUES (1, 5, ?, 'SENT', 3)",
            (t0,),
        )
        db.executemany(
            conn,
            "INSERT INTO conversions (dispatch_id, idx, env_id, campaign_key, version, arm, insert_id, value, "
            "converted_at) VALUES (?, ?, 1, ?, 'v1', ?, ?, ?, ?)",
            [
                ("d1", 0, 5, 1, "e1", 10.0, t0 + 1),
                ("d1", 1, 5, 1, "e2", None, t0 + 2),
                ("d1", 2, 5, 0, "e3", 2.5, t0 + hour),
                ("d2", 0, 6, 1, "e4", 1.0, t0 + 3),
            ],
        )
    db.upgrade("0011_conversion_counts")
    with db.transaction(write=False) as conn:
        rows = db.fetchall(
            conn,
            "SELECT campaign_key, hour, metric, n, revenue FROM campaign_counts ORDER BY campaign_key, hour, metric",
        )
    assert [(int(k), int(h) - t0, str(m), int(n), float(r)) for k, h, m, n, r in rows] == [
        (0, 0, "CONVERSION:v1:1", 3, 11.0),
        (0, hour, "CONVERSION:v1:0", 1, 2.5),
        (5, 0, "CONVERSION:v1:1", 2, 10.0),
        (5, 0, "SENT", 3, 0.0),
        (5, hour, "CONVERSION:v1:0", 1, 2.5),
        (6, 0, "CONVERSION:v1:1", 1, 1.0),
    ]
    _downgrade(db, "0010_experiments")
    with db.transaction(write=False) as conn:
        assert db.fetchall(conn, "SELECT campaign_key, metric, n FROM campaign_counts") == [(5, "SENT", 3)]


def test_exposure_counts_migration_counts_stored_exposures_per_hour_and_arm(db: Database) -> None:
    hour = 3_600_000
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % hour
    db.upgrade("0011_conversion_counts")
    with db.transaction() as conn:
        db.execute(
            conn,
            "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n) VALUES (1, 5, ?, 'SENT', 3)",
            (t0,),
        )
        db.executemany(
            conn,
            "INSERT INTO exposures (dispatch_id, idx, env_id, campaign_key, version, arm, user_key, exposed_at) "
            "VALUES (?, ?, 1, ?, ?, ?, ?, ?)",
            [
                ("d1", 0, 5, "v1", 1, "u:a", t0 + 1),
                ("d1", 1, 5, "v1", 1, "u:b", t0 + 2),
                ("d1", 2, 5, "v1", 0, "u:c", t0 + 3),
                ("d2", 0, 5, "v1", 1, "u:a", t0 + hour),
                ("d3", 0, 6, "v2", 2, "u:a", t0 + 4),
            ],
        )
    db.upgrade("0012_exposure_counts")
    with db.transaction(write=False) as conn:
        rows = db.fetchall(
            conn,
            "SELECT campaign_key, hour, metric, n FROM campaign_counts ORDER BY campaign_key, hour, metric",
        )
    assert [(int(k), int(h) - t0, str(m), int(n)) for k, h, m, n in rows] == [
        (5, 0, "EXPOSED:v1:0", 1),
        (5, 0, "EXPOSED:v1:1", 2),
        (5, 0, "SENT", 3),
        (5, hour, "EXPOSED:v1:1", 1),
        (6, 0, "EXPOSED:v2:2", 1),
    ]
    _downgrade(db, "0011_conversion_counts")
    with db.transaction(write=False) as conn:
        assert db.fetchall(conn, "SELECT campaign_key, metric, n FROM campaign_counts") == [(5, "SENT", 3)]
