"""Kakao and SMS: render each recipient, then send one batch per gateway request.

Money is at stake, so a batch is never sent twice: its deliveries are marked SENDING under a batch
key before the gateway sees it, and whoever finds them so later (a retry after a timeout, or another
worker after a crash) sends exactly that batch again with ``maybe_sent``: the gateway is first asked
what it already holds of the batch and only the rest is sent. A batch given up on is settled by
asking the gateway too (``settle``): what it may have taken is never recorded FAILED, but UNKNOWN
when the gateway cannot say. Phone numbers are decrypted here, at send time, and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from magpie.dispatch.retry import backoff
from magpie.dispatch.stages import Batch, Context, Plan, Reserve, Reserved, record
from magpie.domain.campaigns import Campaign, MessageTooLarge, PhoneRendering, RenderFailed, render_phone
from magpie.domain.delivery import Channel, Outcome, Reason
from magpie.domain.environment import effective
from magpie.providers.base import (
    DeliveryReport,
    Fallback,
    PhoneGateway,
    PhoneMessage,
    PhoneResult,
    ProviderError,
    ProviderUnavailable,
)
from magpie.store.accounts import environment_settings
from magpie.store.deliveries import (
    DeliveryResult,
    HoldLease,
    OutcomeRow,
    Planned,
    RecordReports,
    Target,
    awaiting_reports,
)

log = logging.getLogger("magpie.worker")
# The reason of a recipient whose batch the gateway may or may not have taken, and would not say.
UNCONFIRMED = Reason.GATEWAY_UNCONFIRMED


class _Send(msgspec.Struct):
    idx: int
    user_key: str
    rendering: PhoneRendering
    marketing: bool
    phone_enc: bytes | None


def _day(now_ms: int, timezone: str) -> str:
    return datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone)).strftime("%Y-%m-%d")


def _context(batch: Batch, target: Target, idx: int) -> dict[str, Any]:
    user = batch.snap.users[idx]
    return {
        "api_properties": user.api_properties,
        "user_properties": target.properties,
        "user": {"id": target.user_id or "", "deviceId": user.device_id or ""},
    }


async def settle(
    gateway: PhoneGateway, messages: list[PhoneMessage], *, batch_key: str, code: str
) -> dict[str, PhoneResult]:
    """The outcome of a batch magpie gives up on, as the gateway tells it.

    What the gateway holds is SENT (or FAILED when it says it refused it), what it says it does not
    hold FAILED with the last error; when it cannot even be asked, every message is UNKNOWN
    (``GATEWAY_UNCONFIRMED``): it may have been sent, so it is neither failed nor sent again.
    """
    try:
        held = {r.delivery_id: r for r in await gateway.lookup(messages, batch_key=batch_key)}
    except ProviderError as exc:
        log.warning("gateway %s could not say what it took of batch %s: %s", gateway.name, batch_key, exc.code)
        return {m.delivery_id: PhoneResult(m.delivery_id, Outcome.UNKNOWN, error_code=UNCONFIRMED) for m in messages}
    return {
        m.delivery_id: held.get(m.delivery_id) or PhoneResult(m.delivery_id, Outcome.FAILED, error_code=code)
        for m in messages
    }


@dataclass
class _Open:
    """What the sender learnt of a batch before deciding it."""

    gateway: PhoneGateway | None
    # Batches an earlier attempt handed to the gateway without recording its answer: key -> recipients.
    resumed: dict[str, list[int]]
    fresh_key: str
    # What every recipient's reservation shares (one object each: one copy in memory and in the writer job).
    tokens: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    provider_names: dict[str, str] = field(default_factory=dict)


class PhoneSender:
    """Sends a Kakao or SMS batch through the environment's gateway and records the outcomes."""

    def __init__(self, ctx: Context, channel: Channel) -> None:
        self.ctx = ctx
        self.channel = channel
        self._open: dict[int, _Open] = {}

    def _gateway(self, batch: Batch) -> PhoneGateway | None:
        try:
            return self.ctx.channels.gateway(
                env_id=batch.item.env_id,
                settings=batch.snap.settings,
                channel=self.channel,
                campaign_provider=batch.campaign.provider,
            )
        except ProviderError:
            return None

    def open(self, batch: Batch) -> set[int]:
        snap, item = batch.snap, batch.item
        by_delivery = {row.id: idx for (idx, _), row in snap.deliveries.items()}
        resumed: dict[str, list[int]] = {}
        for delivery_id, batch_key in snap.in_flight.items():
            resumed.setdefault(batch_key, []).append(by_delivery[delivery_id])
        fresh_key = f"{item.dispatch_id[:8]}-{item.id}-{uuid.uuid4().hex[:12]}"
        self._open[item.id] = _Open(gateway=self._gateway(batch), resumed=resumed, fresh_key=fresh_key)
        return {i for idxs in resumed.values() for i in idxs}

    def plan(self, batch: Batch, idx: int, target: Target, *, resumed: bool, campaign: Campaign) -> Plan | Reason:
        try:
            rendering = render_phone(campaign, _context(batch, target, idx), batch.snap.settings)
        except RenderFailed as exc:
            # The kind of failure only: the recipient's data stays out of the log.
            log.warning("render error in campaign %s: %s", campaign.key, exc.kind)
            return Reason.RENDER_ERROR
        except MessageTooLarge:
            return Reason.MESSAGE_TOO_LARGE
        opened = self._open[batch.item.id]
        gateway = opened.gateway
        if gateway is None:
            return Reason.PROVIDER_NOT_CONFIGURED
        tokens = opened.tokens.get(rendering.kind)
        if tokens is None:
            tokens = opened.tokens[rendering.kind] = [("", self.channel, rendering.kind)]
        if not opened.provider_names:
            opened.provider_names[self.channel] = gateway.name
        planned = Planned(
            idx=idx,
            user_key=target.user_key,
            tokens=tokens,
            marketing=campaign.is_marketing,
            provider_names=opened.provider_names,
            channel=self.channel,
            kind=rendering.kind,
            size_bytes=rendering.size_bytes,
            paid=gateway.name != "sandbox",
        )
        send = _Send(idx, target.user_key, rendering, campaign.is_marketing, target.phone_enc)
        return Plan(planned=planned, message=send, campaign=campaign, reserve=not resumed)

    def reservation(self, batch: Batch) -> Reserve:
        snap = batch.snap
        return Reserve(
            channel=self.channel,
            paid_limit=int(snap.settings.get("paidMessagesDailyLimit") or 0),
            day=_day(batch.now_ms, snap.timezone),
            batch_key=self._open[batch.item.id].fresh_key,
            check_lease=True,
        )

    def items_in_flight(self) -> asyncio.Semaphore | None:
        return None

    async def send(self, batch: Batch, plans: list[Plan], reserved: Reserved) -> None:
        opened = self._open.pop(batch.item.id)
        snap, channel = batch.snap, self.channel
        sends: dict[int, _Send] = {p.planned.idx: p.message for p in plans}
        batches: list[tuple[str, list[tuple[int, _Send]], bool]] = []
        for batch_key, idxs in opened.resumed.items():
            batches.append(
                (batch_key, [(snap.deliveries[(i, channel)].id, sends[i]) for i in idxs if i in sends], True)
            )
        fresh = [
            (reserved.ids[p.planned.idx][channel], sends[p.planned.idx])
            for p in plans
            if p.reserve and p.planned.idx not in reserved.capped and channel in reserved.ids.get(p.planned.idx, {})
        ]
        if fresh:
            batches.append((opened.fresh_key, fresh, False))
        # The fresh batch was reserved under the lease, checked then: it goes out without asking again.
        leased = opened.fresh_key if reserved.leased else None
        batches = [b for b in batches if b[1]]
        if not batches:
            await record(self.ctx, batch, [], [], last=True)
            return
        assert opened.gateway is not None
        for n, (batch_key, members, maybe_sent) in enumerate(batches, start=1):
            last = n == len(batches)
            if not await self._send_batch(
                batch, opened.gateway, batch_key, members, maybe_sent=maybe_sent, last=last, leased=batch_key == leased
            ):
                return

    def _message(self, batch: Batch, delivery_id: int, send: _Send) -> PhoneMessage | None:
        if send.phone_enc is None:
            return None
        r = send.rendering
        return PhoneMessage(
            delivery_id=str(delivery_id),
            to=self.ctx.cipher.decrypt(send.phone_enc),
            channel=batch.campaign.channel,
            kind=r.kind,
            text=r.text,
            title=r.title,
            template_code=r.template_code,
            template_parameters=dict(r.template_parameters),
            buttons=r.buttons,
            image_urls=r.image_urls,
            fallback=None if r.fallback is None else Fallback(*r.fallback),
            marketing=send.marketing,
            size_bytes=r.size_bytes,
        )

    async def _send_batch(
        self,
        batch: Batch,
        gateway: PhoneGateway,
        batch_key: str,
        members: list[tuple[int, _Send]],
        *,
        maybe_sent: bool,
        last: bool,
        leased: bool = False,
    ) -> bool:
        """Send one batch and record its outcomes; False when the item's lease was lost (nothing recorded)."""
        ctx, snap, campaign = self.ctx, batch.snap, batch.campaign
        messages: list[PhoneMessage] = []
        results: dict[str, PhoneResult] = {}
        for delivery_id, send in members:
            message = self._message(batch, delivery_id, send)
            if message is None:
                results[str(delivery_id)] = PhoneResult(
                    str(delivery_id), Outcome.FAILED, error_code=Reason.NO_PHONE_NUMBER
                )
            else:
                messages.append(message)
        attempts = 0
        if messages:
            while True:
                attempts += 1
                lease_ms = int(ctx.settings.lease_seconds * 1000)
                now = ctx.now_ms()
                if not (attempts == 1 and leased) and not await ctx.writer.submit(
                    HoldLease(item_id=snap.item.id, owner=ctx.owner, now_ms=now, until_ms=now + lease_ms)
                ):
                    log.warning("work item %s changed hands: its batch is left to the new owner", snap.item.id)
                    return False
                try:
                    async with ctx.send_slots:
                        answered = await gateway.send_batch(messages, batch_key=batch_key, maybe_sent=maybe_sent)
                    results.update((r.delivery_id, r) for r in answered)
                    break
                except ProviderUnavailable as exc:
                    # The gateway may have taken the batch before the failure: from now on, ask first.
                    maybe_sent = True
                    if attempts >= ctx.settings.max_delivery_attempts:
                        results.update(await settle(gateway, messages, batch_key=batch_key, code=exc.code))
                        break
                    await ctx.sleep(
                        backoff(
                            attempt=attempts,
                            base=ctx.settings.retry_base_seconds,
                            cap=ctx.settings.retry_max_seconds,
                            retry_after=exc.retry_after,
                            rng=ctx.rng,
                        )
                    )
                except ProviderError as exc:
                    log.warning(
                        "gateway %s refused a batch of campaign %s: %s", gateway.name, campaign.key, exc.message
                    )
                    if maybe_sent:
                        # An earlier attempt may have gone through before this refusal: ask, never guess.
                        results.update(await settle(gateway, messages, batch_key=batch_key, code=exc.code))
                    else:
                        results.update(
                            (m.delivery_id, PhoneResult(m.delivery_id, Outcome.FAILED, error_code=exc.code))
                            for m in messages
                        )
                    break
        outcomes: list[OutcomeRow] = []
        recorded: list[DeliveryResult] = []
        by_status: dict[str, int] = {}
        for delivery_id, send in members:
            r = results[str(delivery_id)]
            by_status[r.status] = by_status.get(r.status, 0) + 1
            outcomes.append(OutcomeRow(send.idx, send.user_key, r.status, r.error_code))
            recorded.append(
                DeliveryResult(
                    delivery_id,
                    campaign.channel,
                    r.status,
                    gateway.name,
                    r.provider_message_id,
                    r.error_code,
                    max(attempts, 1),
                )
            )
        for status, n in by_status.items():
            ctx.metrics.deliveries.labels(gateway.name, status).inc(n)
        await record(ctx, batch, outcomes, recorded, last=last)
        if gateway.delivered_on_accept:
            reports = [
                DeliveryReport(str(r.provider_message_id), True, "SANDBOX")
                for r in results.values()
                if r.status == Outcome.SENT and r.provider_message_id
            ]
            if reports:
                await ctx.writer.submit(RecordReports(env_id=snap.item.env_id, provider=gateway.name, reports=reports))
        return True

    async def poll_reports(self, *, max_age_hours: float) -> int:
        """Ask polled gateways for the final result of accepted messages; returns how many were recorded."""
        ctx = self.ctx
        since = ctx.now_ms() - int(max_age_hours * 3_600_000)
        recorded = 0
        for name in ("nhn",):
            pending = await ctx.read(partial(awaiting_reports, db=ctx.db, provider=name, since_ms=since))
            by_env: dict[int, list[str]] = {}
            for env_id, message_id in pending:
                by_env.setdefault(env_id, []).append(message_id)
            for env_id, message_ids in by_env.items():
                settings = effective(await ctx.read(partial(environment_settings, db=ctx.db, env_id=env_id)))
                if name not in settings["providers"]:
                    continue
                gateway = ctx.channels.gateway(
                    env_id=env_id, settings={**settings, f"{self.channel}Gateway": name}, channel=self.channel
                )
                if not gateway.polled:
                    continue
                try:
                    reports = await gateway.poll(message_ids)
                except ProviderError as exc:
                    log.warning("polling %s results failed: %s", name, exc.message)
                    continue
                if reports:
                    recorded += await ctx.writer.submit(RecordReports(env_id=env_id, provider=name, reports=reports))
        return recorded
