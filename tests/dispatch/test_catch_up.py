"""The catch-up rule: which missed slots a scheduler creates after a time with no scheduler running."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from magpie.config import Settings
from magpie.dispatch.scheduler import due_slots
from magpie.domain.campaigns import DEMO_CAMPAIGN, parse_campaign
from magpie.store.broadcasts import ScheduledCampaign

SEOUL = ZoneInfo("Asia/Seoul")
HOUR = 3_600_000


def _ms(day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 12, day, hour, minute, tzinfo=SEOUL).timestamp() * 1000)


def _due(rule: str, *, now: int, applied: int, last: int | None = None, max_age_hours: float = 6) -> list[int]:
    campaign = parse_campaign({**DEMO_CAMPAIGN, "schedule": {"type": "cron", "cron": "0 * * * *"}})  # hourly
    row = ScheduledCampaign(env_id=1, timezone="Asia/Seoul", key=1, definition="{}", updated_at=applied, last_slot=last)
    settings = Settings(broadcast_catch_up=rule, broadcast_catch_up_max_age_seconds=max_age_hours * 3600)
    return due_slots(campaign, row=row, now_ms=now, settings=settings, on_time_ms=60_000)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        pytest.param("latest", [_ms(4, 12)], id="latest"),
        pytest.param("all", [_ms(4, 10), _ms(4, 11), _ms(4, 12)], id="all"),
        pytest.param("none", [], id="none"),
    ],
)
def test_missed_slots_follow_the_catch_up_rule(rule: str, expected: list[int]) -> None:
    # Down from 09:30 to 12:20: the 10:00, 11:00 and 12:00 slots were missed.
    assert _due(rule, now=_ms(4, 12, 20), applied=_ms(4, 9, 0), last=_ms(4, 9, 0)) == expected


def test_a_slot_on_time_is_created_whatever_the_rule() -> None:
    for rule in ("latest", "all", "none"):
        assert _due(rule, now=_ms(4, 12, 0) + 5_000, applied=_ms(4, 9, 0), last=_ms(4, 11)) == [_ms(4, 12)]


def test_slots_older_than_the_max_age_or_the_apply_are_skipped() -> None:
    now = _ms(4, 12, 20)
    assert _due("all", now=now, applied=_ms(3, 0), max_age_hours=2) == [_ms(4, 11), _ms(4, 12)]
    assert _due("all", now=now, applied=_ms(4, 11, 30)) == [_ms(4, 12)]
    assert _due("all", now=now, applied=_ms(4, 9), last=_ms(4, 12)) == []
