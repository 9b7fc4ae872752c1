"""Push: one request per device token (FCM, APNs, webhook, sandbox), many at once.

A push provider takes one message per request, so the sender's batch is as many recipients as the
dispatcher may have requests in flight: they are sent concurrently and recorded in one writer job,
while the next batch is already being sent. A crash loses at most the answers of two such batches
(their pushes go out again: push delivery is at least once).
"""

from __future__ import annotations

import asyncio
import logging

from liquid.exceptions import LiquidError

from magpie.dispatch.retry import backoff
from magpie.dispatch.stages import Batch, Context, Plan, Reserve, Reserved, record
from magpie.domain import delivery
from magpie.domain.campaigns import Campaign
from magpie.domain.delivery import Channel, Outcome, Reason, Rendered
from magpie.providers.base import ProviderError, ProviderUnavailable, PushMessage, TokenInvalid
from magpie.store.deliveries import DeliveryResult, OutcomeRow, Planned, Target

log = logging.getLogger("magpie.worker")


class PushSender:
    """Sends a batch's pushes through the provider of each token and records their outcomes."""

    channel = Channel.PUSH

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Each push item sends up to ``worker_concurrency`` pushes at once: a few items keep the slots busy.
        self._items = asyncio.Semaphore(max(2, ctx.settings.worker_concurrency // 4))

    def items_in_flight(self) -> asyncio.Semaphore | None:
        return self._items

    def open(self, batch: Batch) -> set[int]:  # noqa: ARG002 - the interface's
        return set()  # a push is never left in flight at a gateway: a PENDING delivery is sent again

    def reservation(self, batch: Batch) -> Reserve:  # noqa: ARG002 - the interface's
        return Reserve(channel=Channel.PUSH)

    def plan(
        self,
        batch: Batch,
        idx: int,
        target: Target,
        *,
        resumed: bool,  # noqa: ARG002 - the interface's
        campaign: Campaign,
    ) -> Plan | Reason:
        """The rendered message and the tokens to send it to, or the reason the recipient fails."""
        snap = batch.snap
        user = snap.users[idx]
        try:
            message = delivery.render(
                campaign=campaign,
                api_properties=user.api_properties,
                user_properties=target.properties,
                user_id=target.user_id,
                device_id=user.device_id,
                settings=snap.settings,
            )
        except LiquidError as exc:
            log.warning("render error in campaign %s: %s", campaign.key, str(exc).splitlines()[0])
            return Reason.RENDER_ERROR
        providers: dict[str, str] = {}
        for token in target.tokens:
            try:
                providers[token.token] = self.ctx.channels.for_token(
                    env_id=snap.item.env_id,
                    settings=snap.settings,
                    campaign_provider=campaign.provider,
                    token_type=token.provider_type,
                ).name
            except ProviderError:
                continue
        if not providers:
            return Reason.PROVIDER_NOT_CONFIGURED
        tokens = [t for t in target.tokens if t.token in providers]
        planned = Planned(
            idx=idx, user_key=target.user_key, tokens=tokens, marketing=campaign.is_marketing, provider_names=providers
        )
        return Plan(planned=planned, message=message, campaign=campaign)

    async def send(self, batch: Batch, plans: list[Plan], reserved: Reserved) -> None:
        ctx = self.ctx
        todo = [p for p in plans if p.planned.idx not in reserved.capped]
        size = max(1, ctx.settings.worker_concurrency)
        recording: asyncio.Task[None] | None = None
        try:
            for start in range(0, len(todo), size):
                chunk = todo[start : start + size]
                answers = await asyncio.gather(
                    *(self._recipient(batch, p, reserved.ids.get(p.planned.idx, {})) for p in chunk)
                )
                if recording is not None:
                    await recording
                outcomes = [outcome for outcome, _ in answers]
                results = [r for _, rs in answers for r in rs]
                recording = asyncio.create_task(record(ctx, batch, outcomes, results))
        finally:
            if recording is not None:
                await recording
        await record(ctx, batch, [], [], last=True)

    async def _recipient(
        self, batch: Batch, plan: Plan, delivery_ids: dict[str, int]
    ) -> tuple[OutcomeRow, list[DeliveryResult]]:
        snap, campaign = batch.snap, plan.campaign
        planned = plan.planned
        rendered: Rendered = plan.message
        sends = []
        results: list[DeliveryResult] = []
        for _, token, token_type in planned.tokens:
            delivery_id = delivery_ids.get(token)
            if delivery_id is None:
                continue
            previous = snap.deliveries.get((planned.idx, token))
            if previous is not None and previous.status != Outcome.PENDING:
                # Already settled by an earlier attempt at this item: never send twice.
                results.append(
                    DeliveryResult(
                        delivery_id,
                        token,
                        previous.status,
                        planned.provider_names[token],
                        None,
                        None,
                        previous.attempts,
                    )
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
                    test=bool(batch.item.payload.get("test")),
                ),
                image_url=campaign.push_message.image_url,
                link=rendered.link,
                delivery_id=str(delivery_id),
                collapse_id=f"{campaign.key}-{snap.exec_id}",
                high_priority=not campaign.is_marketing,
            )
            sends.append(self._send_with_retry(batch, message, delivery_id))
        if len(sends) == 1:
            results.append(await sends[0])  # the usual one token: no task and gather around it
        else:
            results.extend(await asyncio.gather(*sends))
        sent = any(r.status == Outcome.SENT for r in results)
        reason = None if sent else next((r.error_code for r in results if r.error_code), Reason.DELIVERY_FAILED)
        return OutcomeRow(planned.idx, planned.user_key, Outcome.SENT if sent else Outcome.FAILED, reason), results

    async def _send_with_retry(self, batch: Batch, message: PushMessage, delivery_id: int) -> DeliveryResult:
        ctx = self.ctx
        provider = ctx.channels.for_token(
            env_id=batch.item.env_id,
            settings=batch.snap.settings,
            campaign_provider=batch.campaign.provider,
            token_type=message.provider_type,
        )
        attempts = 0
        max_attempts = ctx.settings.max_delivery_attempts

        def result(
            status: Outcome, message_id: str | None, error: str | None, *, retire: bool = False
        ) -> DeliveryResult:
            ctx.metrics.deliveries.labels(provider.name, status).inc()
            return DeliveryResult(
                delivery_id, message.token, status, provider.name, message_id, error, attempts, retire
            )

        while True:
            attempts += 1
            try:
                async with ctx.send_slots:
                    sent = await provider.send(message)
            except TokenInvalid as exc:
                return result(Outcome.FAILED, None, exc.code, retire=True)
            except ProviderUnavailable as exc:
                if attempts >= max_attempts:
                    return result(Outcome.FAILED, None, exc.code)
                await ctx.sleep(
                    backoff(
                        attempt=attempts,
                        base=ctx.settings.retry_base_seconds,
                        cap=ctx.settings.retry_max_seconds,
                        retry_after=exc.retry_after,
                        rng=ctx.rng,
                    )
                )
                continue
            except ProviderError as exc:
                return result(Outcome.FAILED, None, exc.code)
            except Exception:
                log.exception("provider %s raised an unexpected error", provider.name)
                return result(Outcome.FAILED, None, Reason.INTERNAL_ERROR)
            return result(Outcome.SENT, sent.provider_message_id, None)

    async def poll_reports(self, *, max_age_hours: float) -> int:  # noqa: ARG002 - the interface's
        return 0  # push providers report nothing after accepting a message
