"""Migration 0013 back-fills ``user_reach`` from the profiles and tokens already stored, on both engines,
and its triggers keep the rows exact from then on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from magpie.store.db import Database
from tests.dashboard.test_migration import empty_url as empty_url
from tests.store.test_experiments_migration import _downgrade

_COLUMNS = "user_id, profile, devices, tokens, phone, push_marketing, push_information, sms_marketing"
_CRM = '{"push": {"marketing": {"status": "SUBSCRIBED"}, "information": {"status": "UNSUBSCRIBED"}}}'


@pytest.fixture
def db(empty_url: str) -> Iterator[Database]:
    yield Database(empty_url)


def _rows(db: Database) -> list[tuple[object, ...]]:
    with db.transaction(write=False) as conn:
        return [
            tuple(int(v) if isinstance(v, bool) else v for v in row)
            for row in db.fetchall(conn, f"SELECT {_COLUMNS} FROM user_reach WHERE env_id = 1 ORDER BY user_id")
        ]


def test_user_reach_is_back_filled_and_then_kept_by_the_triggers(db: Database) -> None:
    db.upgrade("0012_exposure_counts")
    with db.transaction() as conn:
        db.executemany(
            conn,
            "INSERT INTO profiles (env_id, kind, ident, properties, crm, phone_enc, linked_user, created_at, "
            "updated_at) VALUES (1, ?, ?, '{}', ?, ?, ?, 0, 0)",
            [
                ("u", "alice", _CRM, b"enc", None),
                ("u", "bob", '{"sms": {"marketing": {"status": "UNSUBSCRIBED"}}}', None, None),
                ("d", "a1", "{}", None, "alice"),
                ("d", "a2", "{}", None, "alice"),
                ("d", "c1", "{}", None, "carol"),  # carol has no profile: a user by her device alone
                ("d", "lone", "{}", None, None),
            ],
        )
        db.executemany(
            conn,
            "INSERT INTO push_tokens (env_id, token, device_id, provider_type, status, created_at, updated_at) "
            "VALUES (1, ?, ?, 'FCM', ?, 0, 0)",
            [("t1", "a1", "ACTIVE"), ("t2", "a2", "ACTIVE"), ("t3", "a2", "RETIRED"), ("t4", "c1", "ACTIVE")],
        )
    db.upgrade()
    assert _rows(db) == [
        ("alice", 1, 2, 2, 1, 1, 2, 0),
        ("bob", 1, 0, 0, 0, 0, 0, 2),
        ("carol", 0, 1, 1, 0, 0, 0, 0),
    ]
    with db.transaction() as conn:
        db.execute(conn, "UPDATE push_tokens SET status = 'RETIRED' WHERE token = 't1'")
        db.execute(conn, "UPDATE push_tokens SET device_id = 'c1' WHERE token = 't2'")
        db.execute(conn, "UPDATE profiles SET linked_user = 'bob' WHERE kind = 'd' AND ident = 'c1'")
        db.execute(conn, "UPDATE profiles SET crm = '{}', phone_enc = NULL WHERE kind = 'u' AND ident = 'alice'")
        db.execute(
            conn,
            "INSERT INTO push_tokens (env_id, token, device_id, provider_type, status, created_at, updated_at) "
            "VALUES (1, 't5', 'a2', 'FCM', 'ACTIVE', 0, 0)",
        )
    assert _rows(db) == [
        ("alice", 1, 2, 1, 0, 0, 0, 0),
        ("bob", 1, 1, 2, 0, 0, 0, 2),
        ("carol", 0, 0, 0, 0, 0, 0, 0),  # no profile and no device: no longer a user
    ]
    _downgrade(db, "0012_exposure_counts")
    with db.transaction() as conn:
        db.execute(conn, "UPDATE profiles SET crm = '{}' WHERE kind = 'u' AND ident = 'bob'")  # no trigger left
    db.upgrade()
    assert _rows(db)[1] == ("bob", 1, 1, 2, 0, 0, 0, 0)
