"""Connections to SQLite or PostgreSQL, one SQL dialect for both, and schema migrations.

magpie writes its SQL once with ``?`` placeholders and the subset both engines share
(``ON CONFLICT``, ``RETURNING``); this module adapts placeholders and locking clauses.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import psycopg

from magpie.logs import Throttle

log = logging.getLogger("magpie.store")

Row = tuple[Any, ...]
T = TypeVar("T")

# What magpie creates (the data directory, the store and its -wal/-shm, secret.key, backups) is its
# user's alone, whatever the umask it was started with (docs/operations.md#file-permissions).
PRIVATE_UMASK: Final = 0o077
PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600


def keep_files_private() -> None:
    """From now on, files and directories this process creates are its user's alone.

    Set first by every ``magpie`` command, because not every file is magpie's to open: SQLite creates
    its -wal and -shm files itself (with the store file's mode, which ``Database`` keeps at 0600).
    """
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter: created 0700, or tightened to 0700.

    A directory magpie's user does not own, or a shared one (sticky, like /tmp), is left as it is,
    with a warning: it is not magpie's to change.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    mode = path.stat().st_mode
    if mode & 0o077:
        if path.stat().st_uid == os.geteuid() and not mode & stat.S_ISVTX:
            os.chmod(path, PRIVATE_DIR_MODE)
            log.warning("directory %s was open to others (mode %o): tightened to 0700", path, mode & 0o777)
        else:
            log.warning("directory %s is open to others (mode %o) and not magpie's to tighten", path, mode & 0o777)
    return path


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 when it is missing, else tighten it to 0600."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, PRIVATE_FILE_MODE)


class Cursor(Protocol):
    """What magpie reads from a cursor of either engine."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """A DB-API connection as magpie uses it; ``sqlite3.Connection`` and ``psycopg.Connection`` both are one.

    Statements go through ``Database`` (``db.fetchone(conn, ...)``), which adapts the SQL to the engine.
    """

    def execute(self, query: str, params: Sequence[Any] = ..., /) -> Cursor: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


_MIGRATIONS = Path(__file__).parent / "migrations"


def head_revision() -> str:
    """The newest migration's revision: after the first (``0001``), each one's is its file's name."""
    return max(p.stem for p in (_MIGRATIONS / "versions").glob("[0-9]*.py"))


# Errors that mean "the database is not reachable or not answering", not "your SQL is wrong".
OPERATIONAL_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, psycopg.OperationalError)


# Errors that mean "the database refuses this data": the same statement fails every time.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
)


class StorageDown(psycopg.OperationalError):
    """Refused without trying: PostgreSQL was unreachable moments ago and another thread is probing it."""


class _WriteGate:
    """Hands SQLite's write lock from one process to the next as soon as it is free.

    SQLite's own lock stays the guarantee (``BEGIN IMMEDIATE`` still takes it), but a process that finds
    it taken waits in SQLite's busy handler, which sleeps 1, 2, 5, 10, ... 100 ms between tries: with several
    writing processes (each `magpie serve` and `magpie worker` has a writer) the lock sat free while they
    slept. Writers first take an exclusive ``flock`` on a file beside the database, trying again every
    2 ms at most. One gate per database file and process (``_gate_for``): a second transaction of the same
    process, whichever thread or ``Database`` opens it, goes straight to SQLite's lock, as before, so a
    process never waits for itself. A gate not had within ``_GATE_WAIT_SECONDS`` is passed by, leaving the
    wait to SQLite's lock and its timeout.
    """

    def __init__(self, path: str) -> None:
        self._path = f"{path}-writer.lock"
        self._mutex = threading.Lock()
        self._fd = -1
        self._pid = 0
        self._depth = 0
        self._held = False

    def enter(self) -> None:
        with self._mutex:
            if self._pid != os.getpid():
                # A new process (forked with the parent's descriptor): a lock of its own.
                if self._fd >= 0:
                    os.close(self._fd)
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._pid, self._depth, self._held = os.getpid(), 0, False
            self._depth += 1
            if self._depth > 1:
                return
            fd = self._fd
        deadline = time.monotonic() + _GATE_WAIT_SECONDS
        pause = 0.0002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(pause)
                pause = min(pause * 2, 0.002)
                continue
            with self._mutex:
                self._held = True
            return

    def leave(self) -> None:
        with self._mutex:
            if self._pid != os.getpid() or self._depth == 0:
                return
            self._depth -= 1
            if self._depth == 0 and self._held:
                self._held = False
                fcntl.flock(self._fd, fcntl.LOCK_UN)


# How long a writer waits at the gate before leaving the wait to SQLite's own lock (its busy timeout is 30 s).
_GATE_WAIT_SECONDS: Final = 30.0
_gates: dict[str, _WriteGate] = {}
_gates_lock = threading.Lock()


def _gate_for(path: str) -> _WriteGate:
    """The one gate of this process for the database file at ``path``."""
    key = os.path.realpath(path)
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = _WriteGate(path)
        return gate


class _Outage:
    """Back off from an unreachable PostgreSQL: one probe at a time, every other caller fails fast.

    Without it, every request during an outage opens a connection of its own (hundreds of
    thousands of attempts a minute) and logs a line for it. After a failed connection the next
    attempt waits ``delay`` (doubling from 50 ms to 2 s, with jitter); until then, and while one
    thread probes, ``connect`` raises ``StorageDown`` at once, which callers answer as a 503.
    """

    MIN_DELAY = 0.05
    MAX_DELAY = 2.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._delay = 0.0
        self._probing = False
        self.refused = 0
        self.log = Throttle(interval=1.0)

    def before_connect(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            if self._probing or self.clock() < self._next_probe:
                self.refused += 1
                raise StorageDown("PostgreSQL is unreachable; waiting before the next attempt")
            self._probing = True

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            now = self.clock()
            first = self._down_since is None
            if first:
                self._down_since = now
            self._probing = False
            self._delay = min(self.MAX_DELAY, max(self.MIN_DELAY, self._delay * 2))
            self._next_probe = now + self._delay * (0.5 + random.random() / 2)
        suppressed = self.log.ready()
        if first or suppressed is not None:
            log.error(
                "PostgreSQL unreachable (%s); next attempt in %.2f s, %d requests refused meanwhile",
                _first_line(exc),
                self._delay,
                self.refused,
            )

    def succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            down_since, self._down_since = self._down_since, None
            self._probing = False
            self._delay = 0.0
            refused, self.refused = self.refused, 0
        if down_since is not None:
            log.warning(
                "PostgreSQL reachable again after %.1f s (%d requests refused)", self.clock() - down_since, refused
            )


def _first_line(exc: BaseException) -> str:
    """The start of an error's first line (a connection error can run to many lines), or its type."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first, *_ = text.splitlines()
    return first[:200]


class ConcurrentCreation(Exception):
    """Another process created a row this transaction meant to create: run the batch again."""


# Errors after which the same transaction, run again, may succeed.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    ConcurrentCreation,
)


def _use_wal(conn: sqlite3.Connection, *, patience: float = 30.0) -> None:
    """Put the file in WAL mode (a property of the file, set once). Changing the journal mode takes a lock
    that the busy timeout does not wait for: two connections opening a new file at once, or one opening it
    while another writes, get "database is locked"; so wait here, as the busy timeout would."""
    deadline = time.monotonic() + patience
    while True:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() == "wal":
            return
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Database:
    """A database URL and how to talk to it.

    >>> db = Database("sqlite:////tmp/example.db")
    >>> db.is_sqlite
    True
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._sql_cache: dict[str, str] = {}
        self._local = threading.local()
        self._readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        self._outage = _Outage()
        self._gate: _WriteGate | None = None
        # Connections in a write transaction that holds the gate (SQLite).
        self._gated: set[int] = set()
        if self.is_sqlite:
            _, marker, self.path = url.partition("sqlite:///")
            if not marker:
                raise ValueError(f"a SQLite database URL starts with sqlite:/// (got {url!r})")
            if self.path not in ("", ":memory:"):
                store = Path(self.path)
                store.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
                # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same mode.
                for path in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
                    if path is store or path.exists():
                        private_file(path)
                self._gate = _gate_for(self.path)
        else:
            self.conninfo = url.replace("postgresql+psycopg://", "postgresql://")

    @property
    def sqlalchemy_url(self) -> str:
        if self.is_sqlite:
            return self.url
        return self.conninfo.replace("postgresql://", "postgresql+psycopg://", 1)

    def row_source(self, types: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        """``rows`` as a source to select from, named ``v`` with columns ``column1`` … (SQL text, parameters).

        SQLite: a multi-row ``VALUES`` list, one parameter per value. PostgreSQL: ``unnest`` of one array per
        column, typed by ``types`` (``bigint``, ``text``…), so that a batch's statement has the same text
        whatever its size (prepared once) and a handful of parameters: psycopg spends about 27 µs of CPU per
        17-column row passed value by value, 11 µs as arrays.
        """
        width = len(types)
        if self.is_sqlite:
            one = "(" + ", ".join("?" * width) + ")"
            return f"(VALUES {', '.join([one] * len(rows))}) AS v", [value for row in rows for value in row]
        arrays = ", ".join(f"?::{t}[]" for t in types)
        names = ", ".join(f"column{i}" for i in range(1, width + 1))
        return f"unnest({arrays}) AS v({names})", [list(column) for column in zip(*rows, strict=True)]

    def any_of(self, column: str, values: Iterable[Any], sql_type: str = "text") -> tuple[str, list[Any]]:
        """``column`` equal to one of ``values`` (SQL text, parameters): ``IN (?, …)`` on SQLite, ``= ANY(?)``
        with one array on PostgreSQL (the same text whatever the count, and one parameter)."""
        items = sorted(set(values))
        if self.is_sqlite:
            return f"{column} IN ({','.join('?' * len(items))})", items
        return f"{column} = ANY(?::{sql_type}[])", [items]

    def sql(self, text: str) -> str:
        """Adapt ``text`` to this engine: placeholders, and row locks on PostgreSQL."""
        cached = self._sql_cache.get(text)
        if cached is None:
            if self.is_sqlite:
                cached = text.replace(" FOR UPDATE SKIP LOCKED", "").replace(" FOR UPDATE", "")
            else:
                cached = text.replace("?", "%s")
            self._sql_cache[text] = cached
        return cached

    def connect(self) -> Connection:
        """Open a new connection; the caller owns it. Transactions are explicit (see ``begin``)."""
        if self.is_sqlite:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            _use_wal(conn)
            # Durability contract: a 2xx means the commit reached the disk.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA cache_size=-65536")
            return conn
        outage = self._outage
        outage.before_connect()
        try:
            pg = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            outage.failed(exc)
            raise
        except BaseException:
            outage.failed(RuntimeError("connection attempt interrupted"))
            raise
        outage.succeeded()
        return pg

    def begin(self, conn: Connection, *, write: bool = True) -> None:
        if self.is_sqlite:
            if write and self._gate is not None and id(conn) not in self._gated:
                self._gate.enter()
                self._gated.add(id(conn))
            try:
                # IMMEDIATE takes the write lock up front, serialising writers across processes.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except BaseException:
                self._ungate(conn)
                raise
        else:
            conn.execute("BEGIN")

    def commit(self, conn: Connection) -> None:
        try:
            conn.execute("COMMIT")
        finally:
            # A failed COMMIT leaves the transaction to the caller's rollback; SQLite's lock still holds it.
            self._ungate(conn)

    def rollback(self, conn: Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except Exception:
            pass
        finally:
            self._ungate(conn)

    def _ungate(self, conn: Connection) -> None:
        if self._gate is not None and id(conn) in self._gated:
            self._gated.discard(id(conn))
            self._gate.leave()

    def execute(self, conn: Connection, text: str, params: Sequence[Any] = ()) -> Cursor:
        return conn.execute(self.sql(text), params)

    def executemany(self, conn: Connection, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if isinstance(conn, sqlite3.Connection):
            conn.executemany(self.sql(text), rows)
        else:
            assert isinstance(conn, psycopg.Connection)
            with conn.cursor() as cur:
                cur.executemany(self.sql(text), rows)

    def fetchone(self, conn: Connection, text: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = conn.execute(self.sql(text), params).fetchone()
        return row

    def fetchall(self, conn: Connection, text: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = conn.execute(self.sql(text), params).fetchall()
        return rows

    def fetchone_as(self, conn: Connection, text: str, params: Sequence[Any], row_type: Callable[..., T]) -> T | None:
        """The one row of ``text`` as ``row_type`` (a NamedTuple or Struct whose fields follow the
        SELECT list), or None."""
        row = self.fetchone(conn, text, params)
        return None if row is None else row_type(*row)

    def fetchall_as(self, conn: Connection, text: str, params: Sequence[Any], row_type: Callable[..., T]) -> list[T]:
        """Every row of ``text`` as ``row_type`` (fields in the order of the SELECT list)."""
        return [row_type(*row) for row in self.fetchall(conn, text, params)]

    def scalar(self, conn: Connection, text: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row of ``text``; None where there is no row."""
        row = self.fetchone(conn, text, params)
        if row is None:
            return None
        first, *_ = row
        return first

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Connection]:
        """A short-lived connection in one transaction: for the CLI and admin paths."""
        conn = self.connect()
        try:
            self.begin(conn, write=write)
            try:
                yield conn
            except BaseException:
                self.rollback(conn)
                raise
            self.commit(conn)
        finally:
            conn.close()

    def reader(self) -> Connection:
        """A connection kept per thread for reads outside the writer (see ``magpie.store.reader``)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def drop_reader(self) -> None:
        """Forget this thread's reader connection (after an error); it is closed with the rest."""
        self._local.conn = None

    def close_readers(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            try:
                conn.close()
            except Exception:
                pass
        self._local = threading.local()

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to the newest migration (Alembic), or to ``revision``.

        A store already at the newest one is told by one query, without loading Alembic and SQLAlchemy
        (a third of a CLI command's time).
        """
        if revision == "head" and self._at_head():
            return
        from alembic import command
        from alembic.config import Config
        from sqlalchemy import create_engine, pool

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        engine = create_engine(self.sqlalchemy_url, poolclass=pool.NullPool)
        try:
            with engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, revision)
        finally:
            engine.dispose()

    def _at_head(self) -> bool:
        if self.is_sqlite and not Path(self.path).exists():
            return False
        query = "SELECT version_num FROM alembic_version"
        try:
            # A plain connection, apart from the outage bookkeeping of ``connect``: whatever fails here
            # (no version table yet, no store, no server) is left to Alembic to report.
            if self.is_sqlite:
                with contextlib.closing(sqlite3.connect(self.path, timeout=30.0)) as lite:
                    row = lite.execute(query).fetchone()
            else:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10) as pg:
                    row = pg.execute(query).fetchone()
        except (sqlite3.Error, psycopg.Error):
            return False
        return row is not None and tuple(row) == (head_revision(),)

    def current_revision(self) -> str | None:
        from sqlalchemy import create_engine, pool, text

        engine = create_engine(self.sqlalchemy_url, poolclass=pool.NullPool)
        try:
            with engine.connect() as connection:
                try:
                    version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
                except Exception:
                    return None
                return None if version is None else str(version)
        finally:
            engine.dispose()
