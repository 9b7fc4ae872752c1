"""The broadcast scheduler: create the occurrences of due schedule slots, and plan their audiences.

One runs in every ``magpie serve`` and ``magpie worker``; they coordinate through the database only
(docs/broadcasts.md): an occurrence exists once per campaign and slot, one scheduler at a time plans
it under a lease, and the dispatch workers deliver what planning enqueued.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from functools import partial

import msgspec

from magpie.config import Settings
from magpie.domain.campaigns import Campaign, parse_campaign
from magpie.domain.schedules import effective_rate, gateway_of, slots_between
from magpie.errors import MagpieError, ServiceUnavailable
from magpie.runtime import Runtime
from magpie.store import accounts
from magpie.store.broadcasts import (
    ClaimOccurrence,
    CompleteOccurrences,
    CreateOccurrence,
    FinishPlanning,
    OccurrenceKind,
    OccurrenceRow,
    PlanPage,
    ScheduledCampaign,
    scheduled_campaigns,
)
from magpie.store.campaigns import get_campaign
from magpie.store.reach import AudiencePage, audience_page

log = logging.getLogger("magpie.scheduler")

# Slots at most this old count as on time (not missed) under every catch-up rule.
_ON_TIME_MS = 60_000
# Dispatches the planner writes per transaction: a commit and its statements serve this many pages.
_DISPATCHES_PER_PLAN = 10


def due_slots(
    campaign: Campaign, *, row: ScheduledCampaign, now_ms: int, settings: Settings, on_time_ms: int
) -> list[int]:
    """The slots of ``campaign`` to create now, under the catch-up rule (docs/broadcasts.md#catch-up)."""
    assert campaign.schedule is not None
    oldest = now_ms - int(settings.broadcast_catch_up_max_age_seconds * 1000)
    # Slots before the campaign was last applied were not its to send; slots already created are done.
    after = max(row.updated_at - 1, row.last_slot or -1, oldest - 1)
    slots = slots_between(campaign.schedule, timezone=row.timezone, after_ms=after, until_ms=now_ms, limit=10_000)
    if not slots:
        return []
    rule = settings.broadcast_catch_up
    on_time = [s for s in slots if now_ms - s <= on_time_ms]
    if rule == "all":
        return slots
    if rule == "latest":
        return slots[-1:]
    return on_time[-1:]


class Scheduler:
    """Creates due occurrences and plans them. Many may share a database."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings or runtime.settings
        self.clock = clock
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._campaigns: dict[tuple[int, int, int], Campaign] = {}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.lease_seconds * 1000)

    def _parse(self, env_id: int, key: int, definition: str, updated_at: int) -> Campaign:
        cache_key = (env_id, key, updated_at)
        found = self._campaigns.get(cache_key)
        if found is None:
            found = self._campaigns[cache_key] = parse_campaign(msgspec.json.decode(definition))
        return found

    async def create_due(self) -> list[int]:
        """Create the occurrences of slots that are due; returns the ids this scheduler created."""
        rows = await self.runtime.reader.read(lambda conn: scheduled_campaigns(conn, self.runtime.db))
        now = self.now_ms()
        on_time = max(_ON_TIME_MS, int(self.settings.broadcast_poll_seconds * 2000))
        created: list[int] = []
        for row in rows:
            try:
                campaign = self._parse(row.env_id, row.key, row.definition, row.updated_at)
            except MagpieError:
                continue  # stored before a rule it breaks; its triggers answer the same
            if campaign.schedule is None:
                continue
            for slot in due_slots(campaign, row=row, now_ms=now, settings=self.settings, on_time_ms=on_time):
                made = await self.runtime.writer.submit(
                    CreateOccurrence(
                        env_id=row.env_id,
                        campaign_key=row.key,
                        slot_ms=slot,
                        channel=campaign.channel,
                        kind=OccurrenceKind.SCHEDULED,
                    )
                )
                if made is not None:
                    log.info("broadcast occurrence %d of campaign %d created for slot %d", made, row.key, slot)
                    created.append(made)
        return created

    async def plan_one(self) -> OccurrenceRow | None:
        """Claim one due occurrence and plan its whole audience; returns it (None: nothing was due)."""
        occ = await self.runtime.writer.submit(
            ClaimOccurrence(owner=self.owner, now_ms=self.now_ms(), lease_ms=self._lease_ms)
        )
        if occ is None:
            return None
        db = self.runtime.db
        try:
            row = await self.runtime.reader.read(
                lambda conn: get_campaign(conn, db, env_id=occ.env_id, key=occ.campaign_key)
            )
            campaign = parse_campaign(row.definition)
            if campaign.status != "ACTIVE":
                raise MagpieError(f"campaign {occ.campaign_key} is {campaign.status}, not ACTIVE")
        except ServiceUnavailable:
            raise  # not the occurrence's fault: its lease lapses and a later tick plans it
        except MagpieError as exc:
            await self.runtime.writer.submit(FinishPlanning(occurrence_id=occ.id, owner=self.owner, error=exc.message))
            return occ
        size = max(1, self.settings.broadcast_page_size)
        now = self.now_ms()
        env_settings = await self.runtime.reader.read(
            lambda conn: accounts.environment_settings(conn, db, env_id=occ.env_id)
        )
        rate = effective_rate(
            rate_per_minute=campaign.schedule.rate_per_minute if campaign.schedule else None,
            gateway=gateway_of(channel=campaign.channel, provider=campaign.provider, settings=env_settings),
            settings=env_settings,
        )

        def read(after: str | None) -> asyncio.Future[AudiencePage]:
            return asyncio.ensure_future(
                self.runtime.reader.read(
                    partial(
                        audience_page,
                        db=db,
                        env_id=occ.env_id,
                        campaign=campaign,
                        after=after,
                        limit=size * _DISPATCHES_PER_PLAN,
                        now_ms=now,
                    )
                )
            )

        # The next page is read while this one is written: reading does not depend on what was planned.
        ahead = read(occ.cursor)
        try:
            while True:
                page = await ahead
                if not page.scanned:
                    break
                ahead = read(page.last)
                try:
                    planned = await self.runtime.writer.submit(
                        PlanPage(
                            occurrence_id=occ.id,
                            owner=self.owner,
                            env_id=occ.env_id,
                            campaign_key=occ.campaign_key,
                            channel=campaign.channel,
                            users=page.reachable,
                            unreachable=page.unreachable,
                            last=page.last,
                            lease_ms=self._lease_ms,
                            rate_per_minute=rate,
                            dispatch_size=size,
                        )
                    )
                except ServiceUnavailable:
                    raise  # the store is down: the cursor did not move, and the lease's end hands the page on
                except MagpieError as exc:
                    # The campaign was paused or archived meanwhile (its dispatches refuse it): the occurrence fails.
                    await self.runtime.writer.submit(
                        FinishPlanning(occurrence_id=occ.id, owner=self.owner, error=exc.message)
                    )
                    return occ
                if planned is None:
                    return occ  # paused, cancelled or taken over: stop here
                if planned:
                    self.runtime.wake_workers()
        finally:
            if not ahead.done():
                ahead.cancel()
        await self.runtime.writer.submit(FinishPlanning(occurrence_id=occ.id, owner=self.owner))
        return occ

    async def tick(self) -> None:
        await self.create_due()
        while await self.plan_one() is not None:
            pass
        await self.runtime.writer.submit(CompleteOccurrences())

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every ``MAGPIE_BROADCAST_POLL_SECONDS`` until ``stop`` is set."""
        interval = self.settings.broadcast_poll_seconds
        while interval > 0 and not stop.is_set():
            try:
                await self.tick()
            except ServiceUnavailable:
                pass  # the store logs the outage; the next tick tries again
            except Exception:
                log.exception("broadcast scheduler tick failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
