"""Hourly campaign counts: a batch adds its increments at commit, summed per row and in key order."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from magpie.config import Settings
from magpie.store import stats
from magpie.store.db import Connection, Database
from magpie.store.transaction import Tx
from magpie.store.writer import BatchRunner, FnJob
from tests.support import make_env

HOUR = stats.HOUR_MS


def _counts(db: Database, env_id: int) -> dict[tuple[int, int, str], int]:
    with db.transaction(write=False) as conn:
        rows = db.fetchall(
            conn, "SELECT campaign_key, hour, metric, n FROM campaign_counts WHERE env_id = ?", (env_id,)
        )
    return {(int(k), int(h), str(m)): int(n) for k, h, m, n in rows}


def _outcomes(env_id: int, keys: list[int]) -> FnJob[None]:
    """One job recording a SENT and a FAILED outcome for each campaign, in the order given."""

    def run(tx: Tx) -> None:
        for key in keys:
            stats.add_count(tx, env_id=env_id, campaign_key=key, at_ms=HOUR, metric="SENT")
            stats.add_count(tx, env_id=env_id, campaign_key=key, at_ms=2 * HOUR, metric="FAILED:TIMEOUT", n=2)

    return FnJob(run)


def test_a_batch_writes_one_row_per_count_in_key_order(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(settings.database_url)
    db.upgrade()
    env = make_env(db)
    written: list[list[tuple[Any, ...]]] = []
    real = db.executemany

    def spy(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if "campaign_counts" in sql:
            written.append([tuple(r[:4]) for r in rows])
        real(conn, sql, rows)

    monkeypatch.setattr(db, "executemany", spy)
    runner = BatchRunner(db=db)
    try:
        outcomes = runner.run_batch([_outcomes(env.id, [3, 1, 2]), _outcomes(env.id, [2, 3]), _outcomes(env.id, [1])])
    finally:
        runner.shutdown()
    assert [failed for _, failed in outcomes] == [False] * 3
    # One statement for the batch: each row once, in key order.
    assert len(written) == 1
    assert written[0] == sorted(set(written[0]))
    assert len(written[0]) == 8
    assert _counts(db, env.id) == {
        **{(k, HOUR, "SENT"): 2 for k in (1, 2, 3)},
        **{(k, 2 * HOUR, "FAILED:TIMEOUT"): 4 for k in (1, 2, 3)},
        (stats.ALL, HOUR, "SENT"): 6,
        (stats.ALL, 2 * HOUR, "FAILED:TIMEOUT"): 12,
    }


def _deadlocks(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.pg
@pytest.mark.slow
def test_two_writers_recording_outcomes_at_once_keep_exact_counts_without_deadlocks(pg_database: str) -> None:
    db = Database(pg_database)
    env = make_env(db)
    keys = list(range(1, 9))
    batches, jobs_per_batch = 60, 4
    before = _deadlocks(pg_database)
    failures: list[object] = []

    def writer(order: list[int]) -> None:
        runner = BatchRunner(db=db)
        try:
            for b in range(batches):
                # Each job records its campaigns in a different order, as a work item's recipients finish.
                shifts = [(j + b) % len(order) for j in range(jobs_per_batch)]
                jobs = [_outcomes(env.id, order[s:] + order[:s]) for s in shifts]
                failures.extend(o for o, failed in runner.run_batch(jobs) if failed)
        finally:
            runner.shutdown()

    threads = [threading.Thread(target=writer, args=(order,)) for order in (keys, keys[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    recorded = 2 * batches * jobs_per_batch  # per campaign: every job of both writers names every campaign
    assert _counts(db, env.id) == {
        **{(k, HOUR, "SENT"): recorded for k in keys},
        **{(k, 2 * HOUR, "FAILED:TIMEOUT"): 2 * recorded for k in keys},
        (stats.ALL, HOUR, "SENT"): recorded * len(keys),
        (stats.ALL, 2 * HOUR, "FAILED:TIMEOUT"): 2 * recorded * len(keys),
    }
    # The writers' backends report their statistics as they close.
    time.sleep(1.5)
    assert _deadlocks(pg_database) == before


def test_conversions_have_their_own_figures_and_count_in_no_outcome(settings: Settings) -> None:
    db = Database(settings.database_url)
    db.upgrade()
    env = make_env(db)
    control, variant = stats.conversion_metric(version="v1", arm=0), stats.conversion_metric(version="v1", arm=2)

    def run(tx: Tx) -> None:
        stats.add_count(tx, env_id=env.id, campaign_key=4, at_ms=HOUR, metric="REQUESTED", n=10)
        stats.add_count(tx, env_id=env.id, campaign_key=4, at_ms=HOUR, metric="SENT", n=7)
        stats.add_count(tx, env_id=env.id, campaign_key=4, at_ms=HOUR, metric="EXCLUDED:CONTROL_GROUP", n=3)
        stats.add_count(tx, env_id=env.id, campaign_key=4, at_ms=HOUR + 5, metric=variant, revenue=12.5)
        stats.add_count(tx, env_id=env.id, campaign_key=4, at_ms=HOUR + 9, metric=variant, revenue=0.25)
        stats.add_count(tx, env_id=env.id, campaign_key=4, at_ms=3 * HOUR, metric=control, revenue=4.0)

    runner = BatchRunner(db=db)
    try:
        assert [failed for _, failed in runner.run_batch([FnJob(run)])] == [False]
    finally:
        runner.shutdown()
    with db.transaction(write=False) as conn:
        one = stats.totals(conn, db, env_id=env.id, since=0, until=4 * HOUR, campaign_key=4, channel="push")
        everything = stats.totals(conn, db, env_id=env.id, since=0, until=4 * HOUR)
        hourly = stats.conversion_counts(conn, db, env_id=env.id, campaign_key=4)
    for t in (one, everything):
        assert (t.conversions, t.revenue) == (3, 16.75)
        assert (t.excluded, t.unknown, t.failed, t.pending) == ({"CONTROL_GROUP": 3}, 0, {}, 0)
        assert t.sent_rate == 1.0
    # One row per hour and arm, the revenue summed with the count.
    assert hourly == [("v1", 2, HOUR, 2, 12.75), ("v1", 0, 3 * HOUR, 1, 4.0)]
    merged = stats.Totals()
    merged.merge(one)
    merged.merge(everything)
    assert (merged.conversions, merged.revenue, merged.excluded_total) == (6, 33.5, 6)
