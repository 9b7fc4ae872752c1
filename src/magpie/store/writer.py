"""The group-commit writer: many requests, one transaction, one fsync.

Requests hand the writer a ``Job``; a dedicated thread gathers whatever jobs are waiting
(up to ``batch_max``), runs them in order inside one transaction, commits once, and only
then answers every caller, with one event-loop wake-up per batch. A job that raises a
``MagpieError`` fails alone: jobs stage their changes in the ``Tx`` only after validating,
so a rejected request leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from magpie.errors import MagpieError, ServiceUnavailable
from magpie.store.db import RETRYABLE_ERRORS, Database
from magpie.store.tx import Tx

log = logging.getLogger("magpie.writer")

_STOP = object()


class Job(Protocol):
    def run(self, tx: Tx) -> Any: ...


class FnJob:
    """Wrap a plain function of the transaction as a job."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Tx], Any]) -> None:
        self.fn = fn

    def run(self, tx: Tx) -> Any:
        return self.fn(tx)


_Entry = tuple[Job, asyncio.AbstractEventLoop | None, Any]


def _deliver(pairs: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for future, value, failed in pairs:
        if future.done():
            continue
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)


class GroupCommitWriter:
    """One writer thread owning one connection.

    >>> writer = GroupCommitWriter(db=Database("sqlite:////tmp/w.db"))  # doctest: +SKIP
    >>> writer.start(); await writer.submit(FnJob(lambda tx: 1))  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        db: Database,
        batch_max: int = 512,
        secret: Any = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.db = db
        self.batch_max = batch_max
        self.secret = secret
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._on_batch = on_batch

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="magpie-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue ``job``; the future resolves after its batch commits."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((job, loop, future))
        return future

    def run_sync(self, job: Job, timeout: float = 60.0) -> Any:
        """Run ``job`` through the writer from a thread without an event loop (the CLI, tests)."""
        done = threading.Event()
        box: list[Any] = []
        self._queue.put((job, None, (done, box)))
        if not done.wait(timeout):
            raise ServiceUnavailable("the writer did not answer in time")
        value, failed = box
        if failed:
            raise value
        return value

    # -- the writer thread -------------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.db.connect()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                self._drop_connection()
                return
            batch: list[_Entry] = [first]
            stop_after = False
            while len(batch) < self.batch_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop_after = True
                    break
                batch.append(item)
            started = time.perf_counter()
            outcomes = self._run_batch([job for job, _, _ in batch])
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)
            self._answer(batch, outcomes)
            if stop_after:
                self._drop_connection()
                return

    def _answer(self, batch: list[_Entry], outcomes: list[tuple[Any, bool]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, bool]]] = {}
        for (_, loop, target), (value, failed) in zip(batch, outcomes, strict=True):
            if loop is None:
                done, box = target
                box.extend((value, failed))
                done.set()
            else:
                by_loop.setdefault(loop, []).append((target, value, failed))
        for loop, pairs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, pairs)
            except RuntimeError:  # the loop closed while we were committing
                pass

    def _run_batch(self, jobs: list[Job]) -> list[tuple[Any, bool]]:
        for attempt in range(5):
            try:
                return self._run_once(jobs)
            except RETRYABLE_ERRORS:
                # Deadlock or serialisation failure between processes: the batch rolled back whole.
                time.sleep(0.001 * (2**attempt))
            except Exception as exc:
                log.warning("batch of %d failed (%s); retrying jobs one by one", len(jobs), type(exc).__name__)
                self._drop_connection()
                if len(jobs) == 1:
                    return [(self._unavailable(exc), True)]
                return [self._run_single(job) for job in jobs]
        return [(ServiceUnavailable("the database kept aborting the transaction"), True) for _ in jobs]

    def _run_single(self, job: Job) -> tuple[Any, bool]:
        for attempt in range(5):
            try:
                return self._run_once([job])[0]
            except RETRYABLE_ERRORS:
                time.sleep(0.001 * (2**attempt))
            except Exception as exc:
                self._drop_connection()
                return (self._unavailable(exc), True)
        return (ServiceUnavailable("the database kept aborting the transaction"), True)

    @staticmethod
    def _unavailable(exc: BaseException) -> MagpieError:
        log.error("storage error: %s: %s", type(exc).__name__, exc)
        return ServiceUnavailable()

    def _run_once(self, jobs: list[Job]) -> list[tuple[Any, bool]]:
        conn = self._connection()
        db = self.db
        db.begin(conn)
        try:
            tx = Tx(db=db, conn=conn, secret=self.secret)
            tx.prefetch(jobs)
            outcomes: list[tuple[Any, bool]] = []
            for job in jobs:
                tx.begin_job()
                try:
                    outcomes.append((job.run(tx), False))
                except MagpieError as exc:
                    tx.undo_job()
                    outcomes.append((exc, True))
                else:
                    tx.end_job()
            tx.flush()
            db.commit(conn)
        except BaseException:
            db.rollback(conn)
            raise
        for callback in tx.after_commit:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed")
        return outcomes
