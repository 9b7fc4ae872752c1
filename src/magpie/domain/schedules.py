"""Broadcast schedules: the ``schedule`` section of a campaign file, and the times it fires. No I/O.

A scheduled campaign is sent to its whole audience at each *slot* of its schedule (docs/broadcasts.md)::

    schedule:
      type: weekly            # once | daily | weekly | cron
      days: [MON, THU]        # weekly only
      time: "19:30"           # daily and weekly: local HH:MM
      start: "2026-12-01"     # optional: no slot before (local date or date-time)
      end: "2027-01-31"       # optional: no slot after (a date alone: through that whole day)
      timezone: Asia/Seoul    # optional: the environment's time zone when left out
      ratePerMinute: 6000     # optional: at most this many recipients handed to the workers per minute

``type: once`` takes ``at`` (a local date-time, ``2026-12-05T10:00``); ``type: cron`` takes ``cron``, a
five-field expression (``30 19 * * MON``). Daily and weekly schedules are cron expressions too, so that
every recurring slot comes from one library (croniter), in the time zone, across daylight-saving changes.

>>> s = parse_schedule({"type": "daily", "time": "10:00"})
>>> s.cron_expression
'0 10 * * *'
>>> from datetime import datetime, timezone
>>> start = int(datetime(2026, 12, 4, tzinfo=timezone.utc).timestamp() * 1000)
>>> datetime.fromtimestamp(next_slot(s, timezone="Asia/Seoul", after_ms=start) / 1000, timezone.utc).isoformat()
'2026-12-04T01:00:00+00:00'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import (  # type: ignore[import-untyped]
    CroniterBadCronError,
    CroniterBadDateError,
    CroniterError,
    croniter,
)

from magpie.errors import InvalidCampaign

_FIELDS: Final = {"type", "at", "time", "days", "cron", "start", "end", "timezone", "ratePerMinute"}
_HHMM: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
DAYS: Final = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
# A recurring schedule that fires less than once in this many years is taken for one that never fires.
HORIZON_YEARS: Final = 5


class ScheduleType(StrEnum):
    ONCE = "once"
    DAILY = "daily"
    WEEKLY = "weekly"
    CRON = "cron"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A campaign's schedule, as written; times are read in ``timezone`` or the environment's."""

    type: ScheduleType
    at: str | None = None
    time: str | None = None
    days: tuple[str, ...] = ()
    cron: str | None = None
    start: str | None = None
    end: str | None = None
    timezone: str | None = None
    rate_per_minute: int | None = None

    @property
    def cron_expression(self) -> str | None:
        """The recurring slots as a five-field cron expression (None: a one-time schedule)."""
        if self.type is ScheduleType.CRON:
            return self.cron
        if self.type is ScheduleType.ONCE:
            return None
        assert self.time is not None
        hour, minute = self.time.split(":")
        days = "*" if self.type is ScheduleType.DAILY else ",".join(self.days)
        return f"{int(minute)} {int(hour)} * * {days}"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type.value}
        for name in ("at", "time", "cron", "start", "end", "timezone"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        if self.days:
            doc["days"] = list(self.days)
        if self.rate_per_minute is not None:
            doc["ratePerMinute"] = self.rate_per_minute
        return doc


def _local(text: object, where: str, *, end_of_day: bool = False) -> str:
    """Check a local date or date-time; returned as written."""
    if isinstance(text, date) and not isinstance(text, datetime):
        text = text.isoformat()  # YAML reads 2026-12-01 as a date
    elif isinstance(text, datetime):
        text = text.isoformat()
    if not isinstance(text, str):
        raise InvalidCampaign(f"{where} must be a local date (2026-12-01) or date-time (2026-12-01T10:00)")
    try:
        _to_datetime(text, ZoneInfo("UTC"), end_of_day=end_of_day)
    except ValueError:
        raise InvalidCampaign(
            f"{where} must be a local date (2026-12-01) or date-time (2026-12-01T10:00), got {text!r}"
        ) from None
    return text


def _to_datetime(text: str, tz: ZoneInfo, *, end_of_day: bool = False) -> datetime:
    """A written date or date-time in ``tz`` (an offset written in it wins); a date alone starts its day,
    or with ``end_of_day`` ends it."""
    if "T" not in text and " " not in text:
        day = date.fromisoformat(text)
        moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time(0), tz)
        return moment - timedelta(milliseconds=1) if end_of_day else moment
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; an unknown name is an ``InvalidCampaign`` saying so."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidCampaign(f"unknown time zone {name!r}: use an IANA name such as Asia/Seoul") from None


def parse_schedule(raw: object) -> Schedule:
    """Validate a ``schedule`` section; every problem is an ``InvalidCampaign`` naming the field.

    What needs a clock or the environment (a time in the past, a time zone left out) is
    ``check_schedule``'s, at apply time.
    """
    if not isinstance(raw, Mapping):
        raise InvalidCampaign("schedule must be an object: {type: once|daily|weekly|cron, ...}")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise InvalidCampaign(f"unknown schedule fields: {', '.join(sorted(unknown))}")
    try:
        kind = ScheduleType(str(raw.get("type")))
    except ValueError:
        raise InvalidCampaign(
            f"schedule.type must be one of {', '.join(t.value for t in ScheduleType)}, got {raw.get('type')!r}"
        ) from None
    allowed = {
        ScheduleType.ONCE: {"at"},
        ScheduleType.DAILY: {"time"},
        ScheduleType.WEEKLY: {"time", "days"},
        ScheduleType.CRON: {"cron"},
    }[kind] | {"type", "start", "end", "timezone", "ratePerMinute"}
    extra = set(raw) - allowed
    if extra:
        raise InvalidCampaign(f"schedule.{sorted(extra)[0]} does not apply to a {kind.value} schedule")
    tz_name = raw.get("timezone")
    if tz_name is not None:
        if not isinstance(tz_name, str):
            raise InvalidCampaign("schedule.timezone must be an IANA time zone name such as Asia/Seoul")
        zone(tz_name)
    at = time_of_day = cron = None
    days: tuple[str, ...] = ()
    if kind is ScheduleType.ONCE:
        if "at" not in raw:
            raise InvalidCampaign("schedule.at is required for a once schedule: a local date-time, 2026-12-05T10:00")
        at = _local(raw["at"], "schedule.at")
    elif kind in (ScheduleType.DAILY, ScheduleType.WEEKLY):
        time_of_day = raw.get("time")
        if not isinstance(time_of_day, str) or not _HHMM.fullmatch(time_of_day):
            raise InvalidCampaign(f"schedule.time must be a local time HH:MM, got {time_of_day!r}")
        if kind is ScheduleType.WEEKLY:
            listed = raw.get("days")
            if not isinstance(listed, list) or not listed:
                raise InvalidCampaign(f"schedule.days must list days of the week: {', '.join(DAYS)}")
            named = {str(d).upper()[:3] for d in listed if isinstance(d, str)}
            if len(named) != len({str(d) for d in listed}) or not named <= set(DAYS):
                raise InvalidCampaign(f"schedule.days must list days of the week: {', '.join(DAYS)}, got {listed!r}")
            days = tuple(d for d in DAYS if d in named)
    else:
        cron = raw.get("cron")
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise InvalidCampaign(f"schedule.cron must be a five-field cron expression (30 19 * * MON), got {cron!r}")
        try:
            croniter(cron)
        except (CroniterBadCronError, CroniterError, ValueError, KeyError) as exc:
            raise InvalidCampaign(f"schedule.cron {cron!r} is not a cron expression: {exc}") from None
    start = _local(raw["start"], "schedule.start") if raw.get("start") is not None else None
    end = _local(raw["end"], "schedule.end", end_of_day=True) if raw.get("end") is not None else None
    if start is not None and end is not None:
        utc = ZoneInfo("UTC")
        if _to_datetime(end, utc, end_of_day=True) < _to_datetime(start, utc):
            raise InvalidCampaign("schedule.end is before schedule.start")
    rate = raw.get("ratePerMinute")
    if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or not 1 <= rate <= 10_000_000):
        raise InvalidCampaign(f"schedule.ratePerMinute must be a whole number of messages per minute, got {rate!r}")
    return Schedule(
        type=kind,
        at=at,
        time=time_of_day,
        days=days,
        cron=cron,
        start=start,
        end=end,
        timezone=tz_name,
        rate_per_minute=rate,
    )


def _bounds(schedule: Schedule, tz: ZoneInfo) -> tuple[int | None, int | None]:
    start = _ms(_to_datetime(schedule.start, tz)) if schedule.start else None
    end = _ms(_to_datetime(schedule.end, tz, end_of_day=True)) if schedule.end else None
    return start, end


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def next_slot(schedule: Schedule, *, timezone: str, after_ms: int) -> int | None:
    """The first slot strictly after ``after_ms`` (epoch milliseconds), or None when none is left.

    ``timezone`` is the environment's; the schedule's own ``timezone`` wins over it.
    """
    tz = zone(schedule.timezone or timezone)
    start, end = _bounds(schedule, tz)
    if schedule.type is ScheduleType.ONCE:
        assert schedule.at is not None
        slot = _ms(_to_datetime(schedule.at, tz))
        inside = (start is None or slot >= start) and (end is None or slot <= end)
        return slot if slot > after_ms and inside else None
    expression = schedule.cron_expression
    assert expression is not None
    begin = max(after_ms, start - 1) if start is not None else after_ms
    origin = datetime.fromtimestamp(begin / 1000, tz)
    try:
        found = croniter(expression, origin, max_years_between_matches=HORIZON_YEARS).get_next(datetime)
    except CroniterBadDateError:
        return None
    slot = _ms(found)
    return slot if end is None or slot <= end else None


def slots_between(schedule: Schedule, *, timezone: str, after_ms: int, until_ms: int, limit: int) -> list[int]:
    """Slots in ``(after_ms, until_ms]``, oldest first, at most ``limit`` of the newest."""
    found: list[int] = []
    cursor = after_ms
    while True:
        slot = next_slot(schedule, timezone=timezone, after_ms=cursor)
        if slot is None or slot > until_ms:
            break
        found.append(slot)
        if len(found) > limit:
            found.pop(0)
        cursor = slot
    return found


def check_schedule(schedule: Schedule, *, timezone: str, now_ms: int) -> int:
    """Apply-time checks; returns the next slot. A one-time schedule in the past, an end already
    passed, or a recurring schedule that never fires again is an ``InvalidCampaign``."""
    zone(schedule.timezone or timezone)
    upcoming = next_slot(schedule, timezone=timezone, after_ms=now_ms)
    if upcoming is not None:
        return upcoming
    if schedule.type is ScheduleType.ONCE:
        raise InvalidCampaign(f"schedule.at {schedule.at} is in the past (or outside start/end): nothing would send")
    if schedule.end is not None and next_slot(schedule, timezone=timezone, after_ms=0) is not None:
        raise InvalidCampaign(f"schedule.end {schedule.end} has passed: the schedule would never fire again")
    raise InvalidCampaign(
        f"schedule {schedule.cron_expression!r} never fires (not once in {HORIZON_YEARS} years between start and end)"
    )


def check_broadcast(
    *, channel: str, provider: str, schedule: Schedule | None, settings: Mapping[str, Any], timezone: str, now_ms: int
) -> None:
    """Apply-time checks of a scheduled campaign in its environment: the schedule (``check_schedule``), and a
    provider configured for its channel, since a broadcast is sent with nobody there to see it fail."""
    if schedule is None:
        return
    check_schedule(schedule, timezone=timezone, now_ms=now_ms)
    configured = set(settings.get("providers") or {})
    if channel == "push" and provider == "push" and not configured & {"fcm", "apns"}:
        raise InvalidCampaign(
            "a scheduled push campaign needs a provider: the environment has no fcm or apns settings "
            "(or use provider: sandbox)"
        )
    if channel == "push" and provider == "webhook" and "webhook" not in configured:
        raise InvalidCampaign("a scheduled webhook campaign needs the environment's webhook settings")
    if channel in ("kakao", "sms") and provider == "gateway":
        gateway = settings.get(f"{channel}Gateway", "sandbox")
        if gateway != "sandbox" and gateway not in configured:
            raise InvalidCampaign(f"a scheduled {channel} campaign needs the environment's {gateway} settings")
