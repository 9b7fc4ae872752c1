"""Schedules: parsing, apply-time checks, and next-slot computation against croniter itself."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from magpie.domain.schedules import ScheduleType, check_broadcast, check_schedule, next_slot, parse_schedule
from magpie.errors import InvalidCampaign

SEOUL = ZoneInfo("Asia/Seoul")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


NOW = _ms(datetime(2026, 12, 4, 12, 0, tzinfo=SEOUL))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"type": "hourly"}, "schedule.type must be one of", id="unknown-type"),
        pytest.param({"type": "daily", "time": "25:00"}, "schedule.time must be a local time", id="bad-time"),
        pytest.param({"type": "weekly", "time": "10:00", "days": ["FUNDAY"]}, "schedule.days", id="bad-day"),
        pytest.param({"type": "cron", "cron": "61 * * * *"}, "is not a cron expression", id="bad-cron"),
        pytest.param({"type": "once"}, "schedule.at is required", id="once-without-at"),
        pytest.param({"type": "daily", "time": "10:00", "timezone": "Mars/Olympus"}, "unknown time zone", id="tz"),
        pytest.param({"type": "daily", "time": "10:00", "cron": "* * * * *"}, "does not apply", id="mixed"),
        pytest.param(
            {"type": "daily", "time": "10:00", "start": "2027-01-02", "end": "2027-01-01"}, "before", id="end-first"
        ),
    ],
)
def test_parse_schedule_rejects_bad_input_naming_the_field(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidCampaign, match=message):
        parse_schedule(raw)


def test_check_schedule_refuses_a_once_schedule_in_the_past() -> None:
    schedule = parse_schedule({"type": "once", "at": "2026-12-04T11:59"})
    with pytest.raises(InvalidCampaign, match="in the past"):
        check_schedule(schedule, timezone="Asia/Seoul", now_ms=NOW)
    later = parse_schedule({"type": "once", "at": "2026-12-04T12:01"})
    assert check_schedule(later, timezone="Asia/Seoul", now_ms=NOW) == NOW + 60_000


def test_check_schedule_refuses_a_cron_that_never_fires() -> None:
    schedule = parse_schedule({"type": "cron", "cron": "0 0 30 2 *"})  # 30 February
    with pytest.raises(InvalidCampaign, match="never fires"):
        check_schedule(schedule, timezone="Asia/Seoul", now_ms=NOW)


def test_check_schedule_refuses_an_end_that_has_passed() -> None:
    schedule = parse_schedule({"type": "daily", "time": "10:00", "start": "2026-11-01", "end": "2026-11-30"})
    with pytest.raises(InvalidCampaign, match="has passed"):
        check_schedule(schedule, timezone="Asia/Seoul", now_ms=NOW)


def test_check_schedule_refuses_an_unknown_environment_time_zone() -> None:
    with pytest.raises(InvalidCampaign, match="unknown time zone"):
        check_schedule(parse_schedule({"type": "daily", "time": "10:00"}), timezone="Nowhere/Else", now_ms=NOW)


def test_check_broadcast_refuses_a_push_schedule_without_a_provider() -> None:
    schedule = parse_schedule({"type": "daily", "time": "10:00"})
    ask = {"schedule": schedule, "timezone": "Asia/Seoul", "now_ms": NOW, "channel": "push"}
    with pytest.raises(InvalidCampaign, match="no fcm or apns"):
        check_broadcast(provider="push", settings={"providers": {}}, **ask)  # type: ignore[arg-type]
    check_broadcast(provider="sandbox", settings={"providers": {}}, **ask)  # type: ignore[arg-type]


def test_weekly_schedule_fires_on_its_days_in_the_time_zone() -> None:
    schedule = parse_schedule({"type": "weekly", "days": ["mon", "THU"], "time": "19:30"})
    assert schedule.type is ScheduleType.WEEKLY
    first = next_slot(schedule, timezone="Asia/Seoul", after_ms=NOW)  # Friday 2026-12-04
    assert first == _ms(datetime(2026, 12, 7, 19, 30, tzinfo=SEOUL))
    second = next_slot(schedule, timezone="Asia/Seoul", after_ms=first or 0)
    assert second == _ms(datetime(2026, 12, 10, 19, 30, tzinfo=SEOUL))


def test_start_and_end_bound_the_slots() -> None:
    schedule = parse_schedule({"type": "daily", "time": "10:00", "start": "2026-12-10", "end": "2026-12-11"})
    first = next_slot(schedule, timezone="Asia/Seoul", after_ms=NOW)
    assert first == _ms(datetime(2026, 12, 10, 10, 0, tzinfo=SEOUL))
    last = next_slot(schedule, timezone="Asia/Seoul", after_ms=first or 0)
    assert last == _ms(datetime(2026, 12, 11, 10, 0, tzinfo=SEOUL))
    assert next_slot(schedule, timezone="Asia/Seoul", after_ms=last or 0) is None


_FIELDS = st.tuples(
    st.sampled_from(["*", "0", "15", "*/5", "30,45"]),
    st.sampled_from(["*", "0", "9", "19", "*/6", "1-5"]),
    st.sampled_from(["*", "1", "15", "28"]),
    st.sampled_from(["*", "1", "6", "12"]),
    st.sampled_from(["*", "MON", "1-5", "0,6"]),
)


@settings(max_examples=60, deadline=None)
@given(
    fields=_FIELDS,
    zone=st.sampled_from(["Asia/Seoul", "America/New_York", "Europe/London", "UTC"]),
    start=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1)),
)
def test_next_slot_agrees_with_croniter(fields: tuple[str, ...], zone: str, start: datetime) -> None:
    expression = " ".join(fields)
    schedule = parse_schedule({"type": "cron", "cron": expression})
    after = _ms(start.replace(tzinfo=ZoneInfo("UTC")))
    expected = croniter(expression, datetime.fromtimestamp(after / 1000, ZoneInfo(zone))).get_next(datetime)
    found = next_slot(schedule, timezone=zone, after_ms=after)
    assert found == _ms(expected)
    assert found is not None and found > after
    assert found - after <= timedelta(days=366 * 5).total_seconds() * 1000
