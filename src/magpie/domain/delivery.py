"""Per-recipient delivery: who gets a message, what a push says, and the payload Hackle's SDKs read. No I/O.

``decide`` applies the rules README.md (push) and docs/channels.md (Kakao, SMS) describe, in this order,
and answers with one of three small types:

=====================  ===============================================================
``Exclude(reason)``    ``UNKNOWN_USER``, ``NOT_IN_AUDIENCE``, ``NO_CONSENT``,
                       ``NO_PUSH_TOKEN`` / ``NO_PHONE_NUMBER`` or ``NIGHT_TIME_DROPPED``
``Hold(until_ms)``     a marketing message inside its night window, policy ``HOLD``
``Send()``             everything else
=====================  ===============================================================

Kakao and SMS campaigns follow the same order with their channel's rules
(``magpie.domain.messages``): consent per channel and purpose, a phone number instead of a
push token, and their own night windows.

The frequency cap is the one rule left out: it counts pushes other workers may be sending at
the same moment, so the store checks it (with ``compliance.cap_exceeded``) in the transaction
that reserves the send.

>>> from magpie.domain.campaigns import DEMO_CAMPAIGN, parse_campaign
>>> demo = parse_campaign(DEMO_CAMPAIGN)  # information, to everyone
>>> ask = dict(campaign=demo, crm={}, in_cohort=lambda _: False, now_ms=0, night=NightRule())
>>> decide(recipient=Recipient(user_id="u1"), has_push_token=True, **ask)
Send()
>>> decide(recipient=Recipient(user_id="u1"), has_push_token=False, **ask)
Exclude(reason=<Reason.NO_PUSH_TOKEN: 'NO_PUSH_TOKEN'>)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from magpie.domain import compliance, consent, messages
from magpie.domain.audience import Recipient, matches
from magpie.domain.campaigns import Campaign


class Channel(StrEnum):
    """Where a campaign's message goes; the stored value of ``deliveries.channel``."""

    PUSH = "push"
    KAKAO = "kakao"
    SMS = "sms"


class Outcome(StrEnum):
    """A recipient's single outcome, and a delivery's status (``PENDING``/``SENDING`` before it has one)."""

    SENT = "SENT"
    FAILED = "FAILED"
    EXCLUDED = "EXCLUDED"
    # A gateway may have taken the message but could not say so: neither failed nor sent again.
    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    SENDING = "SENDING"


class Reason(StrEnum):
    """Why a recipient was excluded or failed, as stored beside its outcome."""

    UNKNOWN_USER = "UNKNOWN_USER"
    NOT_IN_AUDIENCE = "NOT_IN_AUDIENCE"
    NO_CONSENT = "NO_CONSENT"
    NO_PUSH_TOKEN = "NO_PUSH_TOKEN"
    NO_PHONE_NUMBER = "NO_PHONE_NUMBER"
    NIGHT_TIME_DROPPED = "NIGHT_TIME_DROPPED"
    FREQUENCY_CAP = "FREQUENCY_CAP"
    DAILY_LIMIT = "DAILY_LIMIT"
    RENDER_ERROR = "RENDER_ERROR"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    PROVIDER_NOT_CONFIGURED = "PROVIDER_NOT_CONFIGURED"
    CAMPAIGN_INACTIVE = "CAMPAIGN_INACTIVE"
    DELIVERY_FAILED = "DELIVERY_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # The item was given up after its bounded retries.
    PROCESSING_ERROR = "PROCESSING_ERROR"
    # A batch the gateway may or may not have taken, and would not say.
    GATEWAY_UNCONFIRMED = "GATEWAY_UNCONFIRMED"
    # Held out as an experiment's control group (docs/experiments.md).
    CONTROL_GROUP = "CONTROL_GROUP"


UNKNOWN_USER: Final = Reason.UNKNOWN_USER
NOT_IN_AUDIENCE: Final = Reason.NOT_IN_AUDIENCE
NO_CONSENT: Final = Reason.NO_CONSENT
NO_PUSH_TOKEN: Final = Reason.NO_PUSH_TOKEN
NO_PHONE_NUMBER: Final = Reason.NO_PHONE_NUMBER
NIGHT_TIME_DROPPED: Final = Reason.NIGHT_TIME_DROPPED


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver now."""


@dataclass(frozen=True, slots=True)
class Exclude:
    """Do not deliver; ``reason`` is the recipient's recorded outcome reason."""

    reason: Reason


@dataclass(frozen=True, slots=True)
class Hold:
    """Decide again at ``until_ms`` (epoch milliseconds), when the night window ends."""

    until_ms: int


Decision = Send | Exclude | Hold


@dataclass(frozen=True, slots=True)
class NightRule:
    """The environment's night window (local ``HH:MM``, end exclusive) and what happens inside it."""

    timezone: str = "Asia/Seoul"
    start: str = "21:00"
    end: str = "08:00"
    policy: str = "HOLD"  # HOLD | DROP

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, timezone: str) -> NightRule:
        return cls(
            timezone=timezone, start=settings["nightStart"], end=settings["nightEnd"], policy=settings["nightPolicy"]
        )


def decide(
    *,
    campaign: Campaign,
    recipient: Recipient | None,
    crm: Mapping[str, Any],
    has_push_token: bool,
    in_cohort: Callable[[str], bool],
    now_ms: int,
    night: NightRule,
    has_phone: bool = False,
) -> Decision:
    """Whether ``recipient`` (``None``: nobody by that id) gets ``campaign``'s message at ``now_ms``."""
    if recipient is None:
        return Exclude(UNKNOWN_USER)
    if not matches(audience=campaign.audience, recipient=recipient, in_cohort=in_cohort):
        return Exclude(NOT_IN_AUDIENCE)
    if campaign.channel != Channel.PUSH:
        return _decide_phone(campaign=campaign, crm=crm, has_phone=has_phone, now_ms=now_ms, night=night)
    if not compliance.consent_allows(crm=crm, purpose=campaign.purpose, rule=campaign.consent_rule):
        return Exclude(NO_CONSENT)
    if not has_push_token:
        return Exclude(NO_PUSH_TOKEN)
    if campaign.is_marketing and not compliance.has_night_consent(crm):
        release = compliance.night_release(now_ms=now_ms, timezone=night.timezone, start=night.start, end=night.end)
        if release is not None:
            return Exclude(NIGHT_TIME_DROPPED) if night.policy == "DROP" else Hold(release)
    return Send()


def _decide_phone(
    *, campaign: Campaign, crm: Mapping[str, Any], has_phone: bool, now_ms: int, night: NightRule
) -> Decision:
    """Kakao and SMS: the channel's consent, a phone number, and the channel's quiet hours."""
    channel, kind = campaign.channel, campaign.kind
    purpose = messages.purpose_of(channel, kind, campaign.purpose)
    if not messages.consent_allows(crm=crm, channel=channel, purpose=purpose, rule=campaign.consent_rule):
        return Exclude(NO_CONSENT)
    if not has_phone:
        return Exclude(NO_PHONE_NUMBER)
    quiet = messages.night_rule(
        channel=channel, kind=kind, purpose=purpose, settings={"nightStart": night.start, "nightEnd": night.end}
    )
    if quiet is None:
        return Send()
    if quiet.consent_lifts and consent.status_of(crm, channel, "night") == consent.SUBSCRIBED:
        return Send()
    release = compliance.night_release(now_ms=now_ms, timezone=night.timezone, start=quiet.start, end=quiet.end)
    if release is None:
        return Send()
    policy = campaign.night_policy or night.policy
    return Exclude(NIGHT_TIME_DROPPED) if policy == "DROP" else Hold(release)


def frequency_caps(*, campaign: Campaign | None, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The caps a push of ``campaign`` counts against: marketing pushes only."""
    if campaign is None or not campaign.is_marketing:
        return []
    caps: list[dict[str, Any]] = settings.get("frequencyCaps", [])
    return caps


@dataclass(frozen=True, slots=True)
class Rendered:
    title: str
    body: str
    link: str | None


def render(
    *,
    campaign: Campaign,
    api_properties: Mapping[str, Any],
    user_properties: Mapping[str, Any],
    user_id: str | None,
    device_id: str | None,
    settings: Mapping[str, Any],
) -> Rendered:
    """The recipient's message, with the marketing prefix and opt-out text when the law asks for them.

    Raises ``LiquidError`` when a template fails on this recipient's data.
    """
    context = {
        "api_properties": api_properties,
        "user_properties": user_properties,
        "user": {"id": user_id or "", "deviceId": device_id or ""},
    }
    title, body, link = campaign.render(context)
    if campaign.is_marketing:
        title = compliance.marketing_title(title, sender=settings.get("senderName", ""))
        body = compliance.marketing_body(body, opt_out=settings.get("optOutText", ""))
    return Rendered(title, body, link)


def hackle_payload(
    *,
    env_id: int,
    campaign: Campaign,
    exec_id: int,
    delivery_id: int,
    message: Rendered,
    provider_type: str,
    test: bool = False,
) -> dict[str, Any]:
    """The object Hackle's mobile SDKs look for before they show a push (``FCM`` or ``APN``).

    A broadcast's test send carries ``"test": true`` (the SDKs ignore keys they do not know), so that an
    app, and whoever reads the provider's request, can tell it from the real send.
    """
    payload: dict[str, Any] = {
        "workspaceId": 1,
        "environmentId": env_id,
        "pushMessageId": campaign.key,
        "pushMessageKey": campaign.key,
        "pushMessageExecutionId": exec_id,
        "pushMessageDeliveryId": delivery_id,
        "showForeground": True,
        "title": message.title,
        "body": message.body,
        "clickAction": campaign.push_message.click_action,
        "link": message.link or "",
        "campaignType": "PUSH_MESSAGE",
        "debug": False,
    }
    image = campaign.push_message.image_url
    if provider_type == "FCM":
        payload["thumbnailImageUrl"] = image
        payload["largeImageUrl"] = image
    else:
        payload["imageUrl"] = image
    if test:
        payload["test"] = True
    return payload
