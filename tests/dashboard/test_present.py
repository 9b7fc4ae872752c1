"""How the dashboard words caps, channels and providers, and what a preview fills in. No I/O."""

from __future__ import annotations

from typing import Any

import pytest

from magpie.dashboard import present, preview
from magpie.domain import reasons
from magpie.domain.campaigns import parse_campaign


@pytest.mark.parametrize(
    ("cap", "words"),
    [
        pytest.param(
            {"limit": 1, "windowHours": 24, "channel": "sms"}, "at most 1 marketing SMS per user in 1 day", id="sms-one"
        ),
        pytest.param(
            {"limit": 3, "windowHours": 168, "channel": "push"},
            "at most 3 marketing pushes per user in 7 days",
            id="push-many",
        ),
        pytest.param(
            {"limit": 1, "windowHours": 48, "channel": "push"},
            "at most 1 marketing push per user in 2 days",
            id="push-one",
        ),
        pytest.param(
            {"limit": 2, "windowHours": 1, "channel": "kakao"},
            "at most 2 marketing Kakao messages per user in 1 hour",
            id="kakao-hour",
        ),
        pytest.param(
            {"limit": 5, "windowHours": 12, "channel": None},
            "at most 5 marketing messages of any channel per user in 12 hours",
            id="every-channel",
        ),
        pytest.param(
            {"limit": 1, "windowHours": 1.5, "channel": None, "tag": "sale"},
            "at most 1 message tagged “sale” of any channel per user in 1.5 hours",
            id="tag",
        ),
    ],
)
def test_cap_is_worded_for_its_channel_in_singular_or_plural(cap: dict[str, Any], words: str) -> None:
    assert present.describe_cap(cap) == words


def test_caps_of_another_channel_do_not_apply_to_a_campaign() -> None:
    caps = [
        {"limit": 1, "windowHours": 24, "channel": "sms", "tag": None},
        {"limit": 3, "windowHours": 168, "channel": "push", "tag": None},
        {"limit": 9, "windowHours": 24, "channel": None, "tag": None},
        {"limit": 2, "windowHours": 24, "channel": "push", "tag": "sale"},
    ]
    assert present.caps_for(caps, channel="push", tags=[]) == [caps[1], caps[2]]
    assert present.caps_for(caps, channel="push", tags=["sale"]) == [caps[1], caps[2], caps[3]]
    assert present.caps_for(caps, channel="sms", tags=["sale"]) == [caps[0], caps[2]]


@pytest.mark.parametrize(
    ("campaign", "label"),
    [
        pytest.param({"channel": "kakao", "provider": "gateway"}, "NHN Cloud", id="kakao-nhn"),
        pytest.param({"channel": "sms", "provider": "gateway"}, "Solapi", id="sms-solapi"),
        pytest.param({"channel": "sms", "provider": "sandbox"}, "sandbox", id="sms-sandbox"),
        pytest.param({"provider": "push"}, "FCM / APNs", id="push"),
    ],
)
def test_provider_is_named_after_the_gateway_that_sends(campaign: dict[str, Any], label: str) -> None:
    assert present.provider_label(campaign, {"kakaoGateway": "nhn", "smsGateway": "solapi"}) == label


def test_preview_sample_is_made_of_the_campaigns_own_properties() -> None:
    campaign = parse_campaign(
        {
            "key": 1,
            "name": "Sale",
            "purpose": "MARKETING",
            "message": {
                "title": "{{ user_properties['name'] | default: '고객' }}님",
                "body": "지금 주문하면 {{ api_properties.discount }}% 할인 {{ api_properties.discount }}",
                "clickAction": "DEEP_LINK",
                "link": 'shop://{{ api_properties["code"] }}',
            },
        }
    )
    assert preview.sample_data(campaign) == {
        "api_properties": {"discount": "[discount]", "code": "[code]"},
        "user_properties": {"name": "[name]"},
    }
    shown = preview.render(campaign, {"senderName": "shop", "optOutText": ""})
    assert shown["body"] == "지금 주문하면 [discount]% 할인 [discount]" and shown["link"] == "shop://[code]"
    real = preview.render(campaign, {"senderName": "shop"}, user_properties={"name": "김민지"}, user_id="u1")
    assert real["title"] == "(광고) shop 김민지님" and real["real_user"]


def test_preview_counts_bytes_for_text_messages_only() -> None:
    settings = {"senderName": "shop", "smsOptOutNumber": "080-123-4567"}
    text = parse_campaign({"key": 1, "name": "t", "channel": "sms", "purpose": "MARKETING", "message": {"text": "봄"}})
    brand = parse_campaign({"key": 2, "name": "b", "channel": "kakao", "type": "brand", "message": {"text": "봄"}})
    shown = preview.render(text, settings)
    assert (shown["kind"], shown["text"]) == ("SMS", "(광고)shop\n봄\n무료수신거부 080-123-4567")
    assert shown["bytes"] == len(shown["text"].encode("euc-kr"))
    assert preview.render(brand, settings)["bytes"] is None


def test_every_reason_a_page_shows_has_words() -> None:
    for code in ("NO_CONSENT", "GATEWAY_UNCONFIRMED", "FREQUENCY_CAP", "MESSAGE_TOO_LARGE", "CAMPAIGN_INACTIVE"):
        assert reasons.describe(code) != reasons.describe("SOMETHING_A_PROVIDER_SAID"), code
    assert reasons.describe(None) == ""
