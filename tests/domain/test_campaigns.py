"""Campaign definitions: validation with the field named, Liquid rendering, and the JSON round trip."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from liquid import Template
from liquid.exceptions import LiquidError

from magpie.domain.campaigns import DEMO_CAMPAIGN, compile_template, parse_campaign
from magpie.errors import InvalidCampaign


def definition(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "key": 3,
        "name": "Order shipped",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "message": {
            "title": "{{ user_properties.name | default: '고객' }}님, 주문하신 상품이 출발했어요",
            "body": "주문번호 {{ api_properties.orderNo }}",
            "clickAction": "DEEP_LINK",
            "link": "myapp://orders/{{ api_properties.orderNo }}",
        },
    }
    return {**base, **changes}


def test_parse_campaign_defaults() -> None:
    campaign = parse_campaign({"key": 1, "name": " n ", "purpose": "MARKETING", "message": {"title": "t", "body": "b"}})
    assert (campaign.status, campaign.provider, campaign.consent_rule, campaign.tags, campaign.name) == (
        "DRAFT",
        "push",
        "SUBSCRIBED_ONLY",
        (),
        "n",
    )
    assert (campaign.message.click_action, campaign.message.link, campaign.is_marketing) == ("APP_OPEN", None, True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"key": 0}, "key must be a positive integer", id="key-zero"),
        pytest.param({"key": True}, "key must be a positive integer", id="key-boolean"),
        pytest.param({"key": 2**31}, "key must be a positive integer", id="key-over-int32"),
        pytest.param({"name": "  "}, "name must be a non-empty string of at most 256 characters", id="name-blank"),
        pytest.param(
            {"status": "LIVE"}, "status must be one of DRAFT, ACTIVE, PAUSED, ARCHIVED, got 'LIVE'", id="status"
        ),
        pytest.param({"purpose": None}, "purpose must be one of MARKETING, INFORMATION, got None", id="purpose"),
        pytest.param({"deliveryType": "SCHEDULED"}, "deliveryType must be API", id="delivery-type"),
        pytest.param({"tags": ["ok", ""]}, "tags must be a list of non-empty strings", id="tags-empty-string"),
        pytest.param({"colour": "red"}, "unknown campaign fields: colour", id="unknown-field"),
        pytest.param({"message": None}, "message is required", id="message-missing"),
        pytest.param({"message": {"title": "t", "body": " "}}, "message.body must be a non-empty string", id="body"),
        pytest.param(
            {"message": {"title": "t", "body": "b", "clickAction": "DEEP_LINK"}},
            "message.link is required when clickAction is DEEP_LINK",
            id="deep-link-without-link",
        ),
        pytest.param(
            {"message": {"title": "t", "body": "b", "imageUrl": "ftp://x"}},
            "message.imageUrl must be an http(s) URL",
            id="image-not-http",
        ),
        pytest.param(
            {"message": {"title": "{% if %}", "body": "b"}}, "message.title: template error", id="template-syntax"
        ),
        pytest.param(
            {"message": {"title": "t", "body": "b", "sound": "x"}}, "unknown message fields: sound", id="message-field"
        ),
    ],
)
def test_parse_campaign_invalid_names_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCampaign) as caught:
        parse_campaign(definition(**changes))
    assert caught.value.message.startswith(message)
    assert caught.value.code == "INVALID_CAMPAIGN"


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        pytest.param(
            {"api_properties": {"orderNo": "A-17"}, "user_properties": {"name": "민지"}, "user": {"id": "u1"}},
            ("민지님, 주문하신 상품이 출발했어요", "주문번호 A-17", "myapp://orders/A-17"),
            id="all-values",
        ),
        pytest.param(
            {"api_properties": {}, "user_properties": {}, "user": {"id": "u1"}},
            ("고객님, 주문하신 상품이 출발했어요", "주문번호 ", "myapp://orders/"),
            id="defaults-and-missing",
        ),
    ],
)
def test_campaign_render_liquid(context: dict[str, Any], expected: tuple[str, str, str]) -> None:
    assert parse_campaign(definition()).render(context) == expected


def test_campaign_render_runtime_error_raises_liquid_error() -> None:
    # Valid on the empty sample data used at apply time, failing on this recipient's data.
    title = "{% if api_properties.n %}{{ 10 | divided_by: api_properties.n }}{% endif %}"
    campaign = parse_campaign(definition(message={"title": title, "body": "b"}))
    with pytest.raises(LiquidError):
        campaign.render({"api_properties": {"n": 0}, "user_properties": {}, "user": {}})


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(DEMO_CAMPAIGN, id="demo"),
        pytest.param(definition(tags=["sale"], consentRule="SUBSCRIBED_OR_UNKNOWN", provider="sandbox"), id="custom"),
    ],
)
def test_campaign_to_json_round_trip(raw: dict[str, Any]) -> None:
    campaign = parse_campaign(raw)
    again = parse_campaign(campaign.to_json())
    assert again == campaign
    assert campaign.to_json()["message"]["title"] == raw["message"]["title"]


# -- templates compiled once per campaign: the fast paths answer as Liquid does ------------------------

_values = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=0, max_value=9), max_size=3),
)
_names = st.sampled_from(["name", "orderNo", "grade", "city"])


@settings(max_examples=300, deadline=None)
@given(
    scope=st.sampled_from(["api_properties", "user_properties", "user"]),
    name=_names,
    spaces=st.sampled_from(["", " ", "  "]),
    data=st.dictionaries(_names, _values, max_size=4),
    text=st.text(alphabet=st.characters(blacklist_characters="{}%"), max_size=20),
)
def test_fast_templates_render_as_liquid_does(
    scope: str, name: str, spaces: str, data: dict[str, Any], text: str
) -> None:
    context = {"api_properties": {}, "user_properties": {}, "user": {"id": "u-1", "deviceId": ""}}
    context[scope] = {**context[scope], **data}
    both = f"{{{{ {scope}.{name} }}}}{text}{{{{{spaces}user.id{spaces}}}}}{text}"
    for source in (f"{{{{{spaces}{scope}.{name}{spaces}}}}}", text, f"{text}{{{{ {scope}.{name} }}}}", both):
        expected = Template(source).render(**context)
        assert compile_template(source, field_name="body").render(**context) == expected, source


def test_fast_templates_are_chosen_only_for_their_shapes() -> None:
    assert compile_template("plain text, 주문 완료", field_name="body").render() == "plain text, 주문 완료"
    lookup = compile_template("{{ api_properties.orderNo }}", field_name="body")
    assert lookup.render(api_properties={"orderNo": 42}, user_properties={}, user={}) == "42"
    assert lookup.render(api_properties={"orderNo": 1.5}, user_properties={}, user={}) == "1.5"  # Liquid's own
    assert lookup.render(api_properties={}, user_properties={}, user={}) == ""
    filtered = compile_template("{{ api_properties.orderNo | default: 'none' }}", field_name="body")
    assert filtered.render(api_properties={}, user_properties={}, user={}) == "none"
    # Text and several lookups: read at their paths; a value of another kind is Liquid's to write.
    several = compile_template(
        "{{ user_properties.name }}님, 주문 {{ api_properties.orderNo }} 출발", field_name="body"
    )
    context = {"api_properties": {"orderNo": 7}, "user_properties": {"name": "민수"}, "user": {}}
    assert type(several).__name__ == "_Interpolation"
    assert several.render(**context) == "민수님, 주문 7 출발"
    context["api_properties"]["orderNo"] = [1, 2]
    assert several.render(**context) == Template(
        "{{ user_properties.name }}님, 주문 {{ api_properties.orderNo }} 출발"
    ).render(**context)
    # Other markup beside a lookup: Liquid's own template.
    assert type(compile_template("{{ a.b }} {% if x %}y{% endif %}", field_name="body")).__name__ != "_Interpolation"
    # An output past Liquid's bound is refused as Liquid refuses it.
    from magpie.domain.campaigns import RENDER_OUTPUT_LIMIT

    long = compile_template("{{ api_properties.a }}{{ api_properties.a }}", field_name="body")
    with pytest.raises(Exception, match="limit"):
        long.render(api_properties={"a": "x" * RENDER_OUTPUT_LIMIT}, user_properties={}, user={})
