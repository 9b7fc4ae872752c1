"""Per-recipient delivery decisions against the documented rules (README.md, docs/channels.md: consent, night time),
rendering and the Hackle payload.

``expected_decision`` below restates the documented rules on its own terms (stored
consent shapes written by hand, the night window as milliseconds since local midnight in a
fixed-offset zone); hypothesis checks ``decide`` against it, then a table pins the documented
sentences one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magpie.domain.audience import Recipient
from magpie.domain.campaigns import Campaign, parse_campaign
from magpie.domain.delivery import (
    Decision,
    Exclude,
    Hold,
    NightRule,
    Rendered,
    Send,
    decide,
    frequency_caps,
    hackle_payload,
    render,
)

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# 2026-11-26 00:00:00 UTC; Seoul is UTC+9 with no daylight saving time since 1988.
MIDNIGHT_UTC = 1_795_651_200_000
# Zones whose offset has not moved since 2000, so local time is (utc + offset) mod one day.
ZONES = {"UTC": 0, "Asia/Seoul": 9 * HOUR, "Asia/Kolkata": 5 * HOUR + 30 * MINUTE, "Pacific/Honolulu": -10 * HOUR}
YEAR_2000_MS = 946_684_800_000
YEAR_2100_MS = 4_102_444_800_000


def campaign(purpose: str = "MARKETING", consent_rule: str = "SUBSCRIBED_ONLY", **extra: Any) -> Campaign:
    return parse_campaign(
        {
            "key": 7,
            "name": "spring sale",
            "status": "ACTIVE",
            "purpose": purpose,
            "consentRule": consent_rule,
            "message": {"title": "Hi {{ user.id }}", "body": "item {{ api_properties.sku }}"},
            **extra,
        }
    )


def crm(**push: str) -> dict[str, Any]:
    """The stored consent shape for push purposes (``marketing``, ``information``, ``night``)."""
    stored = {purpose: {"status": status, "changedAt": 1, "updatedAt": 1} for purpose, status in push.items()}
    # Consent on other channels never decides a push.
    return {"push": stored, "sms": {"marketing": {"status": "SUBSCRIBED", "changedAt": 1, "updatedAt": 1}}}


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True)
class Case:
    purpose: str
    consent_rule: str
    consent: dict[str, str]
    known: bool
    in_audience: bool
    has_push_token: bool
    now_ms: int
    zone: str
    start: int  # minutes after local midnight
    end: int
    policy: str


def expected_decision(case: Case) -> Decision:
    """The documented rules, in the order magpie reports the first reason that applies."""
    if not case.known:
        return Exclude("UNKNOWN_USER")
    if not case.in_audience:
        return Exclude("NOT_IN_AUDIENCE")
    marketing = case.consent.get("marketing")
    information = case.consent.get("information")
    if case.purpose == "MARKETING":
        # SUBSCRIBED_ONLY: an explicit subscription; SUBSCRIBED_OR_UNKNOWN: anything but an opt-out.
        consented = marketing == "SUBSCRIBED" if case.consent_rule == "SUBSCRIBED_ONLY" else marketing != "UNSUBSCRIBED"
    else:
        consented = information != "UNSUBSCRIBED"
    if not consented:
        return Exclude("NO_CONSENT")
    if not case.has_push_token:
        return Exclude("NO_PUSH_TOKEN")
    if case.purpose == "MARKETING" and case.consent.get("night") != "SUBSCRIBED":
        local = (case.now_ms + ZONES[case.zone]) % DAY
        start, end = case.start * MINUTE, case.end * MINUTE
        inside = start <= local < end if start <= end else local >= start or local < end
        if inside:
            if case.policy == "DROP":
                return Exclude("NIGHT_TIME_DROPPED")
            return Hold(case.now_ms + (end - local) % DAY)
    return Send()


statuses = st.sampled_from(["SUBSCRIBED", "UNSUBSCRIBED"])
cases = st.builds(
    Case,
    purpose=st.sampled_from(["MARKETING", "INFORMATION"]),
    consent_rule=st.sampled_from(["SUBSCRIBED_ONLY", "SUBSCRIBED_OR_UNKNOWN"]),
    consent=st.dictionaries(st.sampled_from(["marketing", "information", "night"]), statuses),
    known=st.booleans(),
    in_audience=st.booleans(),
    has_push_token=st.booleans(),
    now_ms=st.integers(YEAR_2000_MS, YEAR_2100_MS),
    zone=st.sampled_from(sorted(ZONES)),
    start=st.integers(0, 24 * 60 - 1),
    end=st.integers(0, 24 * 60 - 1),
    policy=st.sampled_from(["HOLD", "DROP"]),
)


def run(case: Case) -> Decision:
    # The audience names one static cohort; membership is the case's in_audience.
    audience = [
        {
            "conditions": [
                {
                    "key": {"type": "COHORT", "name": "vip"},
                    "match": {"type": "MATCH", "operator": "IN", "valueType": "STRING", "values": ["vip"]},
                }
            ]
        }
    ]
    return decide(
        campaign=campaign(case.purpose, case.consent_rule, audience=audience),
        recipient=Recipient(user_id="u1", device_ids=("d1",)) if case.known else None,
        crm=crm(**case.consent),
        has_push_token=case.has_push_token,
        in_cohort=lambda name: name == "vip" and case.in_audience,
        now_ms=case.now_ms,
        night=NightRule(timezone=case.zone, start=hhmm(case.start), end=hhmm(case.end), policy=case.policy),
    )


@settings(max_examples=600, deadline=None)
@given(cases)
def test_decide_property_follows_spec(case: Case) -> None:
    assert run(case) == expected_decision(case)


@settings(max_examples=300, deadline=None)
@given(cases.filter(lambda c: c.policy == "HOLD"))
def test_decide_property_held_push_is_sent_at_release(case: Case) -> None:
    first = run(case)
    if not isinstance(first, Hold):
        return
    assert case.now_ms < first.until_ms <= case.now_ms + DAY
    later = Case(**{**case.__dict__, "now_ms": first.until_ms})
    assert run(later) == Send()


def at_seoul(hours: int, minutes: int = 0) -> int:
    """Epoch ms of 2026-11-26 at ``hours:minutes`` in Seoul (which may be the day before in UTC)."""
    return MIDNIGHT_UTC + hours * HOUR + minutes * MINUTE - 9 * HOUR


KST_NIGHT = NightRule(timezone="Asia/Seoul", start="21:00", end="08:00", policy="HOLD")


@pytest.mark.parametrize(
    ("purpose", "rule", "consent", "now_ms", "night", "expected"),
    [
        pytest.param(
            "INFORMATION", "SUBSCRIBED_ONLY", {"marketing": "UNSUBSCRIBED"}, at_seoul(12), KST_NIGHT, Send(),
            id="information-ignores-marketing-opt-out",
        ),
        pytest.param(
            "INFORMATION", "SUBSCRIBED_ONLY", {}, at_seoul(12), KST_NIGHT, Send(),
            id="information-unknown-consent-sends",
        ),
        pytest.param(
            "INFORMATION", "SUBSCRIBED_ONLY", {"information": "UNSUBSCRIBED"}, at_seoul(12), KST_NIGHT,
            Exclude("NO_CONSENT"), id="information-opt-out-excludes",
        ),
        pytest.param(
            "MARKETING", "SUBSCRIBED_ONLY", {}, at_seoul(12), KST_NIGHT, Exclude("NO_CONSENT"),
            id="marketing-unknown-consent-subscribed-only-excludes",
        ),
        pytest.param(
            "MARKETING", "SUBSCRIBED_OR_UNKNOWN", {}, at_seoul(12), KST_NIGHT, Send(),
            id="marketing-unknown-consent-or-unknown-sends",
        ),
        pytest.param(
            "MARKETING", "SUBSCRIBED_OR_UNKNOWN", {"marketing": "UNSUBSCRIBED"}, at_seoul(12), KST_NIGHT,
            Exclude("NO_CONSENT"), id="marketing-opt-out-excludes",
        ),
        pytest.param(
            "MARKETING", "SUBSCRIBED_ONLY", {"marketing": "SUBSCRIBED"}, at_seoul(23, 30), KST_NIGHT,
            Hold(at_seoul(32)), id="marketing-at-2330-kst-held-until-0800",
        ),
        pytest.param(
            "MARKETING", "SUBSCRIBED_ONLY", {"marketing": "SUBSCRIBED"}, at_seoul(7, 59), KST_NIGHT,
            Hold(at_seoul(8)), id="marketing-at-0759-kst-held-a-minute",
        ),
        pytest.param(
            "MARKETING", "SUBSCRIBED_ONLY", {"marketing": "SUBSCRIBED"}, at_seoul(8), KST_NIGHT, Send(),
            id="marketing-at-0800-kst-sends",
        ),
        pytest.param(
            "MARKETING", "SUBSCRIBED_ONLY", {"marketing": "SUBSCRIBED"}, at_seoul(20, 59), KST_NIGHT, Send(),
            id="marketing-at-2059-kst-sends",
        ),
        pytest.param(
            "MARKETING", "SUBSCRIBED_ONLY", {"marketing": "SUBSCRIBED"}, at_seoul(21), KST_NIGHT,
            Hold(at_seoul(32)), id="marketing-at-2100-kst-held",
        ),
        pytest.param(
            "MARKETING", "SUBSCRIBED_ONLY", {"marketing": "SUBSCRIBED", "night": "SUBSCRIBED"}, at_seoul(23),
            KST_NIGHT, Send(), id="marketing-night-consent-sends-at-night",
        ),
        pytest.param(
            "MARKETING", "SUBSCRIBED_ONLY", {"marketing": "SUBSCRIBED"}, at_seoul(23),
            NightRule(timezone="Asia/Seoul", policy="DROP"), Exclude("NIGHT_TIME_DROPPED"),
            id="marketing-night-drop-policy-excludes",
        ),
        pytest.param(
            "INFORMATION", "SUBSCRIBED_ONLY", {}, at_seoul(23), KST_NIGHT, Send(),
            id="information-never-held-at-night",
        ),
        pytest.param(
            # 23:00 in Seoul is 14:00 UTC: outside a UTC night window.
            "MARKETING", "SUBSCRIBED_ONLY", {"marketing": "SUBSCRIBED"}, at_seoul(23),
            NightRule(timezone="UTC"), Send(), id="marketing-night-window-in-environment-zone",
        ),
    ],
)  # fmt: skip
def test_decide_spec_sentence(
    purpose: str, rule: str, consent: dict[str, str], now_ms: int, night: NightRule, expected: Decision
) -> None:
    decision = decide(
        campaign=campaign(purpose, rule),
        recipient=Recipient(user_id="u1"),
        crm=crm(**consent),
        has_push_token=True,
        in_cohort=lambda _: False,
        now_ms=now_ms,
        night=night,
    )
    assert decision == expected


def test_decide_unknown_user_excluded_before_anything_else() -> None:
    decision = decide(
        campaign=campaign("MARKETING"),
        recipient=None,
        crm={},
        has_push_token=False,
        in_cohort=lambda _: False,
        now_ms=at_seoul(23),
        night=KST_NIGHT,
    )
    assert decision == Exclude("UNKNOWN_USER")


@pytest.mark.parametrize(
    ("purpose", "expected"),
    [
        pytest.param("MARKETING", [{"limit": 1, "windowHours": 24, "tag": None}], id="marketing-counts"),
        pytest.param("INFORMATION", [], id="information-uncapped"),
    ],
)
def test_frequency_caps_apply_to_marketing_only(purpose: str, expected: list[dict[str, Any]]) -> None:
    caps = [{"limit": 1, "windowHours": 24, "tag": None}]
    assert frequency_caps(campaign=campaign(purpose), settings={"frequencyCaps": caps}) == expected


@pytest.mark.parametrize(
    ("purpose", "expected"),
    [
        pytest.param(
            "MARKETING",
            Rendered("(광고) magpie shop Hi u1", "item A-1\n수신거부: 설정", None),
            id="marketing-prefix-and-opt-out",
        ),
        pytest.param("INFORMATION", Rendered("Hi u1", "item A-1", None), id="information-as-written"),
    ],
)
def test_render_marketing_compliance(purpose: str, expected: Rendered) -> None:
    rendered = render(
        campaign=campaign(purpose),
        api_properties={"sku": "A-1"},
        user_properties={},
        user_id="u1",
        device_id=None,
        settings={"senderName": "magpie shop", "optOutText": "수신거부: 설정"},
    )
    assert rendered == expected


COMMON = {
    "workspaceId": 1,
    "environmentId": 3,
    "pushMessageId": 7,
    "pushMessageKey": 7,
    "pushMessageExecutionId": 11,
    "pushMessageDeliveryId": 13,
    "showForeground": True,
    "title": "t",
    "body": "b",
    "clickAction": "DEEP_LINK",
    "link": "app://x",
    "campaignType": "PUSH_MESSAGE",
    "debug": False,
}


IMAGE = "https://img.example/x.png"


@pytest.mark.parametrize(
    ("provider_type", "images"),
    [
        pytest.param("FCM", {"thumbnailImageUrl": IMAGE, "largeImageUrl": IMAGE}, id="android-image-keys"),
        pytest.param("APN", {"imageUrl": IMAGE}, id="ios-image-key"),
    ],
)
def test_hackle_payload_fields_per_platform(provider_type: str, images: dict[str, str]) -> None:
    message = {"title": "t", "body": "b", "clickAction": "DEEP_LINK", "link": "app://x", "imageUrl": IMAGE}
    payload = hackle_payload(
        env_id=3,
        campaign=campaign("INFORMATION", message=message),
        exec_id=11,
        delivery_id=13,
        message=Rendered("t", "b", "app://x"),
        provider_type=provider_type,
    )
    assert payload == {**COMMON, **images}
