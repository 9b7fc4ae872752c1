"""Kakao and SMS work items: decide each recipient, render, reserve, then send one batch per gateway.

Money is at stake, so a batch is never sent twice: its deliveries are marked SENDING under a batch
key before the gateway sees it, and whoever finds them so later (a retry after a timeout, or another
worker after a crash) sends exactly that batch again with ``maybe_sent``: the gateway is first asked
what it already holds of the batch and only the rest is sent. A batch given up on is settled by
asking the gateway too (``_settle``): what it may have taken is never recorded FAILED, but UNKNOWN
when the gateway cannot say. Phone numbers are decrypted here, at send time, and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from magpie.dispatch.retry import backoff
from magpie.domain.campaigns import Campaign, MessageTooLarge, PhoneRendering, RenderFailed, render_phone
from magpie.domain.delivery import Exclude, Hold, NightRule
from magpie.domain.experiments import CONTROL_GROUP, Assignment, Control
from magpie.providers.base import (
    DeliveryReport,
    Fallback,
    PhoneGateway,
    PhoneMessage,
    PhoneResult,
    ProviderError,
    ProviderUnavailable,
)
from magpie.store.deliveries import (
    DeliveryResult,
    FinishItem,
    HoldLease,
    HoldRecipients,
    Planned,
    RecordRecipient,
    RecordRecipients,
    RecordReports,
    Snapshot,
    Target,
)

if TYPE_CHECKING:
    from magpie.dispatch.worker import Dispatcher


log = logging.getLogger("magpie.worker")
# Rendering runs on the event loop: it gives the loop a turn at least this often (seconds).
RENDER_SLICE = 0.02
# The reason of a recipient whose batch the gateway may or may not have taken, and would not say.
UNCONFIRMED = "GATEWAY_UNCONFIRMED"


@dataclass
class _Send:
    idx: int
    user_key: str
    rendering: PhoneRendering
    marketing: bool
    phone_enc: bytes | None


def _day(now_ms: int, timezone: str) -> str:
    return datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone)).strftime("%Y-%m-%d")


def _context(snap: Snapshot, target: Target, idx: int) -> dict[str, Any]:
    user = snap.users[idx]
    return {
        "api_properties": user.get("apiProperties", {}),
        "user_properties": target.properties,
        "user": {"id": target.user_id or "", "deviceId": user.get("deviceId") or ""},
    }


async def process_phone(d: Dispatcher, snap: Snapshot, campaign: Campaign, now: int) -> None:
    """Decide, reserve and send the open recipients of a Kakao or SMS work item."""
    item = snap.item
    channel = campaign.channel
    held_only = item.payload.get("held")
    todo = [
        idx
        for idx in range(len(snap.users))
        if snap.outcomes.get(idx) is None and (held_only is None or idx in held_only)
    ]
    night = NightRule.from_settings(snap.settings, timezone=snap.timezone)
    by_delivery = {v[0]: idx for (idx, _), v in snap.deliveries.items()}
    resumed: dict[str, list[int]] = {}
    for delivery_id, batch_key in snap.in_flight.items():
        resumed.setdefault(batch_key, []).append(by_delivery[delivery_id])
    resumed_idx = {i for idxs in resumed.values() for i in idxs}
    try:
        gateway: PhoneGateway | None = d.channels.gateway(
            env_id=item.env_id, settings=snap.settings, channel=channel, campaign_provider=campaign.provider
        )
    except ProviderError:
        gateway = None
    paid = gateway is not None and gateway.name != "sandbox"
    excluded: dict[int, tuple[str, str]] = {}
    planned: list[Planned] = []
    sends: dict[int, _Send] = {}
    hold: list[int] = []
    release_at = 0
    arms: dict[int, tuple[Assignment, str]] = {}
    turn = time.monotonic()
    for idx in todo:
        if time.monotonic() - turn > RENDER_SLICE:
            await asyncio.sleep(0)
            turn = time.monotonic()
        target = snap.targets.get(idx)
        if idx in resumed_idx:
            if target is None:
                excluded[idx] = ("FAILED", "UNKNOWN_USER")
                continue
        else:
            match d._decide(snap, campaign, target, night, now):
                case Exclude(reason=reason):
                    excluded[idx] = ("EXCLUDED", reason)
                    continue
                case Hold(until_ms=until_ms):
                    hold.append(idx)
                    release_at = until_ms
                    continue
        assert target is not None
        arm = campaign.assign(user_key=target.user_key)
        if arm is not None:
            arms[idx] = (arm, target.user_key)
        if isinstance(arm, Control) and idx not in resumed_idx:
            excluded[idx] = ("EXCLUDED", CONTROL_GROUP)
            continue
        try:
            rendering = render_phone(campaign.for_arm(arm), _context(snap, target, idx), snap.settings)
        except RenderFailed as exc:
            # The kind of failure only: the recipient's data stays out of the log.
            log.warning("render error in campaign %s: %s", campaign.key, exc.kind)
            excluded[idx] = ("FAILED", "RENDER_ERROR")
            continue
        except MessageTooLarge:
            excluded[idx] = ("FAILED", "MESSAGE_TOO_LARGE")
            continue
        if gateway is None:
            excluded[idx] = ("FAILED", "PROVIDER_NOT_CONFIGURED")
            continue
        sends[idx] = _Send(idx, target.user_key, rendering, campaign.is_marketing, target.phone_enc)
        if idx not in resumed_idx:
            planned.append(
                Planned(
                    idx=idx,
                    user_key=target.user_key,
                    tokens=[("", channel, rendering.kind)],
                    marketing=campaign.is_marketing,
                    provider_names={channel: gateway.name},
                    channel=channel,
                    kind=rendering.kind,
                    size_bytes=rendering.size_bytes,
                    paid=paid,
                )
            )
    day = _day(now, snap.timezone)
    fresh_key = f"{item.dispatch_id[:8]}-{item.id}-{uuid.uuid4().hex[:12]}"
    ids, capped = await d._prepare(
        snap,
        campaign,
        excluded,
        planned,
        now,
        channel=channel,
        paid_limit=int(snap.settings.get("paidMessagesDailyLimit") or 0),
        day=day,
        batch_key=fresh_key,
    )
    await d.record_arms(snap, campaign, arms, excluded, capped, now)
    if hold:
        await d.writer.submit(
            HoldRecipients(env_id=item.env_id, dispatch_id=item.dispatch_id, idxs=hold, release_ms=release_at)
        )
    batches: list[tuple[str, list[tuple[int, _Send]], bool]] = []
    for batch_key, idxs in resumed.items():
        batch = [(_delivery(snap, i, channel), sends[i]) for i in idxs if i in sends]
        batches.append((batch_key, batch, True))
    fresh = [
        (ids[p.idx][channel], sends[p.idx]) for p in planned if p.idx not in capped and channel in ids.get(p.idx, {})
    ]
    if fresh:
        batches.append((fresh_key, fresh, False))
    batches = [b for b in batches if b[1]]
    if not batches:
        await d.writer.submit(FinishItem(item_id=item.id, dispatch_id=item.dispatch_id, now_ms=d.now_ms()))
    for n, (batch_key, batch, maybe_sent) in enumerate(batches, start=1):
        assert gateway is not None
        last = n == len(batches)
        if not await _send_batch(d, snap, campaign, gateway, batch_key, batch, maybe_sent=maybe_sent, last=last):
            return


async def _settle(
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
        return {m.delivery_id: PhoneResult(m.delivery_id, "UNKNOWN", error_code=UNCONFIRMED) for m in messages}
    return {
        m.delivery_id: held.get(m.delivery_id) or PhoneResult(m.delivery_id, "FAILED", error_code=code)
        for m in messages
    }


def _delivery(snap: Snapshot, idx: int, channel: str) -> int:
    return snap.deliveries[(idx, channel)][0]


def _message(d: Dispatcher, campaign: Campaign, delivery_id: int, send: _Send) -> PhoneMessage | None:
    if send.phone_enc is None:
        return None
    r = send.rendering
    return PhoneMessage(
        delivery_id=str(delivery_id),
        to=d.cipher.decrypt(send.phone_enc),
        channel=campaign.channel,
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
    d: Dispatcher,
    snap: Snapshot,
    campaign: Campaign,
    gateway: PhoneGateway,
    batch_key: str,
    batch: list[tuple[int, _Send]],
    *,
    maybe_sent: bool,
    last: bool,
) -> bool:
    """Send one batch and record its outcomes; False when the item's lease was lost (nothing recorded)."""
    messages: list[PhoneMessage] = []
    results: dict[str, PhoneResult] = {}
    for delivery_id, send in batch:
        message = _message(d, campaign, delivery_id, send)
        if message is None:
            results[str(delivery_id)] = PhoneResult(str(delivery_id), "FAILED", error_code="NO_PHONE_NUMBER")
        else:
            messages.append(message)
    attempts = 0
    if messages:
        while True:
            attempts += 1
            lease_ms = int(d.settings.lease_seconds * 1000)
            now = d.now_ms()
            if not await d.writer.submit(
                HoldLease(item_id=snap.item.id, owner=d.owner, now_ms=now, until_ms=now + lease_ms)
            ):
                log.warning("work item %s changed hands: its batch is left to the new owner", snap.item.id)
                return False
            try:
                async with d._send_slots:
                    answered = await gateway.send_batch(messages, batch_key=batch_key, maybe_sent=maybe_sent)
                results.update((r.delivery_id, r) for r in answered)
                break
            except ProviderUnavailable as exc:
                # The gateway may have taken the batch before the failure: from now on, ask first.
                maybe_sent = True
                if attempts >= d.settings.max_delivery_attempts:
                    results.update(await _settle(gateway, messages, batch_key=batch_key, code=exc.code))
                    break
                await d.sleep(
                    backoff(
                        attempt=attempts,
                        base=d.settings.retry_base_seconds,
                        cap=d.settings.retry_max_seconds,
                        retry_after=exc.retry_after,
                        rng=d.rng,
                    )
                )
            except ProviderError as exc:
                log.warning("gateway %s refused a batch of campaign %s: %s", gateway.name, campaign.key, exc.message)
                if maybe_sent:
                    # An earlier attempt may have gone through before this refusal: ask, never guess.
                    results.update(await _settle(gateway, messages, batch_key=batch_key, code=exc.code))
                else:
                    results.update(
                        (m.delivery_id, PhoneResult(m.delivery_id, "FAILED", error_code=exc.code)) for m in messages
                    )
                break
    records = []
    for delivery_id, send in batch:
        r = results[str(delivery_id)]
        d.metrics.deliveries.labels(gateway.name, r.status).inc()
        records.append(
            RecordRecipient(
                env_id=snap.item.env_id,
                dispatch_id=snap.item.dispatch_id,
                idx=send.idx,
                results=[
                    DeliveryResult(
                        delivery_id,
                        campaign.channel,
                        r.status,
                        gateway.name,
                        r.provider_message_id,
                        r.error_code,
                        max(attempts, 1),
                    )
                ],
                outcome=r.status,
                reason=r.error_code,
                user_key=send.user_key,
                now_ms=d.now_ms(),
            )
        )
    finish = FinishItem(item_id=snap.item.id, dispatch_id=snap.item.dispatch_id, now_ms=d.now_ms()) if last else None
    await d.writer.submit(RecordRecipients(records=records, finish=finish))
    if gateway.name == "sandbox":
        # The inbox is the phone: what the sandbox took is delivered.
        reports = [
            DeliveryReport(str(r.provider_message_id), True, "SANDBOX")
            for r in results.values()
            if r.status == "SENT" and r.provider_message_id
        ]
        if reports:
            await d.writer.submit(RecordReports(env_id=snap.item.env_id, provider="sandbox", reports=reports))
    return True
