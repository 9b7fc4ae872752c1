"""The dispatch worker: claim work items and run each through the pipeline of ``magpie.dispatch.stages``.

Every recipient ends with exactly one outcome: SENT, FAILED, or EXCLUDED with a reason
(NOT_IN_AUDIENCE, NO_CONSENT, NIGHT_TIME_DROPPED, FREQUENCY_CAP, NO_PUSH_TOKEN,
UNKNOWN_USER, CONTROL_GROUP). Night-time marketing recipients are handed to a work item that becomes
available when the night ends, and are decided again then.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

from magpie.config import Settings
from magpie.dispatch import stages
from magpie.dispatch.phone import PhoneSender
from magpie.dispatch.push import PushSender
from magpie.dispatch.retry import backoff
from magpie.dispatch.scheduler import Scheduler
from magpie.dispatch.stages import Batch, Context, Sender, Sleep
from magpie.domain.campaigns import Campaign
from magpie.domain.delivery import Channel, Reason
from magpie.domain.phone import mask
from magpie.errors import MagpieError, ServiceUnavailable
from magpie.providers.base import PhoneMessage, PushMessage
from magpie.providers.registry import ProviderRegistry
from magpie.runtime import Runtime
from magpie.store.deliveries import ClaimWork, ExtendLease, FinishItem, InboxRecord, RetryItem, WorkItem
from magpie.store.transaction import dumps

log = logging.getLogger("magpie.worker")

# The reason recipients fail with when their work item is given up.
PROCESSING_ERROR = Reason.PROCESSING_ERROR


async def _first_done(tasks: set[asyncio.Task[None]]) -> bool:
    await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
    return True


class Dispatcher:
    """Claims work items and runs each through the pipeline. One per worker task; many may share a database.

    Its clock is the runtime's unless one is given (tests move time with it).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        settings: Settings | None = None,
        channels: ProviderRegistry | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Sleep = asyncio.sleep,
        owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        settings = settings or runtime.settings
        self.runtime = runtime
        self.writer = runtime.writer
        self.settings = settings
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.ctx = Context(
            runtime=runtime,
            settings=settings,
            channels=channels
            or ProviderRegistry(
                record_sandbox=self._record_sandbox,
                record_phone=self._record_phone,
                timeout=settings.provider_timeout_seconds,
                concurrency=settings.worker_concurrency,
                fetch_allow=settings.fetch_allow_networks,
            ),
            clock=clock or (lambda: runtime.clock()),
            sleep=sleep,
            rng=rng or random.Random(),
            owner=self.owner,
            send_slots=asyncio.Semaphore(settings.worker_concurrency),
        )
        self.channels = self.ctx.channels
        self.metrics = runtime.metrics
        self.senders: dict[Channel, Sender] = {
            Channel.PUSH: PushSender(self.ctx),
            Channel.KAKAO: PhoneSender(self.ctx, Channel.KAKAO),
            Channel.SMS: PhoneSender(self.ctx, Channel.SMS),
        }
        self._campaigns = stages.Campaigns()
        self.wake = asyncio.Event()
        self._active: set[int] = set()

    def now_ms(self) -> int:
        return self.ctx.now_ms()

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and process work until ``stop`` is set."""
        in_flight: set[asyncio.Task[None]] = set()
        # A gateway batch takes one send slot, so as many items as slots; push items are bounded
        # further by their sender (each sends many pushes at once).
        max_items = max(2, self.settings.worker_concurrency)
        # Recipients held by the items in flight: a claim takes only what fits beside them, so that a
        # worker handed dispatches of 1,000 (broadcasts) loads a few at a time, not max_items of them.
        max_recipients = max(1, self.settings.worker_recipients)
        held = [0]

        def release(size: int) -> Callable[[asyncio.Task[None]], None]:
            def done(_: asyncio.Task[None]) -> None:
                held[0] -= size

            return done

        next_poll = time.monotonic() + self.settings.report_poll_seconds
        while not stop.is_set():
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.settings.report_poll_seconds
                try:
                    await self.poll_reports()
                except Exception:
                    log.exception("polling gateway results failed")
            free = max_items - len(in_flight)
            room = max_recipients - held[0]
            items: list[WorkItem] = []
            if free > 0 and room > 0:
                try:
                    items = await self._claim(free, max_recipients=room)
                except ServiceUnavailable:
                    await self._pause(stop, 1.0)  # the writer and the store log the outage, once a second
                    continue
                except Exception:
                    log.exception("claiming work failed")
                    await self._pause(stop, 1.0)
                    continue
            for item in items:
                task = asyncio.create_task(self._process_guarded(item))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                held[0] += item.size
                task.add_done_callback(release(item.size))
            if not items:
                self.wake.clear()
                waiters: list[asyncio.Task[Any]] = [
                    asyncio.create_task(self.wake.wait()),
                    asyncio.create_task(stop.wait()),
                ]
                if in_flight and (free <= 0 or room <= 0):
                    waiters.append(asyncio.create_task(_first_done(in_flight)))
                _, pending = await asyncio.wait(
                    waiters, timeout=self.settings.poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in pending:
                    waiter.cancel()
            elif free - len(items) <= 0:
                # Full: claim again once half the items are done, so that each claim (one writer
                # transaction) brings many items rather than one per item finished.
                while len(in_flight) > max_items // 2 and not stop.is_set():
                    await asyncio.wait(set(in_flight), return_when=asyncio.FIRST_COMPLETED)
        if in_flight:
            await asyncio.wait(set(in_flight), timeout=30)

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _claim(self, limit: int, *, max_recipients: int | None = None) -> list[WorkItem]:
        return await self.writer.submit(
            ClaimWork(
                owner=self.owner,
                now_ms=self.now_ms(),
                lease_ms=int(self.settings.lease_seconds * 1000),
                limit=limit,
                max_recipients=max_recipients,
            )
        )

    async def run_until_idle(self, *, timeout: float = 60.0) -> int:
        """Process every available item, then return how many were processed (tests, CLI)."""
        processed = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = await self._claim(16, max_recipients=self.settings.worker_recipients)
            if not items:
                return processed
            await asyncio.gather(*(self._process_guarded(item) for item in items))
            processed += len(items)
        return processed

    async def _process_guarded(self, item: WorkItem) -> None:
        if item.id in self._active:
            # Re-claimed after its lease lapsed while this dispatcher still works on it: one is enough.
            return
        self._active.add(item.id)
        heartbeat = asyncio.create_task(self._heartbeat(item))
        try:
            await self.process(item)
        except ServiceUnavailable:
            # Storage is down: the lease lapses and the item is resumed once storage is back,
            # however long that takes (an outage is not the item's fault).
            log.warning("work item %s of dispatch %s paused: storage unavailable", item.id, item.dispatch_id)
        except Exception as exc:
            heartbeat.cancel()
            await self._failed(item, exc)
        finally:
            heartbeat.cancel()
            self._active.discard(item.id)

    async def _failed(self, item: WorkItem, exc: Exception) -> None:
        """A work item failed for its own reason: retry it a bounded number of times, then give up.

        Giving up ends its remaining recipients ``FAILED`` (``PROCESSING_ERROR``), so that no
        dispatch can stay pending forever because of one item.
        """
        limit = self.settings.max_item_attempts
        give_up = item.attempts >= limit
        log.error(
            "work item %s of dispatch %s failed (attempt %d of %d): %s: %s%s",
            item.id,
            item.dispatch_id,
            item.attempts,
            limit,
            type(exc).__name__,
            exc,
            "; giving up: its remaining recipients fail with PROCESSING_ERROR" if give_up else "",
            exc_info=not isinstance(exc, MagpieError),
        )
        if self.metrics is not None:
            self.metrics.work_item_failures.labels("given_up" if give_up else "retried").inc()
        try:
            if give_up:
                await self.writer.submit(
                    FinishItem(
                        item_id=item.id,
                        dispatch_id=item.dispatch_id,
                        now_ms=self.now_ms(),
                        fail_reason=PROCESSING_ERROR,
                    )
                )
            else:
                delay = backoff(attempt=item.attempts, base=1.0, cap=self.settings.lease_seconds, rng=self.ctx.rng)
                await self.writer.submit(
                    RetryItem(item_id=item.id, owner=self.owner, available_ms=self.now_ms() + int(delay * 1000))
                )
        except Exception:
            # Could not record it: the lease lapses and the next claim counts another attempt.
            log.exception("could not record the failure of work item %s", item.id)

    async def _heartbeat(self, item: WorkItem) -> None:
        lease = self.settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.writer.submit(
                    ExtendLease(item_ids=[item.id], owner=self.owner, until_ms=self.now_ms() + int(lease * 1000))
                )
            except ServiceUnavailable:
                continue  # storage is down: try again at the next beat, the lease may still hold

    # -- one work item: load -> decide -> reserve -> send -> record ------------------------------------

    async def process(self, item: WorkItem) -> None:
        ctx = self.ctx
        snap, campaign = await stages.load(ctx, self._campaigns, item)
        now = ctx.now_ms()
        if not snap.exists:
            await self.writer.submit(FinishItem(item_id=item.id, dispatch_id=item.dispatch_id, now_ms=now))
            return
        if campaign is None or campaign.status != "ACTIVE":
            # Paused or removed after acceptance: the remaining recipients fail, visibly.
            await stages.reserve_nothing(ctx, snap, now_ms=now)
            await self.writer.submit(
                FinishItem(
                    item_id=item.id, dispatch_id=item.dispatch_id, now_ms=now, fail_reason=Reason.CAMPAIGN_INACTIVE
                )
            )
            return
        batch = Batch(snap=snap, campaign=campaign, now_ms=now)
        sender = self._sender(campaign)
        todo = await stages.decide(batch, sender)
        reserved = await stages.reserve(ctx, batch, todo, sender.reservation(batch))
        if reserved is None:
            log.warning("work item %s changed hands: it is left to the new owner", item.id)
            return
        items = sender.items_in_flight()
        if items is None:
            await sender.send(batch, todo.plans, reserved)
        else:
            async with items:
                await sender.send(batch, todo.plans, reserved)

    def _sender(self, campaign: Campaign) -> Sender:
        return self.senders[Channel(campaign.channel)]

    # -- sandbox ---------------------------------------------------------------------------------------

    async def _record_sandbox(self, message: PushMessage, payload: dict[str, object]) -> int:
        env_id = int(message.hackle["environmentId"])
        return await self.writer.submit(
            InboxRecord(
                env_id=env_id,
                delivery_id=int(message.delivery_id),
                token=message.token,
                payload=dumps(payload),
                now_ms=self.now_ms(),
            )
        )

    async def _record_phone(
        self, env_id: int, message: PhoneMessage, payload: dict[str, object], maybe_sent: bool
    ) -> int:
        shown = mask(message.to)
        return await self.writer.submit(
            InboxRecord(
                env_id=env_id,
                delivery_id=int(message.delivery_id),
                token=shown,
                payload=dumps({"to": shown, **payload}),
                now_ms=self.now_ms(),
                once=maybe_sent,
            )
        )

    # -- gateway reports -------------------------------------------------------------------------------

    async def poll_reports(self, *, max_age_hours: float = 72.0) -> int:
        """Ask polled gateways (NHN Cloud) for the final result of accepted messages; returns how many."""
        return await self.senders[Channel.SMS].poll_reports(max_age_hours=max_age_hours)

    async def aclose(self) -> None:
        await self.channels.aclose()


# -- process entry points --------------------------------------------------------------------------------


class Workers:
    """The dispatchers of one process, started and stopped together (``magpie serve`` and ``magpie worker``)."""

    def __init__(self, runtime: Runtime, *, count: int) -> None:
        self.runtime = runtime
        self.dispatchers = [Dispatcher(runtime) for _ in range(count)]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(d.run(self._stop)) for d in self.dispatchers]
        if self.dispatchers:
            # Broadcasts are planned beside dispatch workers only: `MAGPIE_WORKERS=0` is an API-only process.
            self._tasks.append(asyncio.create_task(Scheduler(self.runtime).run(self._stop)))
        self.runtime.wakers.extend(d.wake.set for d in self.dispatchers)

    async def stop(self) -> None:
        self._stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
        for dispatcher in self.dispatchers:
            await dispatcher.aclose()
        self._tasks = []


def run_worker(settings: Settings) -> None:
    """``magpie worker``: dispatch workers in their own process, until SIGTERM or SIGINT."""
    import uvloop

    async def main() -> None:
        runtime = Runtime.open(settings, migrate=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        workers = Workers(runtime, count=max(1, settings.workers))
        log.info("worker started with %d dispatcher(s)", len(workers.dispatchers))
        workers.start()
        if settings.freeze_gc:
            # As `magpie serve` does: what start-up loaded stays out of every later collection.
            gc.collect()
            gc.freeze()
        try:
            await stop.wait()
        finally:
            await workers.stop()
            await runtime.close()

    uvloop.run(main())
