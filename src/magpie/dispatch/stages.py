"""The stages every channel's work item goes through, and the interface each channel's sender offers.

::

    claim -> load (one read) -> decide (per batch) -> reserve (one writer job) -> send -> record

``decide`` also assigns each recipient of an experiment campaign its arm (docs/experiments.md): the
control group ends EXCLUDED CONTROL_GROUP there, before the frequency caps and the daily limit, and a
variant's recipient is planned with the variant's message. ``reserve`` records the batch's exposures
in its writer job.

``claim`` and the loop live in ``magpie.dispatch.worker``; ``load``, ``decide`` and ``reserve`` here;
``send`` and ``record`` belong to the channel's ``Sender`` (``magpie.dispatch.push``,
``magpie.dispatch.phone``), which knows how its provider or gateway takes batches, how to ask a
gateway what it already holds, and how to read its reports.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec

from magpie.config import Settings
from magpie.domain import delivery
from magpie.domain.audience import Recipient, cohort_names
from magpie.domain.campaigns import Campaign, parse_campaign
from magpie.domain.delivery import Channel, Decision, Exclude, Hold, NightRule, Outcome, Reason
from magpie.domain.experiments import Assignment, Control
from magpie.domain.schedules import gateway_of
from magpie.metrics import Metrics
from magpie.providers.registry import ProviderRegistry
from magpie.runtime import Runtime
from magpie.store.conversions import RecordExposures
from magpie.store.crypto import Cipher
from magpie.store.db import Connection, Database
from magpie.store.deliveries import (
    DeliveryResult,
    FinishItem,
    HoldLease,
    HoldRecipients,
    OutcomeRow,
    Planned,
    PrepareRecipients,
    RecordOutcomes,
    ReserveBatch,
    Snapshot,
    Target,
    WorkItem,
    load_snapshot,
)
from magpie.store.writer import Writer

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
# Deciding and rendering run on the event loop: they give the loop a turn at least this often (seconds).
RENDER_SLICE = 0.02


@dataclass
class Context:
    """What every stage of one dispatcher uses: the store, the channels, one clock, the send slots."""

    runtime: Runtime
    settings: Settings
    channels: ProviderRegistry
    clock: Callable[[], float]
    sleep: Sleep
    rng: random.Random
    owner: str
    send_slots: asyncio.Semaphore

    @property
    def db(self) -> Database:
        return self.runtime.db

    @property
    def writer(self) -> Writer:
        return self.runtime.writer

    @property
    def metrics(self) -> Metrics:
        return self.runtime.metrics

    @property
    def cipher(self) -> Cipher:
        # Phone numbers are decrypted with it in this process only, at send time.
        return self.runtime.cipher

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self.runtime.reader.read(fn)


@dataclass
class Batch:
    """One work item's recipients as loaded, with the campaign they get."""

    snap: Snapshot
    campaign: Campaign
    now_ms: int

    @property
    def item(self) -> WorkItem:
        return self.snap.item

    def open_recipients(self) -> list[int]:
        """Recipients of this item without an outcome yet (a night-time item: the ones it holds)."""
        # A night-time item holds some recipients; an item past a gateway's budget defers some.
        payload = self.item.payload
        named = payload.get("held", payload.get("deferred"))
        only = None if named is None else set(named)
        outcomes = self.snap.outcomes
        return [
            idx for idx in range(len(self.snap.users)) if outcomes.get(idx) is None and (only is None or idx in only)
        ]

    def finish(self, *, now_ms: int, fail_reason: Reason | None = None) -> FinishItem:
        return FinishItem(
            item_id=self.item.id, dispatch_id=self.item.dispatch_id, now_ms=now_ms, fail_reason=fail_reason
        )


class Plan(msgspec.Struct):
    """A recipient to send to: what the store reserves, and the channel's message for it.

    ``campaign``: the recipient's campaign, a variant's for a variant recipient of an experiment.
    """

    planned: Planned
    message: Any
    campaign: Campaign
    # False for a recipient whose delivery an earlier attempt already reserved (a resumed batch).
    reserve: bool = True


@dataclass
class Decided:
    """One batch sorted by the domain's answers and the sender's plans."""

    excluded: dict[int, tuple[str, str]] = field(default_factory=dict)  # idx -> (outcome, reason)
    plans: list[Plan] = field(default_factory=list)
    hold: list[int] = field(default_factory=list)
    release_at: int = 0
    # An experiment campaign's recipients sent to or held out as control: idx -> (arm, user_key).
    arms: dict[int, tuple[Assignment, str]] = field(default_factory=dict)

    def exposures(self, batch: Batch) -> RecordExposures | None:
        """The batch's exposures to record; the reserve job leaves out recipients a cap excludes."""
        experiment = batch.campaign.experiment
        rows = [
            (idx, arm.arm, user_key)
            for idx, (arm, user_key) in sorted(self.arms.items())
            if idx not in self.excluded or self.excluded[idx][1] == Reason.CONTROL_GROUP
        ]
        if experiment is None or not rows:
            return None
        return RecordExposures(
            env_id=batch.item.env_id,
            dispatch_id=batch.item.dispatch_id,
            campaign_key=batch.snap.campaign_key,
            version=experiment.version,
            rows=rows,
            now_ms=batch.now_ms,
        )


@dataclass(frozen=True)
class Reserve:
    """What a sender's reservation needs beyond the batch: its channel, its daily limit, its batch key."""

    channel: Channel = Channel.PUSH
    paid_limit: int = 0
    day: str = ""
    batch_key: str | None = None
    # Reserve only while this dispatcher still holds the item's lease (a paid batch goes out next).
    check_lease: bool = False


@dataclass
class Reserved:
    """The reserve stage's answer: delivery ids per recipient and token, and who a cap excluded.

    ``leased``: the reservation was made under the item's lease, checked in the same transaction.
    """

    ids: dict[int, dict[str, int]]
    capped: set[int]
    leased: bool = False


class Sender(Protocol):
    """One channel's sending half: ``magpie.dispatch.push.PushSender``, ``magpie.dispatch.phone.PhoneSender``.

    ``open`` is called once per batch before deciding; it answers the recipients whose delivery an
    earlier attempt left in flight (they are not decided again: a gateway may hold them), and
    ``plan`` renders one recipient with ``campaign`` (the batch's, or its arm's variant) or says why
    it fails. ``send`` sends the planned recipients the way the channel batches and records their
    outcomes, the item's end with the last record.
    ``items_in_flight`` bounds how many items of the channel send at once (``None``: the send
    slots are bound enough).
    """

    channel: Channel

    def open(self, batch: Batch) -> set[int]: ...

    def plan(self, batch: Batch, idx: int, target: Target, *, resumed: bool, campaign: Campaign) -> Plan | Reason: ...

    def reservation(self, batch: Batch) -> Reserve: ...

    async def send(self, batch: Batch, plans: list[Plan], reserved: Reserved) -> None: ...

    def items_in_flight(self) -> asyncio.Semaphore | None: ...

    async def poll_reports(self, *, max_age_hours: float) -> int: ...


# -- load ----------------------------------------------------------------------------------------------


class Campaigns:
    """Parsed campaign definitions, reused while their ``updated_at`` stays the same."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[int, int], tuple[int, Campaign]] = {}

    def get(self, snap: Snapshot) -> Campaign | None:
        if snap.campaign_row is None:
            return None
        definition, updated = snap.campaign_row
        cached = self._parsed.get((snap.item.env_id, snap.campaign_key))
        if cached is not None and cached[0] == updated:
            return cached[1]
        campaign = parse_campaign(msgspec.json.decode(definition))
        self._parsed[(snap.item.env_id, snap.campaign_key)] = (updated, campaign)
        return campaign


async def load(ctx: Context, campaigns: Campaigns, item: WorkItem) -> tuple[Snapshot, Campaign | None]:
    """The item's recipients, resolved against the store, and its campaign."""
    snap = await ctx.read(lambda conn: load_snapshot(conn, ctx.db, item=item))
    campaign = campaigns.get(snap) if snap.exists else None
    if campaign is not None:
        # Cohorts named by the campaign are needed to decide: read their memberships too.
        cohorts = cohort_names(campaign.audience)
        if cohorts:
            snap = await ctx.read(lambda conn: load_snapshot(conn, ctx.db, item=item, cohorts=cohorts))
    return snap, campaign


# -- decide --------------------------------------------------------------------------------------------


def decide_one(batch: Batch, target: Target | None, night: NightRule) -> Decision:
    """Ask the domain about one recipient, as the batch shows it."""
    campaign, now = batch.campaign, batch.now_ms
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
    members = batch.snap.memberships

    def in_cohort(name: str) -> bool:
        # Asked only by a cohort condition: the recipient's ids are gathered then, not for everyone.
        return any((name, i) in members for i in (target.user_id, *target.device_ids) if i is not None)

    return delivery.decide(
        campaign=campaign,
        recipient=Recipient(user_id=target.user_id, device_ids=target.device_ids, properties=target.properties),
        crm=target.crm,
        has_push_token=bool(target.tokens),
        has_phone=target.phone_enc is not None,
        in_cohort=in_cohort,
        now_ms=now,
        night=night,
    )


async def decide(batch: Batch, sender: Sender) -> Decided:
    """Sort the batch's open recipients by the domain's answer, and have the sender plan the rest."""
    snap = batch.snap
    resumed = sender.open(batch)
    night = NightRule.from_settings(snap.settings, timezone=snap.timezone)
    todo = Decided()
    turn = time.monotonic()
    for idx in batch.open_recipients():
        if time.monotonic() - turn > RENDER_SLICE:
            await asyncio.sleep(0)  # rendering is bounded per recipient, not per item: let the loop in
            turn = time.monotonic()
        target = snap.targets.get(idx)
        if idx in resumed:
            if target is None:
                todo.excluded[idx] = (Outcome.FAILED, Reason.UNKNOWN_USER)
                continue
        else:
            match decide_one(batch, target, night):
                case Exclude(reason=reason):
                    todo.excluded[idx] = (Outcome.EXCLUDED, reason)
                    continue
                case Hold(until_ms=until_ms):
                    todo.hold.append(idx)
                    todo.release_at = until_ms
                    continue
        assert target is not None
        arm = batch.campaign.assign(user_key=target.user_key)
        if arm is not None:
            todo.arms[idx] = (arm, target.user_key)
        if isinstance(arm, Control) and idx not in resumed:
            # Held out before the caps and the daily limit: the control group is never sent to.
            todo.excluded[idx] = (Outcome.EXCLUDED, Reason.CONTROL_GROUP)
            continue
        plan = sender.plan(batch, idx, target, resumed=idx in resumed, campaign=batch.campaign.for_arm(arm))
        if isinstance(plan, Reason):
            todo.excluded[idx] = (Outcome.FAILED, plan)
        else:
            todo.plans.append(plan)
    # The recipients' profiles are not read past this stage: a large item sends without holding them.
    snap.targets = {}
    snap.memberships = set()
    return todo


# -- reserve -------------------------------------------------------------------------------------------


async def reserve(ctx: Context, batch: Batch, todo: Decided, reservation: Reserve) -> Reserved | None:
    """One writer job: exclusions, frequency caps, the daily limit, the deliveries to send, an
    experiment's exposures and the night-time hand-over; ``None`` when the item's lease was lost
    (nothing reserved)."""
    snap, campaign = batch.snap, batch.campaign
    item = snap.item
    lease: HoldLease | None = None
    if reservation.check_lease:
        now = ctx.now_ms()
        lease_ms = int(ctx.settings.lease_seconds * 1000)
        lease = HoldLease(item_id=item.id, owner=ctx.owner, now_ms=now, until_ms=now + lease_ms)
    hold = None
    if todo.hold:
        hold = HoldRecipients(
            env_id=item.env_id,
            dispatch_id=item.dispatch_id,
            idxs=todo.hold,
            release_ms=todo.release_at,
            payload=item.payload,
        )
    # The environment's per-gateway limit, shared by everything it sends through the gateway.
    gateway = gateway_of(channel=campaign.channel, provider=campaign.provider, settings=snap.settings)
    limits: dict[str, int] = snap.settings.get("gatewayRatePerMinute") or {}
    prepare = PrepareRecipients(
        env_id=item.env_id,
        dispatch_id=item.dispatch_id,
        campaign_key=snap.campaign_key,
        users=[(u.user_id, u.device_id) for u in snap.users],  # ids only: less to hand to the writer
        excluded=todo.excluded,
        planned=[p.planned for p in todo.plans if p.reserve],
        caps=delivery.frequency_caps(campaign=campaign, settings=snap.settings),
        tags=list(campaign.tags),
        now_ms=batch.now_ms,
        channel=reservation.channel,
        paid_limit=reservation.paid_limit,
        day=reservation.day,
        batch_key=reservation.batch_key,
        gateway=gateway,
        gateway_limit=limits.get(gateway, 0),
    )
    reserved = await ctx.writer.submit(
        ReserveBatch(recipients=prepare, lease=lease, hold=hold, exposures=todo.exposures(batch), payload=item.payload)
    )
    if reserved is None:
        return None
    ids, capped = reserved
    return Reserved(ids=ids, capped=capped, leased=lease is not None)


async def reserve_nothing(ctx: Context, snap: Snapshot, *, now_ms: int) -> None:
    """Create the item's recipient rows without deciding anyone (a campaign paused after acceptance)."""
    await ctx.writer.submit(
        PrepareRecipients(
            env_id=snap.item.env_id,
            dispatch_id=snap.item.dispatch_id,
            campaign_key=snap.campaign_key,
            users=snap.users,
            excluded={},
            planned=[],
            caps=[],
            tags=[],
            now_ms=now_ms,
        )
    )


# -- record --------------------------------------------------------------------------------------------


async def record(
    ctx: Context,
    batch: Batch,
    outcomes: list[OutcomeRow],
    results: list[DeliveryResult],
    *,
    last: bool = False,
) -> None:
    """One writer job for a batch's outcomes (and the item's end with its last batch)."""
    if outcomes or results or last:
        now = ctx.now_ms()
        await ctx.writer.submit(
            RecordOutcomes(
                env_id=batch.item.env_id,
                dispatch_id=batch.item.dispatch_id,
                now_ms=now,
                outcomes=outcomes,
                results=results,
                finish=batch.finish(now_ms=now) if last else None,
            )
        )
