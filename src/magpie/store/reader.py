"""Reads off the event loop: the one way magpie reads outside the writer.

``await reader.read(fn)`` runs ``fn(conn)`` on a reader thread, on that thread's connection,
inside one read transaction on SQLite (one snapshot for everything ``fn`` reads). An outage
drops the thread's connection and raises ``ServiceUnavailable``, so every caller — the API,
the dispatch worker, the admin pages — answers or retries the same way.

>>> reader = Reader(Database("sqlite:////tmp/r.db"))  # doctest: +SKIP
>>> await reader.read(lambda conn: reader.db.fetchone(conn, "SELECT 1"))  # doctest: +SKIP
(1,)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from magpie.errors import ServiceUnavailable
from magpie.store.db import OPERATIONAL_ERRORS, Connection, Database

T = TypeVar("T")


class Reader:
    """A small pool of reader threads, each keeping one connection."""

    def __init__(self, db: Database, *, threads: int = 4) -> None:
        self.db = db
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="magpie-read")

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` in one read transaction on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.read_here, fn)

    def read_here(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` in one read transaction on the calling thread's reader connection."""
        db = self.db
        try:
            conn = db.reader()
            # SQLite: one snapshot for all of fn. PostgreSQL connections autocommit, so each
            # statement reads committed data without the round trips of BEGIN and ROLLBACK.
            if db.is_sqlite:
                conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("ROLLBACK") if db.is_sqlite else conn.rollback()
        except OPERATIONAL_ERRORS as exc:
            db.drop_reader()
            raise ServiceUnavailable() from exc

    async def call(self, fn: Callable[[], T]) -> T:
        """Run a store function that opens its own short transaction (the admin API's account and
        campaign changes, shared with the CLI) on a reader thread, with the same outage answer."""

        def guarded() -> T:
            try:
                return fn()
            except OPERATIONAL_ERRORS as exc:
                raise ServiceUnavailable() from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, guarded)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.db.close_readers()
