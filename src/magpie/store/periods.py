"""Periods and their comparison: a chosen range against the previous one of equal length, today
against yesterday, one campaign against another, each figure with its change.

A period is ``[since, until)`` in epoch milliseconds; figures come from ``stats.totals`` (the
hourly counts), so a comparison reads two sums and no recipient. Each figure keeps its one
definition from ``stats.Totals``; a change is absolute and, where the previous figure is not
zero, relative.

>>> a, b = Totals(), Totals()
>>> a.add("SENT", 120); b.add("SENT", 100)
>>> compare_totals(a, b)["sent"].percent
0.2
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from magpie.errors import InvalidRequest
from magpie.store.db import Connection, Database
from magpie.store.stats import HOUR_MS, Totals, campaign_channel, hour_of, per_campaign, totals

MAX_DAYS = 366
_FIRST_YEAR, _LAST_YEAR = 1970, 9998


@dataclass(frozen=True, slots=True)
class Change:
    """One figure now and before, and how it changed."""

    current: float
    previous: float

    @property
    def absolute(self) -> float:
        return round(self.current - self.previous, 4)

    @property
    def percent(self) -> float | None:
        """The relative change (0.2 is +20%); None when there was nothing before to compare with."""
        return round((self.current - self.previous) / self.previous, 4) if self.previous else None


# The figures a comparison shows, each read from ``Totals`` by its one definition.
FIGURES = ("requested", "sent", "failed", "unknown", "excluded", "unique_clicks", "clicks", "ctr")


_READ: dict[str, Callable[[Totals], float | None]] = {
    "requested": lambda t: t.requested,
    "sent": lambda t: t.sent,
    "failed": lambda t: t.failed_total,
    "unknown": lambda t: t.unknown,
    "excluded": lambda t: t.excluded_total,
    "unique_clicks": lambda t: t.unique_clicks,
    "clicks": lambda t: t.clicks,
    # A rate where clicks can exist: absent, not zero, without sends to divide by.
    "ctr": lambda t: t.ctr if t.sent else None,
}


def figure(t: Totals, name: str) -> float | None:
    """One of ``FIGURES`` of ``t``."""
    return _READ[name](t)


def compare_totals(current: Totals, previous: Totals) -> dict[str, Change | None]:
    """Each figure of ``current`` against ``previous`` (None where a figure is absent in either)."""
    result: dict[str, Change | None] = {}
    for name in FIGURES:
        now, before = figure(current, name), figure(previous, name)
        result[name] = None if now is None or before is None else Change(current=now, previous=before)
    return result


@dataclass(frozen=True, slots=True)
class Comparison:
    """A period's totals, the previous period's, and the change of each figure."""

    since: int
    until: int
    previous_since: int
    previous_until: int
    current: Totals
    previous: Totals
    changes: dict[str, Change | None]


def compare_periods(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    since: int,
    until: int,
    previous_since: int | None = None,
    campaign_key: int | None = None,
    channel: str | None = None,
) -> Comparison:
    """``[since, until)`` against the period of equal length before it, or the one starting at
    ``previous_since`` (today so far against yesterday until the same time); of one campaign, or of
    the environment's campaigns of ``channel`` (all of them when None)."""
    # Counts are hourly: the period starts at its first hour, and the previous one ends there, so
    # no hour is counted in both.
    since = hour_of(since)
    length = until - since
    if previous_since is None:
        # As many hourly counts before as the period holds (its last hour may have only begun).
        end = since
        start = since - -(-length // HOUR_MS) * HOUR_MS
    else:
        start, end = previous_since, previous_since + length
    current = _totals(conn, db, env_id=env_id, since=since, until=until, campaign_key=campaign_key, channel=channel)
    previous = _totals(conn, db, env_id=env_id, since=start, until=end, campaign_key=campaign_key, channel=channel)
    return Comparison(
        since=since,
        until=until,
        previous_since=start,
        previous_until=end,
        current=current,
        previous=previous,
        changes=compare_totals(current, previous),
    )


def _totals(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    since: int,
    until: int,
    campaign_key: int | None,
    channel: str | None,
) -> Totals:
    """The period's totals with the channel they are of, so that CTR counts the sends that can be clicked."""
    if campaign_key is not None:
        found = campaign_channel(conn, db, env_id=env_id, campaign_key=campaign_key)
        return totals(conn, db, env_id=env_id, since=since, until=until, campaign_key=campaign_key, channel=found)
    result = Totals(channel=channel)
    for t in per_campaign(conn, db, env_id=env_id, since=since, until=until).values():
        if channel is None or t.channel == channel:
            result.merge(t)
    return result


def midnight(ms: int, zone: ZoneInfo, days_back: int = 0) -> int:
    """The start of the local day of ``ms``, ``days_back`` days earlier."""
    day = datetime.fromtimestamp(ms / 1000, zone).date() - timedelta(days=days_back)
    return int(datetime.combine(day, datetime.min.time(), zone).timestamp() * 1000)


def today_vs_yesterday(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    timezone: str,
    now_ms: int,
    campaign_key: int | None = None,
    channel: str | None = None,
) -> Comparison:
    """Today so far against yesterday until the same time of day."""
    zone = ZoneInfo(timezone)
    today = midnight(now_ms, zone)
    return compare_periods(
        conn,
        db,
        env_id=env_id,
        since=today,
        until=now_ms + 1,
        previous_since=midnight(now_ms, zone, days_back=1),
        campaign_key=campaign_key,
        channel=channel,
    )


def parse_day(text: str, name: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a date (YYYY-MM-DD)") from None
    if not _FIRST_YEAR <= day.year <= _LAST_YEAR:
        raise InvalidRequest(f"{name} must be a date between {_FIRST_YEAR} and {_LAST_YEAR}")
    return day


def day_range(start: str, end: str, *, timezone: str) -> tuple[int, int]:
    """``[since, until)`` from two local dates, both included; a bad date or order is ``InvalidRequest``."""
    first, last = parse_day(start, "from"), parse_day(end, "to")
    if last < first:
        raise InvalidRequest("to must be on or after from")
    if (last - first).days >= MAX_DAYS:
        raise InvalidRequest(f"from and to may be at most {MAX_DAYS} days apart")
    zone = ZoneInfo(timezone)
    since = int(datetime.combine(first, datetime.min.time(), zone).timestamp() * 1000)
    until = int(datetime.combine(last + timedelta(days=1), datetime.min.time(), zone).timestamp() * 1000)
    return since, until


def recent_days(days: int, *, timezone: str, now_ms: int) -> tuple[int, int]:
    """The last ``days`` local days, today included."""
    zone = ZoneInfo(timezone)
    return midnight(now_ms, zone, days_back=days - 1), midnight(now_ms, zone, days_back=-1)
