"""SQLite writers queue on a file lock beside the database, so that the write lock passes from one
process to the next without SQLite's busy handler sleeping in between (``magpie.store.db._WriteGate``).

The gate is probed from a second open file description: ``flock`` conflicts between descriptions even
within one process.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from magpie.store import db as store_db
from magpie.store.db import Database


def _gate_taken(db_path: Path) -> bool:
    fd = os.open(f"{db_path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Database, Path]:
    path = tmp_path / "magpie.db"
    db = Database(f"sqlite:///{path}")
    with db.transaction() as conn:
        db.execute(conn, "CREATE TABLE t (n INTEGER)")
    return db, path


def test_a_write_transaction_holds_the_gate_until_it_commits(store: tuple[Database, Path]) -> None:
    db, path = store
    assert not _gate_taken(path)
    with db.transaction() as conn:
        db.execute(conn, "INSERT INTO t VALUES (1)")
        assert _gate_taken(path)
    assert not _gate_taken(path)
    with db.transaction(write=False) as conn:
        db.fetchall(conn, "SELECT n FROM t")
        assert not _gate_taken(path)  # readers never queue


def test_a_transaction_that_fails_releases_the_gate(store: tuple[Database, Path]) -> None:
    db, path = store
    with pytest.raises(RuntimeError), db.transaction() as conn:
        db.execute(conn, "INSERT INTO t VALUES (1)")
        raise RuntimeError("the job failed")
    assert not _gate_taken(path)
    with db.transaction(write=False) as conn:
        assert db.fetchall(conn, "SELECT n FROM t") == []  # rolled back


def test_two_transactions_of_one_process_release_the_gate_with_the_last(store: tuple[Database, Path]) -> None:
    db, path = store
    first = db.connect()
    second = db.connect()
    try:
        db.begin(first)
        db.begin(second, write=False)
        db.commit(second)
        assert _gate_taken(path)
        db.rollback(first)
        assert not _gate_taken(path)
    finally:
        first.close()
        second.close()


def _child_writes(url: str, inside: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event) -> None:
    db = Database(url)
    with db.transaction() as conn:
        db.execute(conn, "INSERT INTO t VALUES (2)")
        inside.set()
        done.wait(10)


def test_a_forked_process_takes_the_gate_with_a_descriptor_of_its_own(store: tuple[Database, Path]) -> None:
    db, path = store
    with db.transaction() as conn:  # the parent has opened its descriptor before the fork
        db.execute(conn, "INSERT INTO t VALUES (1)")
    fork = multiprocessing.get_context("fork")
    inside, done = fork.Event(), fork.Event()
    child = fork.Process(target=_child_writes, args=(db.url, inside, done))
    child.start()
    try:
        assert inside.wait(10)
        assert _gate_taken(path)
        done.set()
        child.join(10)
        assert child.exitcode == 0
        assert not _gate_taken(path)
        with db.transaction() as conn:  # and the parent's own still works
            assert sorted(n for (n,) in db.fetchall(conn, "SELECT n FROM t")) == [1, 2]
    finally:
        done.set()
        child.join(10)


def test_every_database_of_one_process_shares_the_file_s_gate(store: tuple[Database, Path]) -> None:
    db, path = store
    other = Database(f"sqlite:///{path}")
    assert other._gate is db._gate
    with db.transaction() as conn:
        db.execute(conn, "INSERT INTO t VALUES (1)")
        # A second write of the same process would not queue behind its own first one.
        assert other._gate is not None
        other._gate.enter()
        other._gate.leave()
        assert _gate_taken(path)
    assert not _gate_taken(path)


def test_a_gate_held_elsewhere_too_long_is_passed_by(
    store: tuple[Database, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, path = store
    monkeypatch.setattr(store_db, "_GATE_WAIT_SECONDS", 0.2)
    stuck = os.open(f"{path}-writer.lock", os.O_RDWR)
    fcntl.flock(stuck, fcntl.LOCK_EX)  # another holder that never lets go
    try:
        started = time.monotonic()
        with db.transaction() as conn:  # SQLite's own lock is free: the write goes through
            db.execute(conn, "INSERT INTO t VALUES (3)")
        assert 0.2 <= time.monotonic() - started < 5
    finally:
        os.close(stuck)
    with db.transaction(write=False) as conn:
        assert db.fetchall(conn, "SELECT n FROM t") == [(3,)]
