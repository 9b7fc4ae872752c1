"""Migration 0010 (experiments) goes up and down on both engines, keeping the recipients it extends."""

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
