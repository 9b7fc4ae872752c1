"""The group-commit writer: many requests, one transaction, one fsync.

Requests hand the writer a ``Job``; the writer gathers whatever jobs are waiting (up to
``batch_max``), runs them in order inside one transaction, commits once, and only then
answers every caller, with one event-loop wake-up per batch. A job that raises a
``MagpieError`` fails alone: jobs stage their changes in the ``Tx`` only after validating,
so a rejected request leaves nothing behind.

Two writers share that ``BatchRunner``:

- ``GroupCommitWriter`` runs it on a thread of the calling process (the CLI, tests, workers).
- ``ProcessWriter`` runs it in a child process, which `magpie serve` uses: the child's Python
  work then never competes with the event loop for the GIL. Jobs and results cross a pipe,
  pickled once per batch in each direction.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import select
import struct
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection as Pipe
from typing import Any, Generic, Protocol, TypeVar, cast

from magpie.errors import InvalidApiKey, InvalidRequest, MagpieError, ServiceUnavailable, StorageRefused
from magpie.logs import Throttle, configure_logging
from magpie.store.db import DATA_ERRORS, OPERATIONAL_ERRORS, RETRYABLE_ERRORS, Connection, Database
from magpie.store.transaction import ProfileKey, Tx

log = logging.getLogger("magpie.writer")
_outage_log = Throttle(interval=1.0)

_STOP = object()
# The capacity asked for the pipes to and from the writer child (Linux's default cap for a process).
_PIPE_BYTES = 1 << 20


T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Job(Protocol[T_co]):
    """A unit of work for the writer; ``submit(job)`` resolves to what ``run`` returns.

    Every job declares the four members the writer uses (``JobDefaults`` gives the usual ones):

    - ``key_hash``: the API key it acts for, checked when the batch opens and dropped from every
      cache when the writer finds it revoked (None: no key);
    - ``profile_keys``: the profiles the batch reads and locks up front, in one round trip;
    - ``prepare()``: validation before the batch reads anything; a ``MagpieError`` there fails
      this job alone;
    - ``run(tx)``: the work, inside the batch's transaction.
    """

    @property
    def key_hash(self) -> str | None: ...

    @property
    def profile_keys(self) -> tuple[ProfileKey, ...]: ...

    def prepare(self) -> None: ...

    def run(self, tx: Tx) -> T_co: ...


class JobDefaults:
    """What most jobs leave as it is: no API key, no profiles read up front, nothing to validate first."""

    __slots__ = ()
    key_hash: str | None = None
    profile_keys: tuple[ProfileKey, ...] = ()

    def prepare(self) -> None:
        return None


class FnJob(JobDefaults, Generic[T]):
    """Wrap a plain function of the transaction as a job (thread writer only: it cannot be pickled)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Tx], T]) -> None:
        self.fn = fn

    def run(self, tx: Tx) -> T:
        return self.fn(tx)


Outcome = tuple[object, bool]  # (value or exception, failed)


class _Checkpointer:
    """Checkpoints SQLite's WAL on its own connection and thread, off the commit path.

    With automatic checkpoints, every thousandth commit also copies the WAL into the
    database and fsyncs it, and the requests of that batch wait for it: a latency spike.
    """

    def __init__(self, db: Database, interval: float = 0.5) -> None:
        self._db = db
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="magpie-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = self._db.connect()
        try:
            while not self._stop.wait(self._interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except Exception as exc:
                    log.warning("WAL checkpoint failed: %s", exc)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:
            log.warning("final WAL checkpoint failed: %s", exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class BatchRunner:
    """Runs batches of jobs in one transaction each, on one connection it owns."""

    def __init__(self, *, db: Database, secret: Any = None) -> None:
        self.db = db
        self.secret = secret
        self._conn: Connection | None = None
        self._checkpointer: _Checkpointer | None = None

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = conn = self.db.connect()
            if self.db.is_sqlite:
                conn.execute("PRAGMA wal_autocheckpoint=0")
                if self._checkpointer is None:
                    self._checkpointer = _Checkpointer(self.db)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def shutdown(self) -> None:
        self.close()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None

    def run_batch(self, jobs: Sequence[Job[object]]) -> list[Outcome]:
        for attempt in range(5):
            try:
                return self._run_once(jobs)
            except RETRYABLE_ERRORS:
                # Deadlock or serialisation failure between processes: the batch rolled back whole.
                time.sleep(0.001 * (2**attempt))
            except OPERATIONAL_ERRORS as exc:
                # The database is unreachable: every job would fail the same way, one by one.
                self.close()
                return [(self._unavailable(exc), True) for _ in jobs]
            except Exception as exc:
                log.warning("batch of %d failed (%s); retrying jobs one by one", len(jobs), type(exc).__name__)
                self.close()
                if len(jobs) == 1:
                    return [(self._unavailable(exc), True)]
                return [self._run_single(job) for job in jobs]
        return [(ServiceUnavailable("the database kept aborting the transaction"), True) for _ in jobs]

    def _run_single(self, job: Job[object]) -> Outcome:
        for attempt in range(5):
            try:
                (outcome,) = self._run_once([job])
                return outcome
            except RETRYABLE_ERRORS:
                time.sleep(0.001 * (2**attempt))
            except Exception as exc:
                self.close()
                return (self._unavailable(exc), True)
        return (ServiceUnavailable("the database kept aborting the transaction"), True)

    @staticmethod
    def _unavailable(exc: BaseException) -> MagpieError:
        if isinstance(exc, DATA_ERRORS):
            # The database refused this job's data: running it again cannot succeed.
            log.error("storage refused the data: %s: %s", type(exc).__name__, exc)
            return StorageRefused()
        suppressed = _outage_log.ready()
        if suppressed is not None:
            log.error("storage error: %s: %s (%d more since the last line)", type(exc).__name__, exc, suppressed)
        return ServiceUnavailable()

    def _run_once(self, jobs: Sequence[Job[object]]) -> list[Outcome]:
        # Jobs that carry a raw request validate it first; a bad one is answered without a read.
        rejected: dict[int, MagpieError] = {}
        for index, job in enumerate(jobs):
            try:
                job.prepare()
            except MagpieError as exc:
                rejected[index] = exc
            except Exception as exc:
                # Never let one request's body fail the batch it was gathered into.
                log.warning("request rejected while decoding: %s: %s", type(exc).__name__, exc)
                rejected[index] = InvalidRequest("the request body could not be decoded")
        conn = self._connection()
        db = self.db
        try:
            tx = Tx(db=db, conn=conn, secret=self.secret)
            admitted = [job for index, job in enumerate(jobs) if index not in rejected]
            tx.open(
                key_hashes=(job.key_hash for job in admitted if job.key_hash),
                profile_keys=(key for job in admitted for key in job.profile_keys),
            )
            outcomes: list[Outcome] = []
            for index, job in enumerate(jobs):
                if index in rejected:
                    outcomes.append((rejected[index], True))
                    continue
                tx.begin_job()
                try:
                    outcomes.append((job.run(tx), False))
                except MagpieError as exc:
                    tx.undo_job()
                    outcomes.append((exc, True))
                else:
                    tx.end_job()
            tx.commit()
        except BaseException:
            db.rollback(conn)
            raise
        for callback in tx.after_commit:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed")
        return outcomes


def _deliver(pairs: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for future, value, failed in pairs:
        if future.done():
            continue
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)


class _Answers:
    """Hands outcomes back to their callers: futures on event loops, or waiting threads."""

    def __init__(self, on_invalid_key: Callable[[str], None] | None) -> None:
        self.on_invalid_key = on_invalid_key

    def answer(self, targets: list[tuple[Job[object], Any, Any]], outcomes: list[Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, bool]]] = {}
        for (job, loop, target), (value, failed) in zip(targets, outcomes, strict=True):
            if failed and isinstance(value, InvalidApiKey) and self.on_invalid_key is not None:
                if job.key_hash:
                    self.on_invalid_key(job.key_hash)  # a revoked key must leave every cache at once
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


def _wait_box(done: threading.Event, box: list[Any], timeout: float) -> Any:
    if not done.wait(timeout):
        raise ServiceUnavailable("the writer did not answer in time")
    value, failed = box
    if failed:
        raise value
    return value


class _WriterBase:
    """What both writers share: the hook that drops a revoked key from the callers' caches."""

    _answers: _Answers

    @property
    def on_invalid_key(self) -> Callable[[str], None] | None:
        return self._answers.on_invalid_key

    @on_invalid_key.setter
    def on_invalid_key(self, callback: Callable[[str], None] | None) -> None:
        self._answers.on_invalid_key = callback


class GroupCommitWriter(_WriterBase):
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
        on_invalid_key: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        self.batch_max = batch_max
        self._runner = BatchRunner(db=db, secret=secret)
        self._answers = _Answers(on_invalid_key)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
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

    def submit(self, job: Job[T]) -> asyncio.Future[T]:
        """Queue ``job``; the future resolves after its batch commits."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((job, loop, future))
        return future

    def run_sync(self, job: Job[T], timeout: float = 60.0) -> T:
        """Run ``job`` through the writer from a thread without an event loop (the CLI, tests)."""
        done = threading.Event()
        box: list[Any] = []
        self._queue.put((job, None, (done, box)))
        return cast(T, _wait_box(done, box, timeout))

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                self._runner.shutdown()
                return
            batch = [first]
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
            outcomes = self._runner.run_batch([job for job, _, _ in batch])
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)
            self._answers.answer(batch, outcomes)
            if stop_after:
                self._runner.shutdown()
                return


# -- the writer in a child process -----------------------------------------------------------------


def _child_main(
    jobs_in: Pipe,
    answers_out: Pipe,
    url: str,
    batch_max: int,
    secret_key: bytes | None,
    log_level: int = logging.INFO,
    freeze_gc: bool = True,
) -> None:
    """The child process: receive pickled jobs, group-commit them, send back outcomes."""
    import gc
    import signal

    from magpie.store.crypto import Cipher

    # The parent decides when we stop: Ctrl-C and a service manager's SIGTERM reach the whole process
    # group, and the parent still needs us to commit what it drains before it exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(log_level)  # the same JSON lines as the parent
    runner = BatchRunner(db=Database(url), secret=Cipher(secret_key) if secret_key else None)
    try:
        while True:
            try:
                data = jobs_in.recv_bytes()
            except (EOFError, OSError):
                return  # the parent is gone
            if not data:
                return
            items: list[tuple[int, Job[object]]] = pickle.loads(data)
            stop_after = False
            while len(items) < batch_max and jobs_in.poll():
                more = jobs_in.recv_bytes()
                if not more:
                    stop_after = True
                    break
                items.extend(pickle.loads(more))
            started = time.perf_counter()
            outcomes = runner.run_batch([job for _, job in items])
            elapsed = time.perf_counter() - started
            answer = [(seq, value, failed) for (seq, _), (value, failed) in zip(items, outcomes, strict=True)]
            try:
                answers_out.send_bytes(pickle.dumps((answer, elapsed), protocol=pickle.HIGHEST_PROTOCOL))
            except (BrokenPipeError, OSError):
                return
            if stop_after:
                return
            if freeze_gc:
                # The first batch loaded the job modules and opened the connection: from now on they stay
                # out of every collection (as `magpie serve` does after start-up), so collections stay short.
                freeze_gc = False
                gc.collect()
                gc.freeze()
    finally:
        runner.shutdown()


def _frame(data: bytes) -> bytes:
    """multiprocessing.Connection's framing, so the child reads with ``recv_bytes``."""
    if len(data) > 0x7FFFFFFF:
        return struct.pack("!iQ", -1, len(data)) + data
    return struct.pack("!i", len(data)) + data


def _fail_future(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(ServiceUnavailable())


class ProcessWriter(_WriterBase):
    """The group-commit writer in a child process; the same interface as ``GroupCommitWriter``.

    Jobs submitted during one turn of the event loop travel to the child in one message; the
    child drains every message waiting, commits them together, and answers in one message.
    Both pipes are driven by the event loop without blocking it: outgoing frames are buffered
    until the pipe takes them, incoming bytes are reassembled into frames.
    """

    def __init__(
        self,
        *,
        db: Database,
        batch_max: int = 512,
        secret_key: bytes | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        on_invalid_key: Callable[[str], None] | None = None,
        freeze_gc: bool = True,
    ) -> None:
        self.db = db
        self.batch_max = batch_max
        self._secret_key = secret_key
        self._freeze_gc = freeze_gc
        self._on_batch = on_batch
        self._answers = _Answers(on_invalid_key)
        self._seq = itertools.count()
        self._waiting: dict[int, tuple[Job[object], Any, Any]] = {}
        self._outbox: list[tuple[int, Job[object]]] = []
        self._flush_scheduled = False
        self._process: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_fd = -1
        self._recv_fd = -1
        self._pending_out: collections.deque[bytes] = collections.deque()
        self._in = bytearray()
        self._stopping = False

    def start(self) -> None:
        """Start the child; call it on the event loop that will submit jobs (answers are read there)."""
        if self._process is not None:
            return
        self._loop = loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        jobs_in, jobs_out = context.Pipe(duplex=False)
        answers_in, answers_out = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_child_main,
            args=(
                jobs_in,
                answers_out,
                self.db.url,
                self.batch_max,
                self._secret_key,
                logging.getLogger("magpie").getEffectiveLevel(),
                self._freeze_gc,
            ),
            name="magpie-writer",
            daemon=True,
        )
        self._process.start()
        jobs_in.close()
        answers_out.close()
        # Keep the descriptors; the Connection objects would close them when collected.
        self._send_fd = os.dup(jobs_out.fileno())
        self._recv_fd = os.dup(answers_in.fileno())
        jobs_out.close()
        answers_in.close()
        os.set_blocking(self._send_fd, False)
        os.set_blocking(self._recv_fd, False)
        for fd in (self._send_fd, self._recv_fd):
            # A batch of a thousand recipients is a frame of 30-60 KB: a pipe of 1 MB (Linux) takes it in one
            # write instead of the loop draining it in pieces as the child reads.
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self._pending_out.clear()
        self._in.clear()
        self._stopping = False
        loop.add_reader(self._recv_fd, self._on_readable)

    def stop(self) -> None:
        if self._process is None:
            return
        self._stopping = True
        self._flush()
        self._write(_frame(b""))
        # Drain the answers of the last batches while the child finishes them.
        deadline = time.monotonic() + 30
        while self._process.is_alive() and time.monotonic() < deadline:
            if self._pending_out:
                self._drain()
            readable, _, _ = select.select([self._recv_fd], [], [], 0.05)
            if readable and not self._on_readable():
                break
        self._process.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._close_fds()
        self._process = None
        self._fail_waiting()

    def _close_fds(self) -> None:
        loop = self._loop
        for fd, remove in ((self._recv_fd, "reader"), (self._send_fd, "writer")):
            if fd < 0:
                continue
            if loop is not None and not loop.is_closed():
                loop.remove_reader(fd) if remove == "reader" else loop.remove_writer(fd)
            os.close(fd)
        self._recv_fd = self._send_fd = -1

    def submit(self, job: Job[T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        seq = next(self._seq)
        self._waiting[seq] = (job, loop, future)
        self._outbox.append((seq, job))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def run_sync(self, job: Job[T], timeout: float = 60.0) -> T:
        """Run ``job`` from a thread other than the writer's event loop."""
        loop = self._loop
        if loop is None:
            raise ServiceUnavailable("the writer is not running")

        async def submit() -> T:
            return await self.submit(job)

        return asyncio.run_coroutine_threadsafe(submit(), loop).result(timeout)

    # -- sending --------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._outbox = self._outbox, []
        if batch:
            if self._send_fd < 0:
                self._fail([seq for seq, _ in batch])
                return
            self._write(_frame(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)))

    def _write(self, frame: bytes) -> None:
        if self._send_fd < 0:
            return
        if not self._pending_out:
            try:
                written = os.write(self._send_fd, frame)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # the child is gone: the reader side notices and fails the waiting jobs
            if written == len(frame):
                return
            frame = frame[written:]
            assert self._loop is not None
            self._loop.add_writer(self._send_fd, self._drain)
        self._pending_out.append(frame)

    def _drain(self) -> None:
        while self._pending_out:
            chunk = self._pending_out.popleft()
            try:
                written = os.write(self._send_fd, chunk)
            except BlockingIOError:
                self._pending_out.appendleft(chunk)
                return
            except OSError:
                self._pending_out.clear()
                break
            if written < len(chunk):
                self._pending_out.appendleft(chunk[written:])
                return
        if self._loop is not None and self._send_fd >= 0:
            self._loop.remove_writer(self._send_fd)

    # -- receiving ------------------------------------------------------------------------------

    def _on_readable(self) -> bool:
        """Read what the child sent; returns False once the pipe is closed."""
        try:
            data = os.read(self._recv_fd, 1 << 20)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self._child_gone()
            return False
        buffer = self._in
        buffer += data
        while len(buffer) >= 4:
            (size,) = struct.unpack_from("!i", buffer)
            header = 4
            if size == -1:
                if len(buffer) < 12:
                    break
                (size,) = struct.unpack_from("!Q", buffer, 4)
                header = 12
            if len(buffer) < header + size:
                break
            payload = bytes(buffer[header : header + size])
            del buffer[: header + size]
            self._handle(payload)
        return True

    def _handle(self, payload: bytes) -> None:
        answer, elapsed = pickle.loads(payload)
        for seq, value, failed in answer:
            target = self._waiting.pop(seq, None)
            if target is None:
                continue
            job, _, future = target
            if failed and isinstance(value, InvalidApiKey) and self._answers.on_invalid_key is not None:
                if job.key_hash:
                    self._answers.on_invalid_key(job.key_hash)  # a revoked key leaves every cache at once
            if not future.done():
                if failed:
                    future.set_exception(value)
                else:
                    future.set_result(value)
        if self._on_batch is not None:
            self._on_batch(len(answer), elapsed)

    def _child_gone(self) -> None:
        self._close_fds()
        self._fail_waiting()
        if not self._stopping:
            # Whatever it was committing is either committed or rolled back; its callers got a
            # 503 and may retry. A new child takes over at once.
            log.error("the writer process exited unexpectedly; pending requests failed with 503; restarting it")
            if self._process is not None:
                self._process.join(timeout=5)
            self._process = None
            self.start()

    def _fail(self, seqs: list[int]) -> None:
        for seq in seqs:
            target = self._waiting.pop(seq, None)
            if target is None:
                continue
            _, loop, future = target
            if not future.done():
                loop.call_soon_threadsafe(_fail_future, future)

    def _fail_waiting(self) -> None:
        self._fail(list(self._waiting))


Writer = GroupCommitWriter | ProcessWriter
