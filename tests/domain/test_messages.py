"""Kakao and SMS messages: EUC-KR sizing, AlimTalk placeholders, marketing wrapping, channel rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magpie.domain import delivery, messages
from magpie.domain.audience import Recipient
from magpie.domain.campaigns import check_for_environment, parse_campaign
from magpie.domain.environment import effective, parse_settings
from magpie.domain.messages import (
    LMS_MAX_BYTES,
    SMS_MAX_BYTES,
    euckr_size,
    fill_placeholders,
    marketing_sms,
    placeholders,
    sms_size,
)
from magpie.errors import InvalidCampaign, InvalidRequest

SEOUL = ZoneInfo("Asia/Seoul")
HANGUL = st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3)
ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
SETTINGS = effective({})


def at(hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 11, 26, hour, minute, tzinfo=SEOUL).timestamp() * 1000)


# -- sizes -------------------------------------------------------------------------------------------


@settings(deadline=None)  # pure and fast; a loaded machine must not fail it
@given(st.text(alphabet=st.one_of(HANGUL, ASCII), max_size=200))
def test_euckr_size_matches_cp949_encoding(text: str) -> None:
    assert euckr_size(text) == len(text.encode("cp949"))


@settings(deadline=None)  # pure and fast; a loaded machine must not fail it
@given(st.integers(min_value=0, max_value=1200), st.booleans())
def test_sms_size_kind_follows_the_byte_limits(n: int, hangul: bool) -> None:
    text = ("가" if hangul else "a") * n
    size = sms_size(text)
    assert size.bytes == n * (2 if hangul else 1)
    assert size.kind == ("SMS" if size.bytes <= SMS_MAX_BYTES else "LMS")
    assert size.fits == (size.bytes <= LMS_MAX_BYTES)


@pytest.mark.parametrize(
    ("text", "title", "images", "kind"),
    [
        pytest.param("a" * 90, None, 0, "SMS", id="90-bytes-is-sms"),
        pytest.param("a" * 91, None, 0, "LMS", id="91-bytes-is-lms"),
        pytest.param("가" * 45, None, 0, "SMS", id="45-hangul-is-sms"),
        pytest.param("가" * 46, None, 0, "LMS", id="46-hangul-is-lms"),
        pytest.param("short", "제목", 0, "LMS", id="a-title-makes-lms"),
        pytest.param("short", None, 1, "MMS", id="an-image-makes-mms"),
    ],
)
def test_sms_size_kind(text: str, title: str | None, images: int, kind: str) -> None:
    assert sms_size(text, title=title, images=images).kind == kind


def test_unencodable_lists_emoji_once() -> None:
    assert messages.unencodable("좋아요 😀😀 똠") == ["😀"]


# -- marketing wrapping -----------------------------------------------------------------------------


@settings(deadline=None)  # pure and fast; a loaded machine must not fail it
@given(st.text(alphabet=st.one_of(HANGUL, ASCII), min_size=1, max_size=100), st.text(alphabet=ASCII, max_size=10))
def test_marketing_sms_starts_with_ad_and_ends_with_opt_out_and_is_idempotent(text: str, sender: str) -> None:
    wrapped = marketing_sms(text, sender=sender, opt_out_number="080-123-4567")
    assert wrapped.startswith("(광고)")
    assert wrapped.endswith("무료수신거부 080-123-4567")
    assert text in wrapped
    assert marketing_sms(wrapped, sender=sender, opt_out_number="080-123-4567") == wrapped
    assert euckr_size(wrapped) > euckr_size(text)


# -- placeholders ----------------------------------------------------------------------------------

NAMES = st.text(
    alphabet=st.one_of(HANGUL, st.characters(min_codepoint=0x61, max_codepoint=0x7A)), min_size=1, max_size=8
)


@settings(deadline=None)  # pure and fast; a loaded machine must not fail it
@given(st.lists(NAMES, min_size=1, max_size=10, unique=True), st.data())
def test_fill_placeholders_replaces_every_placeholder(names: list[str], data: st.DataObject) -> None:
    values = {n: data.draw(st.text(alphabet=ASCII, max_size=10)) for n in names}
    template = " / ".join(f"#{{{n}}}" for n in names)
    assert placeholders(template) == names
    filled = fill_placeholders(template, values)
    assert placeholders(filled) == [] or any("#{" in v for v in values.values())
    assert filled == " / ".join(values[n] for n in names)


def test_fill_placeholders_without_a_value_raises() -> None:
    with pytest.raises(KeyError):
        fill_placeholders("#{a} #{b}", {"a": "1"})


# -- campaign files -----------------------------------------------------------------------------------


def alimtalk(**overrides: Any) -> dict[str, Any]:
    campaign: dict[str, Any] = {
        "key": 10,
        "name": "Order shipped",
        "status": "ACTIVE",
        "channel": "kakao",
        "type": "alimtalk",
        "message": {
            "templateCode": "ORDER_SHIPPED",
            "text": "#{고객명}님, 주문 #{주문번호}이 출발했어요",
            "variables": {
                "고객명": "{{ user_properties.name | default: '고객' }}",
                "주문번호": "{{ api_properties.orderNo }}",
            },
            "buttons": [{"type": "WL", "name": "배송 조회", "linkMo": "https://shop.example/o/#{주문번호}"}],
        },
    }
    campaign.update(overrides)
    return campaign


def sms(text: str, **overrides: Any) -> dict[str, Any]:
    campaign: dict[str, Any] = {
        "key": 20,
        "name": "Spring sale",
        "status": "ACTIVE",
        "channel": "sms",
        "purpose": "MARKETING",
        "message": {"text": text},
    }
    campaign.update(overrides)
    return campaign


def test_alimtalk_campaign_round_trips_through_its_json() -> None:
    campaign = parse_campaign(alimtalk())
    assert campaign.channel == "kakao" and campaign.kind == "alimtalk" and campaign.purpose == "INFORMATION"
    assert parse_campaign(campaign.to_json()) == campaign


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(alimtalk(purpose="MARKETING"), "informational only", id="alimtalk-marketing"),
        pytest.param(
            alimtalk(message={**alimtalk()["message"], "variables": {"고객명": "x"}}),
            "#{주문번호}",
            id="placeholder-not-declared",
        ),
        pytest.param(
            alimtalk(message={**alimtalk()["message"], "variables": {**alimtalk()["message"]["variables"], "x": "1"}}),
            "does not have: x",
            id="variable-not-in-template",
        ),
        pytest.param(
            alimtalk(
                message={
                    "templateCode": "T",
                    "text": " ".join(f"#{{v{i}}}" for i in range(31)),
                    "variables": {f"v{i}": "1" for i in range(31)},
                }
            ),
            "at most 30 placeholders",
            id="thirty-one-placeholders",
        ),
        pytest.param(alimtalk(message={"text": "hello"}), "templateCode", id="no-template-code"),
        pytest.param(alimtalk(type="friend"), "type must be one of", id="unknown-kakao-type"),
        pytest.param(
            {**alimtalk(type="brand"), "purpose": "INFORMATION", "message": {"text": "hi"}},
            "brand message is marketing",
            id="brand-information",
        ),
        pytest.param(sms("hi", type="LMS"), "type applies to kakao", id="sms-with-type"),
        pytest.param(
            alimtalk(message={**alimtalk()["message"], "buttons": [{"type": "WL", "name": "x"}]}),
            "linkMo is required",
            id="web-link-button-without-link",
        ),
        pytest.param(
            {**alimtalk(), "message": {**alimtalk()["message"], "fallback": {"text": "#{없음}"}}},
            "#{없음}",
            id="fallback-placeholder-not-declared",
        ),
    ],
)
def test_parse_campaign_refuses(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCampaign) as info:
        parse_campaign(raw)
    assert message in info.value.message


def test_thirty_placeholders_are_accepted() -> None:
    raw = alimtalk(
        message={
            "templateCode": "T",
            "text": " ".join(f"#{{v{i}}}" for i in range(30)),
            "variables": {f"v{i}": "{{ api_properties.v }}" for i in range(30)},
        }
    )
    assert len(parse_campaign(raw).message.variables) == 30  # type: ignore[union-attr]


def test_marketing_sms_needs_the_opt_out_number() -> None:
    campaign = parse_campaign(sms("봄 세일"))
    with pytest.raises(InvalidCampaign, match="smsOptOutNumber"):
        check_for_environment(campaign, SETTINGS)
    check_for_environment(campaign, {**SETTINGS, "smsOptOutNumber": "080-123-4567"})


def test_marketing_sms_size_counts_the_added_prefix_and_opt_out() -> None:
    env_settings = {**SETTINGS, "smsOptOutNumber": "080-123-4567", "senderName": "magpie"}
    wrapper = euckr_size(marketing_sms("", sender="magpie", opt_out_number="080-123-4567"))
    fits = parse_campaign(sms("a" * (LMS_MAX_BYTES - wrapper)))
    check_for_environment(fits, env_settings)
    over = parse_campaign(sms("a" * (LMS_MAX_BYTES - wrapper + 1)))
    with pytest.raises(InvalidCampaign, match="over the 2000-byte limit"):
        check_for_environment(over, env_settings)
    # Informational SMS carry no wrapping: the same text fits.
    check_for_environment(parse_campaign(sms("a" * (LMS_MAX_BYTES - wrapper + 1), purpose="INFORMATION")), env_settings)


def test_sms_text_a_phone_cannot_show_is_refused() -> None:
    with pytest.raises(InvalidCampaign, match="cannot carry"):
        check_for_environment(parse_campaign(sms("세일 😀", purpose="INFORMATION")), SETTINGS)


def test_alimtalk_fallback_obeys_the_sms_size() -> None:
    raw = alimtalk()
    raw["message"] = {**raw["message"], "fallback": {"text": "가" * 1001}}
    with pytest.raises(InvalidCampaign, match="fallback"):
        check_for_environment(parse_campaign(raw), SETTINGS)


# -- settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"smsOptOutNumber": "02-123-4567"}, "080", id="opt-out-not-080"),
        pytest.param({"kakaoGateway": "nhn"}, "providers.nhn is missing", id="gateway-without-settings"),
        pytest.param({"smsGateway": "kt"}, "must be one of", id="unknown-gateway"),
        pytest.param({"paidMessagesDailyLimit": -1}, "non-negative", id="negative-limit"),
        pytest.param({"providers": {"solapi": {"apiKey": "k"}}}, "missing apiSecret", id="solapi-without-secret"),
    ],
)
def test_settings_refuse(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_settings(raw)


# -- the channel decision ------------------------------------------------------------------------------


def crm(channel: str, **purposes: str) -> dict[str, Any]:
    return {channel: {p: {"status": s, "changedAt": 0, "updatedAt": 0} for p, s in purposes.items()}}


def run(
    channel: str,
    kind: str | None,
    purpose: str,
    profile: dict[str, Any],
    *,
    now: int | None = None,
    phone: bool = True,
    policy: str = "HOLD",
    rule: str = "SUBSCRIBED_ONLY",
) -> tuple[str, object]:
    """``delivery.decide`` (the one decision for every channel) on a campaign of this channel."""
    raw: dict[str, Any] = {"key": 1, "name": "c", "status": "ACTIVE", "channel": channel, "consentRule": rule}
    if channel == "kakao":
        raw["type"] = kind
        raw["message"] = {"text": "hi"} if kind == "brand" else {"templateCode": "T", "text": "hi"}
    else:
        raw["purpose"] = purpose
        raw["message"] = {"text": "hi"}
    answer = delivery.decide(
        campaign=parse_campaign(raw),
        recipient=Recipient(user_id="u1"),
        crm=profile,
        has_push_token=False,
        has_phone=phone,
        in_cohort=lambda _: False,
        now_ms=at(12) if now is None else now,
        night=delivery.NightRule(timezone="Asia/Seoul", policy=policy),
    )
    match answer:
        case delivery.Exclude(reason=reason):
            return ("EXCLUDED", reason)
        case delivery.Hold(until_ms=until):
            return ("HOLD", until)
    return ("SEND", None)


KAKAO_INFO_OUT = crm("kakao", information="UNSUBSCRIBED")
SMS_INFO_OUT = crm("sms", information="UNSUBSCRIBED")
KAKAO_MKT = crm("kakao", marketing="SUBSCRIBED")


@pytest.mark.parametrize(
    ("channel", "kind", "purpose", "profile", "expected"),
    [
        pytest.param("kakao", "alimtalk", "INFORMATION", {}, "SEND", id="alimtalk-unknown-consent"),
        pytest.param(
            "kakao",
            "alimtalk",
            "INFORMATION",
            crm("kakao", information="UNSUBSCRIBED"),
            "EXCLUDED",
            id="alimtalk-opt-out",
        ),
        pytest.param(
            "kakao",
            "alimtalk",
            "INFORMATION",
            crm("sms", information="UNSUBSCRIBED"),
            "SEND",
            id="other-channel-opt-out",
        ),
        pytest.param("kakao", "brand", "MARKETING", {}, "EXCLUDED", id="brand-unknown-consent"),
        pytest.param("kakao", "brand", "MARKETING", KAKAO_MKT, "SEND", id="brand-subscribed"),
        pytest.param("kakao", "brand", "MARKETING", crm("push", marketing="SUBSCRIBED"), "EXCLUDED", id="push-consent"),
        pytest.param("sms", None, "MARKETING", crm("sms", marketing="SUBSCRIBED"), "SEND", id="sms-marketing"),
        pytest.param("sms", None, "MARKETING", crm("kakao", marketing="SUBSCRIBED"), "EXCLUDED", id="kakao-consent"),
        pytest.param("sms", None, "INFORMATION", {}, "SEND", id="sms-information"),
    ],
)
def test_decide_consent_per_channel_and_purpose(
    channel: str, kind: str | None, purpose: str, profile: dict[str, Any], expected: str
) -> None:
    outcome = run(channel, kind, purpose, profile)
    assert outcome[0] == expected
    if expected == "EXCLUDED":
        assert outcome[1] == "NO_CONSENT"


def test_brand_message_unknown_consent_is_excluded_even_when_the_rule_allows_unknown() -> None:
    assert run("kakao", "brand", "MARKETING", {}, rule="SUBSCRIBED_OR_UNKNOWN") == ("EXCLUDED", "NO_CONSENT")


def test_no_phone_number_is_excluded() -> None:
    assert run("sms", None, "INFORMATION", {}, phone=False) == ("EXCLUDED", "NO_PHONE_NUMBER")


@pytest.mark.parametrize(
    ("hour", "minute", "held"),
    [
        pytest.param(20, 49, False, id="20:49"),
        pytest.param(20, 50, True, id="20:50"),
        pytest.param(3, 0, True, id="03:00"),
        pytest.param(7, 59, True, id="07:59"),
        pytest.param(8, 0, False, id="08:00"),
    ],
)
def test_brand_message_night_is_2050_to_0800_and_no_consent_lifts_it(hour: int, minute: int, held: bool) -> None:
    profile = {**crm("kakao", marketing="SUBSCRIBED", night="SUBSCRIBED")}
    outcome = run("kakao", "brand", "MARKETING", profile, now=at(hour, minute))
    assert (outcome[0] == "HOLD") == held
    if held:
        release = datetime.fromtimestamp(int(outcome[1]) / 1000, SEOUL)  # type: ignore[call-overload]
        assert (release.hour, release.minute) == (8, 0)
    assert run("kakao", "brand", "MARKETING", profile, now=at(hour, minute), policy="DROP")[0] == (
        "EXCLUDED" if held else "SEND"
    )


def test_sms_marketing_at_night_needs_sms_night_consent() -> None:
    subscribed = crm("sms", marketing="SUBSCRIBED")
    assert run("sms", None, "MARKETING", subscribed, now=at(20, 55))[0] == "SEND"
    assert run("sms", None, "MARKETING", subscribed, now=at(21, 0))[0] == "HOLD"
    push_night = {**subscribed, "push": {"night": {"status": "SUBSCRIBED", "changedAt": 0, "updatedAt": 0}}}
    assert run("sms", None, "MARKETING", push_night, now=at(22))[0] == "HOLD"
    night = crm("sms", marketing="SUBSCRIBED", night="SUBSCRIBED")
    assert run("sms", None, "MARKETING", night, now=at(22)) == ("SEND", None)
    assert run("sms", None, "MARKETING", subscribed, now=at(22), policy="DROP") == ("EXCLUDED", "NIGHT_TIME_DROPPED")


def test_informational_messages_ignore_the_night() -> None:
    assert run("sms", None, "INFORMATION", {}, now=at(23))[0] == "SEND"
    assert run("kakao", "alimtalk", "INFORMATION", {}, now=at(23))[0] == "SEND"
