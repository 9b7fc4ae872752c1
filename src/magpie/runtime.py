"""What one magpie process runs on, opened in one place: ``magpie serve`` and ``magpie worker`` alike.

The app's lifespan and ``run_worker`` both call ``Runtime.open(settings)`` and ``close()``;
handlers reach it through ``magpie.api.http.context.Context``, dispatchers directly.

>>> runtime = Runtime.open(settings, purge_events=True)  # doctest: +SKIP
>>> await runtime.reader.read(lambda conn: runtime.db.fetchone(conn, "SELECT 1"))  # doctest: +SKIP
>>> await runtime.close()  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from magpie.config import Settings
from magpie.metrics import Metrics
from magpie.store.crypto import Cipher
from magpie.store.db import Database
from magpie.store.events import Retention
from magpie.store.reader import Reader
from magpie.store.writer import GroupCommitWriter, ProcessWriter, Writer


@dataclass
class Runtime:
    """The database, its writer and readers, the data key, metrics and the event purge of a process."""

    settings: Settings
    db: Database
    cipher: Cipher
    writer: Writer
    reader: Reader
    metrics: Metrics
    # Read at every use (the event purge included), so a test can move time forward.
    clock: Callable[[], float] = time.time
    # Wake this process's dispatchers when work arrives, instead of letting them poll for it.
    wakers: list[Callable[[], None]] = field(default_factory=list)
    retention: Retention = field(init=False)

    def __post_init__(self) -> None:
        self.retention = Retention(
            writer=self.writer,
            retention_days=self.settings.event_retention_days,
            interval=self.settings.event_purge_interval_seconds,
            clock=lambda: self.clock(),
        )

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        db: Database | None = None,
        metrics: Metrics | None = None,
        migrate: bool = True,
        purge_events: bool = False,
    ) -> Runtime:
        """Open everything; call it on the event loop that will submit to the writer."""
        db = db or Database(settings.database_url)
        if migrate:
            db.upgrade()
        cipher = Cipher.load(secret_key=settings.secret_key, data_dir=settings.data_dir)
        metrics = metrics or Metrics()
        writer: Writer
        if settings.writer == "process":
            # The database work runs beside the event loop, not under its GIL.
            writer = ProcessWriter(
                db=db,
                batch_max=settings.batch_max,
                secret_key=cipher.key,
                on_batch=metrics.observe_batch,
                freeze_gc=settings.freeze_gc,
            )
        else:
            writer = GroupCommitWriter(
                db=db, batch_max=settings.batch_max, secret=cipher, on_batch=metrics.observe_batch
            )
        writer.start()
        runtime = cls(settings=settings, db=db, cipher=cipher, writer=writer, reader=Reader(db), metrics=metrics)
        if purge_events:
            runtime.retention.start()
        return runtime

    def wake_workers(self) -> None:
        for wake in self.wakers:
            wake()

    async def close(self) -> None:
        await self.retention.stop()
        self.writer.stop()
        self.reader.close()
