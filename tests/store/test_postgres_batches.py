"""The PostgreSQL write path: what one batch reads and writes, whatever the table's history.

Table statistics come from PostgreSQL's own counters (``pg_stat_user_tables``), which a
backend reports when its connection closes: each test closes its writer before reading them.
The module has a server of its own: on a shared one, other connections would add to the counters,
and any transaction open meanwhile (in whichever database) keeps PostgreSQL from reclaiming the
old row versions on a page, so that updates would stop being heap-only for want of room.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from magpie.store.crypto import hash_secret
from magpie.store.db import Database
from magpie.store.profiles import PropertiesBody
from magpie.store.transaction import Tx
from magpie.store.writer import BatchRunner
from tests.conftest import fresh_pg_database, throwaway_postgres
from tests.support import Env, make_env

pytestmark = pytest.mark.pg

_STATS = "SELECT seq_tup_read, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'profiles'"


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    with throwaway_postgres() as admin_url, fresh_pg_database(admin_url, "magpie_batches") as url:
        yield url


@pytest.fixture
def db(own_database: str) -> Database:
    return Database(own_database)


def _increments(env: Env, users: range, *, by: int = 1) -> list[PropertiesBody]:
    body = '{{"userId": "p-{}", "operations": {{"$increment": {{"hits": {}}}}}}}'
    return [PropertiesBody(hash_secret(env.key), env.id, body.format(i, by).encode()) for i in users]


def _run(runner: BatchRunner, jobs: list[Any]) -> None:
    outcomes = runner.run_batch(jobs)
    assert [failed for _, failed in outcomes] == [False] * len(jobs), outcomes[:3]


def _stats(url: str) -> tuple[int, int, int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(_STATS).fetchone()
    assert row is not None
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def _stats_after(url: str, before: tuple[int, int, int, int], *, inserted: int, updated: int) -> tuple[int, ...]:
    """The counters once the closed writer's backend has reported at least what it wrote."""
    deadline = time.monotonic() + 10
    while True:
        now = _stats(url)
        if now[1] - before[1] >= inserted and now[2] - before[2] >= updated:
            return tuple(b - a for a, b in zip(before, now, strict=True))
        assert time.monotonic() < deadline, f"the writer's statistics never arrived: {before} -> {now}"
        time.sleep(0.1)


def _fill(url: str, env: Env, users: range) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO profiles (env_id, kind, ident, properties, crm, created_at, updated_at) "
            "SELECT %s, 'u', 'p-' || g, '{\"hits\": 0}', '{}', 0, 0 FROM generate_series(%s::int, %s::int) AS g",
            (env.id, users.start, users.stop - 1),
        )


def _hits(url: str, env: Env, user: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (properties::jsonb ->> 'hits')::int FROM profiles WHERE env_id = %s AND kind = 'u' AND ident = %s",
            (env.id, user),
        ).fetchone()
    return None if row is None else row[0]


def test_batches_read_only_the_profiles_they_name_after_the_table_grows(db: Database) -> None:
    """Statements planned (and prepared) while the table was young must not scan it once it has grown."""
    env = make_env(db)
    runner = BatchRunner(db=db)
    for start in range(0, 640, 64):  # young table: the writer's connection plans its statements now
        _run(runner, _increments(env, range(start, start + 64)))
    _fill(db.url, env, range(1000, 21000))
    before = _stats(db.url)
    for start in range(1000, 1640, 64):
        _run(runner, _increments(env, range(start, start + 64)))
    runner.shutdown()
    seq_read, _, updated, _ = _stats_after(db.url, before, inserted=0, updated=640)
    assert updated == 640
    # Ten batches over a table of 20,000+ rows: not even one full scan between them.
    assert seq_read < 20_000, f"{seq_read} rows read by sequential scans for 640 updates"
    assert _hits(db.url, env, "p-1000") == 1


def test_updates_of_stored_profiles_stay_heap_only(db: Database) -> None:
    """The table keeps room on its pages, so an update adds no index entries (HOT).

    Each batch takes one profile in thirty, as requests from many users spread over the table
    do: a page's free room is for the next version of a few of its rows at a time.
    """
    env = make_env(db)
    _fill(db.url, env, range(0, 3000))
    before = _stats(db.url)
    runner = BatchRunner(db=db)
    for offset in range(30):
        _run(runner, _increments(env, range(offset, 3000, 30)))
    runner.shutdown()
    _, _, updated, hot = _stats_after(db.url, before, inserted=0, updated=3000)
    assert updated == 3000
    assert hot >= 0.95 * updated, f"only {hot} of {updated} updates were heap-only"


class _CreatedMeanwhile(PropertiesBody):
    """An increment whose first run lets another connection create its profile before the batch commits."""

    __slots__ = ("attempts", "url")

    def run(self, tx: Tx) -> Any:
        self.attempts += 1
        if self.attempts == 1:
            other = BatchRunner(db=Database(self.url))
            _run(other, _increments_for(self.env_id, self.key_hash, "p-race", by=10))
            other.shutdown()
        return super().run(tx)


def _increments_for(env_id: int, key_hash: str, user: str, *, by: int) -> list[PropertiesBody]:
    body = f'{{"userId": "{user}", "operations": {{"$increment": {{"hits": {by}}}}}}}'.encode()
    return [PropertiesBody(key_hash, env_id, body)]


def test_a_profile_created_by_another_process_during_the_batch_is_not_overwritten(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env(db)
    body = b'{"userId": "p-race", "operations": {"$increment": {"hits": 1}}}'
    job = _CreatedMeanwhile(hash_secret(env.key), env.id, body)
    job.attempts, job.url = 0, db.url
    runner = BatchRunner(db=db)
    _run(runner, [job, *_increments(env, range(0, 5))])
    runner.shutdown()
    # The batch found the profile missing, the other connection created it, the batch's insert was
    # refused at commit and the batch ran again on what the other one wrote: both increments kept.
    assert job.attempts == 2
    assert not [r for r in caplog.records if r.name == "magpie.writer"], "the batch should run again whole"
    assert _hits(db.url, env, "p-race") == 11
    assert [_hits(db.url, env, f"p-{i}") for i in range(5)] == [1] * 5


def test_the_fillfactor_migration_leaves_room_on_profiles_pages(db: Database) -> None:
    with psycopg.connect(db.url) as conn:
        row = conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'profiles'").fetchone()
    assert row is not None and "fillfactor=80" in (row[0] or [])
