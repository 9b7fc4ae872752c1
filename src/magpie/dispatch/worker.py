"""The dispatch worker: claim work items, decide each recipient, render, send, record.

Every recipient ends with exactly one outcome: SENT, FAILED, or EXCLUDED with a reason
(NOT_IN_AUDIENCE, NO_CONSENT, NIGHT_TIME_DROPPED, FREQUENCY_CAP, NO_PUSH_TOKEN,
UNKNOWN_USER, CONTROL_GROUP). Night-time marketing recipients are handed to a work item that becomes
available when the night ends, and are decided again then.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import msgspec
from liquid.exceptions import LiquidError

from magpie.config import Settings
from magpie.dispatch.phone import RENDER_SLICE, process_phone
from magpie.dispatch.retry import backoff
from magpie.dispatch.scheduler import Scheduler
from magpie.domain import delivery
from magpie.domain.audience import Recipient, cohort_names
from magpie.domain.campaigns import Campaign, parse_campaign
from magpie.domain.delivery import Decision, Exclude, Hold, NightRule, Rendered, Send
from magpie.domain.environment import effective
from magpie.domain.experiments import CONTROL_GROUP, Assignment, Control
from magpie.domain.phone import mask
from magpie.errors import MagpieError, ServiceUnavailable
from magpie.providers.base import PhoneMessage, ProviderError, ProviderUnavailable, PushMessage, TokenInvalid
from magpie.providers.nhn import NhnGateway
from magpie.providers.registry import ProviderRegistry
from magpie.runtime import Runtime
from magpie.store.accounts import environment_settings
from magpie.store.conversions import RecordExposures
from magpie.store.db import Connection
from magpie.store.deliveries import (
    ClaimWork,
    DeliveryResult,
    ExtendLease,
    FinishItem,
    HoldRecipients,
    InboxRecord,
    Planned,
    PrepareRecipients,
    RecordRecipient,
    RecordReports,
    RetryItem,
    Snapshot,
    Target,
    WorkItem,
    awaiting_reports,
    load_snapshot,
)
from magpie.store.transaction import dumps

log = logging.getLogger("magpie.worker")

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
# The reason recipients fail with when their work item is given up.
PROCESSING_ERROR = "PROCESSING_ERROR"


async def _first_done(tasks: set[asyncio.Task[None]]) -> bool:
    await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
    return True


@dataclass
class _Sorted:
    """One work item's open recipients, sorted by the domain's answers."""

    excluded: dict[int, tuple[str, str]] = field(default_factory=dict)  # idx -> (outcome, reason)
    planned: list[Planned] = field(default_factory=list)
    rendered: dict[int, Rendered] = field(default_factory=dict)
    hold: list[int] = field(default_factory=list)
    release_at: int = 0
    arms: dict[int, tuple[Assignment, str]] = field(default_factory=dict)  # idx -> (arm, user_key)


class Dispatcher:
    """Claims and processes work items. One per worker task; many may share a database."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        settings: Settings | None = None,
        channels: ProviderRegistry | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        settings = settings or runtime.settings
        self.runtime = runtime
        self.db = runtime.db
        self.writer = runtime.writer
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.metrics = runtime.metrics
        # Phone numbers are decrypted with it in this process only, at send time.
        self.cipher = runtime.cipher
        self.rng = rng or random.Random()
        self.channels = channels or ProviderRegistry(
            record_sandbox=self._record_sandbox,
            record_phone=self._record_phone,
            timeout=settings.provider_timeout_seconds,
            concurrency=settings.worker_concurrency,
            fetch_allow=settings.fetch_allow_networks,
        )
        self._send_slots = asyncio.Semaphore(settings.worker_concurrency)
        self._campaigns: dict[tuple[int, int], tuple[int, Campaign]] = {}
        self.wake = asyncio.Event()
        self._active: set[int] = set()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and process work until ``stop`` is set."""
        in_flight: set[asyncio.Task[None]] = set()
        max_items = max(2, self.settings.worker_concurrency // 4)
        next_poll = time.monotonic() + self.settings.report_poll_seconds
        while not stop.is_set():
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.settings.report_poll_seconds
                try:
                    await self.poll_reports()
                except Exception:
                    log.exception("polling gateway results failed")
            free = max_items - len(in_flight)
            items: list[WorkItem] = []
            if free > 0:
                try:
                    items = await self._claim(free)
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
            if not items:
                self.wake.clear()
                waiters: list[asyncio.Task[Any]] = [
                    asyncio.create_task(self.wake.wait()),
                    asyncio.create_task(stop.wait()),
                ]
                if in_flight and free <= 0:
                    waiters.append(asyncio.create_task(_first_done(in_flight)))
                _, pending = await asyncio.wait(
                    waiters, timeout=self.settings.poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in pending:
                    waiter.cancel()
            elif free - len(items) <= 0:
                await asyncio.wait(set(in_flight), return_when=asyncio.FIRST_COMPLETED)
        if in_flight:
            await asyncio.wait(set(in_flight), timeout=30)

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _claim(self, limit: int) -> list[WorkItem]:
        return await self.writer.submit(
            ClaimWork(
                owner=self.owner,
                now_ms=self.now_ms(),
                lease_ms=int(self.settings.lease_seconds * 1000),
                limit=limit,
            )
        )

    async def run_until_idle(self, *, timeout: float = 60.0) -> int:
        """Process every available item, then return how many were processed (tests, CLI)."""
        processed = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = await self._claim(16)
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
                delay = backoff(attempt=item.attempts, base=1.0, cap=self.settings.lease_seconds, rng=self.rng)
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

    # -- one work item ------------------------------------------------------------------------------

    def _campaign(self, snap: Snapshot) -> Campaign | None:
        if snap.campaign_row is None:
            return None
        definition, updated = snap.campaign_row
        cached = self._campaigns.get((snap.item.env_id, snap.campaign_key))
        if cached is not None and cached[0] == updated:
            return cached[1]
        campaign = parse_campaign(msgspec.json.decode(definition))
        self._campaigns[(snap.item.env_id, snap.campaign_key)] = (updated, campaign)
        return campaign

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        return await self.runtime.reader.read(fn)

    async def process(self, item: WorkItem) -> None:
        # Cohorts named by the campaign are needed for the snapshot: peek at the campaign first.
        cohorts: set[str] = set()
        snap: Snapshot = await self._read(lambda conn: load_snapshot(conn, self.db, item=item))
        campaign = self._campaign(snap) if snap.exists else None
        if campaign is not None:
            cohorts = cohort_names(campaign.audience)
            if cohorts:
                snap = await self._read(lambda conn: load_snapshot(conn, self.db, item=item, cohorts=cohorts))
        now = self.now_ms()
        if not snap.exists:
            await self.writer.submit(FinishItem(item_id=item.id, dispatch_id=item.dispatch_id, now_ms=now))
            return
        if campaign is None or campaign.status != "ACTIVE":
            # Paused or removed after acceptance: the remaining recipients fail, visibly.
            await self._prepare(snap, campaign, {}, [], now)
            await self.writer.submit(
                FinishItem(item_id=item.id, dispatch_id=item.dispatch_id, now_ms=now, fail_reason="CAMPAIGN_INACTIVE")
            )
            return
        if campaign.channel != "push":
            await process_phone(self, snap, campaign, now)
            return
        todo = await self._sort(snap, campaign, now)
        ids, capped = await self._prepare(snap, campaign, todo.excluded, todo.planned, now)
        await self.record_arms(snap, campaign, todo.arms, todo.excluded, capped, now)
        if todo.hold:
            await self.writer.submit(
                HoldRecipients(
                    env_id=item.env_id, dispatch_id=item.dispatch_id, idxs=todo.hold, release_ms=todo.release_at
                )
            )
        await asyncio.gather(
            *(
                self._deliver_recipient(
                    snap,
                    campaign.for_arm(todo.arms[plan.idx][0] if plan.idx in todo.arms else None),
                    plan,
                    todo.rendered[plan.idx],
                    ids.get(plan.idx, {}),
                )
                for plan in todo.planned
                if plan.idx not in capped
            )
        )
        await self.writer.submit(FinishItem(item_id=item.id, dispatch_id=item.dispatch_id, now_ms=self.now_ms()))

    async def record_arms(
        self,
        snap: Snapshot,
        campaign: Campaign,
        arms: dict[int, tuple[Assignment, str]],
        excluded: dict[int, tuple[str, str]],
        capped: set[int],
        now: int,
    ) -> None:
        """Record the arm of each recipient of an experiment that was sent to or held out as control."""
        if campaign.experiment is None:
            return
        rows = [
            (idx, arm.arm, user_key)
            for idx, (arm, user_key) in sorted(arms.items())
            if idx not in capped and (idx not in excluded or excluded[idx][1] == CONTROL_GROUP)
        ]
        if rows:
            await self.writer.submit(
                RecordExposures(
                    env_id=snap.item.env_id,
                    dispatch_id=snap.item.dispatch_id,
                    campaign_key=snap.campaign_key,
                    version=campaign.experiment.version,
                    rows=rows,
                    now_ms=now,
                )
            )

    async def _sort(self, snap: Snapshot, campaign: Campaign, now: int) -> _Sorted:
        """Ask the domain about each recipient still open in this item and sort them by the answer."""
        held_only = snap.item.payload.get("held")
        todo = _Sorted()
        night = NightRule.from_settings(snap.settings, timezone=snap.timezone)
        turn = time.monotonic()
        for idx in range(len(snap.users)):
            if time.monotonic() - turn > RENDER_SLICE:
                await asyncio.sleep(0)  # rendering is bounded per recipient, not per item: let the loop in
                turn = time.monotonic()
            if snap.outcomes.get(idx) is not None or (held_only is not None and idx not in held_only):
                continue
            target = snap.targets.get(idx)
            match self._decide(snap, campaign, target, night, now):
                case Exclude(reason=reason):
                    todo.excluded[idx] = ("EXCLUDED", reason)
                case Hold(until_ms=until_ms):
                    todo.hold.append(idx)
                    todo.release_at = until_ms
                case Send():
                    assert target is not None
                    arm = campaign.assign(user_key=target.user_key)
                    if arm is not None:
                        todo.arms[idx] = (arm, target.user_key)
                    if isinstance(arm, Control):
                        todo.excluded[idx] = ("EXCLUDED", CONTROL_GROUP)
                        continue
                    plan = self._plan(snap, campaign.for_arm(arm), target, idx)
                    if isinstance(plan, str):
                        todo.excluded[idx] = ("FAILED", plan)
                    else:
                        todo.rendered[idx], planned = plan
                        todo.planned.append(planned)
        return todo

    async def _prepare(
        self,
        snap: Snapshot,
        campaign: Campaign | None,
        excluded: dict[int, tuple[str, str]],
        planned: list[Planned],
        now: int,
        *,
        channel: str = "push",
        paid_limit: int = 0,
        day: str = "",
        batch_key: str | None = None,
    ) -> tuple[dict[int, dict[str, int]], set[int]]:
        return await self.writer.submit(
            PrepareRecipients(
                env_id=snap.item.env_id,
                dispatch_id=snap.item.dispatch_id,
                campaign_key=snap.campaign_key,
                users=snap.users,
                excluded=excluded,
                planned=planned,
                caps=delivery.frequency_caps(campaign=campaign, settings=snap.settings),
                tags=list(campaign.tags) if campaign is not None else [],
                now_ms=now,
                channel=channel,
                paid_limit=paid_limit,
                day=day,
                batch_key=batch_key,
            )
        )

    def _decide(
        self, snap: Snapshot, campaign: Campaign, target: Target | None, night: NightRule, now: int
    ) -> Decision:
        """Ask the domain about one recipient, as the snapshot shows it."""
        if target is None:
            return delivery.decide(
                campaign=campaign,
                recipient=None,
                crm={},
                has_push_token=False,
                in_cohort=lambda _: False,
                now_ms=now,
                night=night,
            )
        members = snap.memberships
        ids = {target.user_id, *target.device_ids} - {None}
        return delivery.decide(
            campaign=campaign,
            recipient=Recipient(user_id=target.user_id, device_ids=target.device_ids, properties=target.properties),
            crm=target.crm,
            has_push_token=bool(target.tokens),
            has_phone=target.phone_enc is not None,
            in_cohort=lambda name: any((name, i) in members for i in ids),
            now_ms=now,
            night=night,
        )

    def _plan(self, snap: Snapshot, campaign: Campaign, target: Target, idx: int) -> tuple[Rendered, Planned] | str:
        """The rendered message and the tokens to send it to, or the reason the recipient fails."""
        user = snap.users[idx]
        try:
            message = delivery.render(
                campaign=campaign,
                api_properties=user.get("apiProperties", {}),
                user_properties=target.properties,
                user_id=target.user_id,
                device_id=user.get("deviceId"),
                settings=snap.settings,
            )
        except LiquidError as exc:
            log.warning("render error in campaign %s: %s", campaign.key, str(exc).splitlines()[0])
            return "RENDER_ERROR"
        providers: dict[str, str] = {}
        for _, token, token_type in target.tokens:
            try:
                providers[token] = self.channels.for_token(
                    env_id=snap.item.env_id,
                    settings=snap.settings,
                    campaign_provider=campaign.provider,
                    token_type=token_type,
                ).name
            except ProviderError:
                continue
        if not providers:
            return "PROVIDER_NOT_CONFIGURED"
        tokens = [t for t in target.tokens if t[1] in providers]
        return message, Planned(
            idx=idx, user_key=target.user_key, tokens=tokens, marketing=campaign.is_marketing, provider_names=providers
        )

    async def _deliver_recipient(
        self,
        snap: Snapshot,
        campaign: Campaign,
        plan: Planned,
        rendered: Rendered,
        delivery_ids: dict[str, int],
    ) -> None:
        sends = []
        results: list[DeliveryResult] = []
        for _, token, token_type in plan.tokens:
            delivery_id = delivery_ids.get(token)
            if delivery_id is None:
                continue
            previous = snap.deliveries.get((plan.idx, token))
            if previous is not None and previous[1] != "PENDING":
                # Already settled by an earlier attempt at this item: never send twice.
                results.append(
                    DeliveryResult(delivery_id, token, previous[1], plan.provider_names[token], None, None, previous[2])
                )
                continue
            message = PushMessage(
                token=token,
                provider_type="FCM" if token_type == "FCM" else "APN",
                title=rendered.title,
                body=rendered.body,
                hackle=delivery.hackle_payload(
                    env_id=snap.item.env_id,
                    campaign=campaign,
                    exec_id=snap.exec_id,
                    delivery_id=delivery_id,
                    message=rendered,
                    provider_type=token_type,
                ),
                image_url=campaign.push_message.image_url,
                link=rendered.link,
                delivery_id=str(delivery_id),
                collapse_id=f"{campaign.key}-{snap.exec_id}",
                high_priority=not campaign.is_marketing,
            )
            sends.append(self._send_with_retry(snap, campaign, message, delivery_id))
        results.extend(await asyncio.gather(*sends))
        sent = any(r.status == "SENT" for r in results)
        reason = None if sent else next((r.error_code for r in results if r.error_code), "DELIVERY_FAILED")
        await self.writer.submit(
            RecordRecipient(
                env_id=snap.item.env_id,
                dispatch_id=snap.item.dispatch_id,
                idx=plan.idx,
                results=list(results),
                outcome="SENT" if sent else "FAILED",
                reason=reason,
                user_key=plan.user_key,
                now_ms=self.now_ms(),
            )
        )

    async def _send_with_retry(
        self, snap: Snapshot, campaign: Campaign, message: PushMessage, delivery_id: int
    ) -> DeliveryResult:
        provider = self.channels.for_token(
            env_id=snap.item.env_id,
            settings=snap.settings,
            campaign_provider=campaign.provider,
            token_type=message.provider_type,
        )
        attempts = 0
        max_attempts = self.settings.max_delivery_attempts
        while True:
            attempts += 1
            try:
                async with self._send_slots:
                    result = await provider.send(message)
            except TokenInvalid as exc:
                return self._result(
                    delivery_id, message, provider.name, "FAILED", None, exc.code, attempts, retire=True
                )
            except ProviderUnavailable as exc:
                if attempts >= max_attempts:
                    return self._result(delivery_id, message, provider.name, "FAILED", None, exc.code, attempts)
                await self.sleep(
                    backoff(
                        attempt=attempts,
                        base=self.settings.retry_base_seconds,
                        cap=self.settings.retry_max_seconds,
                        retry_after=exc.retry_after,
                        rng=self.rng,
                    )
                )
                continue
            except ProviderError as exc:
                return self._result(delivery_id, message, provider.name, "FAILED", None, exc.code, attempts)
            except Exception:
                log.exception("provider %s raised an unexpected error", provider.name)
                return self._result(delivery_id, message, provider.name, "FAILED", None, "INTERNAL_ERROR", attempts)
            return self._result(delivery_id, message, provider.name, "SENT", result.provider_message_id, None, attempts)

    def _result(
        self,
        delivery_id: int,
        message: PushMessage,
        provider: str,
        status: str,
        message_id: str | None,
        error: str | None,
        attempts: int,
        *,
        retire: bool = False,
    ) -> DeliveryResult:
        self.metrics.deliveries.labels(provider, status).inc()
        return DeliveryResult(delivery_id, message.token, status, provider, message_id, error, attempts, retire)

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
        since = self.now_ms() - int(max_age_hours * 3_600_000)
        pending = await self._read(lambda conn: awaiting_reports(conn, self.db, provider="nhn", since_ms=since))
        by_env: dict[int, list[str]] = {}
        for env_id, message_id in pending:
            by_env.setdefault(env_id, []).append(message_id)
        recorded = 0
        for env_id, message_ids in by_env.items():
            stored = await self._read(partial(environment_settings, db=self.db, env_id=env_id))
            settings = effective(stored)
            if "nhn" not in settings["providers"]:
                continue
            gateway = self.channels.gateway(env_id=env_id, settings={**settings, "smsGateway": "nhn"}, channel="sms")
            if not isinstance(gateway, NhnGateway):
                continue
            try:
                reports = await gateway.poll(message_ids)
            except ProviderError as exc:
                log.warning("polling NHN Cloud results failed: %s", exc.message)
                continue
            if reports:
                recorded += await self.writer.submit(RecordReports(env_id=env_id, provider="nhn", reports=reports))
        return recorded

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
        self._tasks.append(asyncio.create_task(Scheduler(self.runtime).run(self._stop)))  # broadcasts
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
        try:
            await stop.wait()
        finally:
            await workers.stop()
            await runtime.close()

    uvloop.run(main())
