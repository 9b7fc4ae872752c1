"""Korean marketing rules (정보통신망법 §50): the (광고) title, opt-out text, night window, frequency caps."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magpie.domain.compliance import (
    cap_exceeded,
    consent_allows,
    has_night_consent,
    longest_window_ms,
    marketing_body,
    marketing_title,
    night_release,
)

HOUR = 3_600_000
# 2026-11-26 00:00:00 UTC
MIDNIGHT_UTC = 1_795_651_200_000


@pytest.mark.parametrize(
    ("title", "sender", "expected"),
    [
        pytest.param("봄 세일", "magpie shop", "(광고) magpie shop 봄 세일", id="prefix-and-sender"),
        pytest.param("봄 세일", "", "(광고) 봄 세일", id="no-sender-configured"),
        pytest.param("(광고) 봄 세일", "magpie shop", "(광고) 봄 세일", id="already-prefixed-kept"),
        pytest.param("  (광고) 봄 세일", "magpie shop", "  (광고) 봄 세일", id="prefixed-after-spaces-kept"),
        pytest.param("magpie shop 봄 세일", "magpie shop", "(광고) magpie shop 봄 세일", id="sender-not-repeated"),
    ],
)
def test_marketing_title_prefix(title: str, sender: str, expected: str) -> None:
    assert marketing_title(title, sender=sender) == expected


@pytest.mark.parametrize(
    ("body", "opt_out", "expected"),
    [
        pytest.param("50% 할인", "수신거부: 설정", "50% 할인\n수신거부: 설정", id="appended-on-new-line"),
        pytest.param("50% 할인\n수신거부: 설정", "수신거부: 설정", "50% 할인\n수신거부: 설정", id="present-kept"),
        pytest.param("", "수신거부: 설정", "수신거부: 설정", id="empty-body-gets-opt-out-only"),
        pytest.param("50% 할인", "", "50% 할인", id="no-opt-out-configured"),
    ],
)
def test_marketing_body_opt_out(body: str, opt_out: str, expected: str) -> None:
    assert marketing_body(body, opt_out=opt_out) == expected


def push(**statuses: str) -> dict[str, Any]:
    return {"push": {p: {"status": s, "changedAt": 0, "updatedAt": 0} for p, s in statuses.items()}}


@pytest.mark.parametrize(
    ("crm", "purpose", "rule", "expected"),
    [
        pytest.param(push(marketing="SUBSCRIBED"), "MARKETING", "SUBSCRIBED_ONLY", True, id="marketing-subscribed"),
        pytest.param({}, "MARKETING", "SUBSCRIBED_ONLY", False, id="marketing-unknown-subscribed-only"),
        pytest.param({}, "MARKETING", "SUBSCRIBED_OR_UNKNOWN", True, id="marketing-unknown-or-unknown"),
        pytest.param(
            push(marketing="UNSUBSCRIBED"), "MARKETING", "SUBSCRIBED_OR_UNKNOWN", False, id="marketing-opted-out"
        ),
        pytest.param(
            {"sms": {"marketing": {"status": "SUBSCRIBED"}}},
            "MARKETING",
            "SUBSCRIBED_ONLY",
            False,
            id="sms-consent-is-not-push-consent",
        ),
        pytest.param(push(marketing="UNSUBSCRIBED"), "INFORMATION", "SUBSCRIBED_ONLY", True, id="information-allowed"),
        pytest.param(
            push(information="UNSUBSCRIBED"), "INFORMATION", "SUBSCRIBED_ONLY", False, id="information-opt-out"
        ),
    ],
)
def test_consent_allows_by_purpose(crm: dict[str, Any], purpose: str, rule: str, expected: bool) -> None:
    assert consent_allows(crm=crm, purpose=purpose, rule=rule) is expected


@pytest.mark.parametrize(
    ("crm", "expected"),
    [
        pytest.param(push(night="SUBSCRIBED"), True, id="subscribed"),
        pytest.param(push(night="UNSUBSCRIBED"), False, id="unsubscribed"),
        pytest.param({}, False, id="unknown"),
    ],
)
def test_has_night_consent_only_when_subscribed(crm: dict[str, Any], expected: bool) -> None:
    assert has_night_consent(crm) is expected


@pytest.mark.parametrize(
    ("now_ms", "timezone", "start", "end", "expected"),
    [
        # 14:00 UTC = 23:00 KST: released at 08:00 KST next day = 23:00 UTC.
        pytest.param(MIDNIGHT_UTC + 14 * HOUR, "Asia/Seoul", "21:00", "08:00", MIDNIGHT_UTC + 23 * HOUR, id="kst-2300"),
        pytest.param(MIDNIGHT_UTC + 3 * HOUR, "Asia/Seoul", "21:00", "08:00", None, id="kst-noon-outside"),
        pytest.param(MIDNIGHT_UTC + 2 * HOUR, "UTC", "01:00", "05:00", MIDNIGHT_UTC + 5 * HOUR, id="same-day-window"),
        pytest.param(MIDNIGHT_UTC + 5 * HOUR, "UTC", "01:00", "05:00", None, id="window-end-exclusive"),
        pytest.param(MIDNIGHT_UTC + 1 * HOUR, "UTC", "01:00", "05:00", MIDNIGHT_UTC + 5 * HOUR, id="start-inclusive"),
        pytest.param(MIDNIGHT_UTC + 1 * HOUR, "UTC", "01:00", "01:00", None, id="empty-window"),
        # 2026-03-08 05:00 UTC is 00:00 EST; at 02:00 local New York moves to EDT, so 08:00 EDT is 12:00 UTC.
        pytest.param(1_772_946_000_000, "America/New_York", "21:00", "08:00", 1_772_971_200_000, id="dst-night"),
    ],
)
def test_night_release_in_environment_zone(
    now_ms: int, timezone: str, start: str, end: str, expected: int | None
) -> None:
    assert night_release(now_ms=now_ms, timezone=timezone, start=start, end=end) == expected


# -- frequency caps -------------------------------------------------------------------------------


def expected_exceeded(caps: list[dict[str, Any]], tags: set[str], sends: list[tuple[int, set[str]]], now: int) -> bool:
    """docs/operations.md: at most ``limit`` marketing pushes per user per window, overall and per tag."""
    for cap in caps:
        tag = cap["tag"]
        if tag is not None and tag not in tags:
            continue  # a per-tag cap binds only campaigns carrying the tag
        window = cap["windowHours"] * HOUR
        counted = [at for at, sent_tags in sends if now - window < at <= now and (tag is None or tag in sent_tags)]
        if len(counted) + 1 > cap["limit"]:
            return True
    return False


tag_names = st.sampled_from(["sale", "news", "vip"])
cap_strategy = st.fixed_dictionaries(
    {"limit": st.integers(1, 4), "windowHours": st.integers(1, 30 * 24), "tag": st.none() | tag_names}
)


@settings(max_examples=400, deadline=None)
@given(
    caps=st.lists(cap_strategy, max_size=3),
    tags=st.sets(tag_names),
    ages=st.lists(st.tuples(st.integers(0, 40 * 24 * HOUR), st.sets(tag_names)), max_size=8),
)
def test_cap_exceeded_property_follows_spec(
    caps: list[dict[str, Any]], tags: set[str], ages: list[tuple[int, set[str]]]
) -> None:
    now = MIDNIGHT_UTC
    sends = [(now - age, sent_tags) for age, sent_tags in ages]
    assert cap_exceeded(caps=caps, campaign_tags=tags, sends=sends, now_ms=now) is expected_exceeded(
        caps, tags, sends, now
    )


@settings(max_examples=200, deadline=None)
@given(caps=st.lists(cap_strategy, min_size=1, max_size=3), gaps=st.lists(st.integers(0, 48 * HOUR), max_size=25))
def test_cap_exceeded_property_admitted_pushes_never_exceed_a_window(
    caps: list[dict[str, Any]], gaps: list[int]
) -> None:
    """Admitting pushes one by one while the cap allows never puts more than ``limit`` in any window."""
    admitted: list[tuple[int, set[str]]] = []
    now = MIDNIGHT_UTC
    for gap in gaps:
        now += gap
        if not cap_exceeded(caps=caps, campaign_tags={"sale"}, sends=admitted, now_ms=now):
            admitted.append((now, {"sale"}))
    for cap in caps:
        if cap["tag"] not in (None, "sale"):
            continue
        window = cap["windowHours"] * HOUR
        for at, _ in admitted:
            in_window = [other for other, _ in admitted if at - window < other <= at]
            assert len(in_window) <= cap["limit"]


@pytest.mark.parametrize(
    ("age_hours", "expected"),
    [
        pytest.param(23, True, id="inside-window-counts"),
        pytest.param(24, False, id="exactly-window-ago-expired"),
        pytest.param(25, False, id="older-expired"),
    ],
)
def test_cap_exceeded_window_edge(age_hours: int, expected: bool) -> None:
    caps = [{"limit": 1, "windowHours": 24, "tag": None}]
    sends = [(MIDNIGHT_UTC - age_hours * HOUR, ["news"])]
    assert cap_exceeded(caps=caps, campaign_tags=[], sends=sends, now_ms=MIDNIGHT_UTC) is expected


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        pytest.param([], 0, id="no-caps"),
        pytest.param([{"windowHours": 1.5}, {"windowHours": 24}], 24 * HOUR, id="longest"),
        pytest.param([{"windowHours": 0.5}], HOUR // 2, id="fractional-hours"),
    ],
)
def test_longest_window_ms_of_caps(caps: list[dict[str, Any]], expected: int) -> None:
    assert longest_window_ms(caps) == expected
