"""Gateway health per environment, derived from what deliveries recorded: which provider or gateway
each channel goes through, when one last answered and last failed, outcomes by code, the daily
paid-message count against its limit, and messages sent by type per day.

Nothing here is recorded for the report: every figure comes from the ``deliveries`` rows the
dispatcher writes (status, provider, error and report codes, times) and from ``paid_messages``,
the counter the daily limit is enforced with. A delivery counts in the range its row was created in
(when it was prepared for sending); it is found through the dispatches accepted up to two days
before the range starts (night-time holds and retries end well within that), so the read follows
the dispatches' index instead of scanning every delivery of every environment.

Secrets never leave this module: a provider's configuration is reported by its name and the
identifiers it is known by (an FCM project, an APNs team and topic, a webhook's host), never by
a key, a token or a full URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from magpie.domain.environment import effective
from magpie.store.db import Connection, Database

CHANNELS = ("push", "kakao", "sms")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# How long before the range a dispatch may have been accepted and still have deliveries in it.
_LOOKBACK_MS = 2 * DAY_MS
# The identifiers a provider is known by, shown as they are; every other field may be a secret.
_PUBLIC = {"fcm": ("projectId",), "apns": ("teamId", "keyId", "topic"), "solapi": ("pfId",)}


@dataclass(frozen=True, slots=True)
class Configured:
    """A provider or gateway an environment's settings name, with its public identifiers only."""

    name: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    """The latest delivery a provider answered for (``code``: its error or report code, if any)."""

    provider: str
    at: int
    code: str | None = None


@dataclass(slots=True)
class ChannelHealth:
    """One channel over the range: where it goes, its last answers and its outcomes by code."""

    channel: str
    configured: list[Configured]
    last_success: Answer | None = None
    last_error: Answer | None = None
    sent: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # by error code
    unknown: dict[str, int] = field(default_factory=dict)  # by reason: taken or not, the gateway would not say
    delivered: int = 0  # confirmed by the gateway's report
    undelivered: dict[str, int] = field(default_factory=dict)  # by report code
    awaiting_report: int = 0  # sent, no report yet
    in_flight: int = 0  # being sent

    @property
    def unknown_total(self) -> int:
        return sum(self.unknown.values())

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def undelivered_total(self) -> int:
        return sum(self.undelivered.values())


@dataclass(frozen=True, slots=True)
class DayUse:
    """One local day: paid messages (against the limit) and messages sent by type."""

    day: str
    paid: int
    sent_by_type: dict[str, int]


@dataclass(frozen=True, slots=True)
class GatewayReport:
    since: int
    until: int
    timezone: str
    channels: list[ChannelHealth]
    paid_limit: int  # 0: no limit
    today: str
    paid_today: int
    days: list[DayUse]
    # Where the paid counts come from: the counter the limit is enforced with, or (no limit set)
    # the deliveries that went to a paying gateway.
    paid_source: str

    @property
    def sent_by_type(self) -> dict[str, int]:
        """Messages sent by type over the whole range."""
        total: dict[str, int] = {}
        for day in self.days:
            for kind, n in day.sent_by_type.items():
                total[kind] = total.get(kind, 0) + n
        return total


def configured(settings: Mapping[str, Any]) -> dict[str, list[Configured]]:
    """Per channel, what an environment's settings send it through (push: every provider set up;
    a push campaign picks sandbox, webhook, or FCM/APNs by the device's token)."""
    full = effective(settings)
    providers: Mapping[str, Any] = full.get("providers") or {}

    def describe(name: str) -> Configured:
        config: Mapping[str, Any] = providers.get(name) or {}
        details = {k: str(config[k]) for k in _PUBLIC.get(name, ()) if isinstance(config.get(k), str | int)}
        if name == "webhook" and isinstance(config.get("url"), str):
            details["host"] = urlsplit(config["url"]).hostname or ""
        if name in ("nhn", "solapi") and full.get("smsSender"):
            details["sender"] = str(full["smsSender"])
        return Configured(name=name, details=details)

    push = [Configured(name="sandbox")] + [describe(n) for n in ("fcm", "apns", "webhook") if n in providers]
    return {
        "push": push,
        "kakao": [describe(str(full.get("kakaoGateway") or "sandbox"))],
        "sms": [describe(str(full.get("smsGateway") or "sandbox"))],
    }


def local_day(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d")


def gateway_report(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    settings: Mapping[str, Any],
    timezone: str,
    since: int,
    until: int,
    now_ms: int,
) -> GatewayReport:
    """Gateway health of an environment over ``[since, until)`` (epoch ms; days in ``timezone``)."""
    zone = ZoneInfo(timezone)
    health = {
        channel: ChannelHealth(channel=channel, configured=found) for channel, found in configured(settings).items()
    }
    scope = (
        "FROM deliveries l WHERE l.dispatch_id IN (SELECT id FROM dispatches WHERE env_id = ? AND created_at >= ? "
        "AND created_at < ?) AND l.env_id = ? AND l.created_at >= ? AND l.created_at < ?"
    )
    params = (env_id, since - _LOOKBACK_MS, until, env_id, since, until)
    rows = db.fetchall(
        conn,
        "SELECT l.channel, l.provider, l.status, l.error_code, l.report_code, l.delivered_at IS NOT NULL, COUNT(*), "
        f"MAX(l.updated_at) {scope} GROUP BY l.channel, l.provider, l.status, l.error_code, l.report_code, 6",
        params,
    )
    for channel, provider, status, error_code, report_code, delivered, count, latest in rows:
        found = health.get(str(channel))
        if found is None:
            continue
        n, at = int(count), int(latest)
        if status == "SENT":
            found.sent += n
            found.last_success = _later(found.last_success, Answer(str(provider), at, report_code))
            if report_code is None:
                found.awaiting_report += n
            elif delivered:
                found.delivered += n
            else:
                found.undelivered[str(report_code)] = found.undelivered.get(str(report_code), 0) + n
        elif status in ("FAILED", "UNKNOWN"):
            bucket = found.failed if status == "FAILED" else found.unknown
            code = str(error_code or status)
            bucket[code] = bucket.get(code, 0) + n
            found.last_error = _later(found.last_error, Answer(str(provider), at, code))
        else:
            found.in_flight += n

    days = _days(since, until, zone)
    sent_by_type: dict[str, dict[str, int]] = {day: {} for day in days}
    paid_derived: dict[str, int] = dict.fromkeys(days, 0)
    hourly = db.fetchall(
        conn,
        f"SELECT l.kind, l.provider, l.status, (l.created_at / {HOUR_MS}) * {HOUR_MS}, COUNT(*) {scope} "
        "AND l.channel <> 'push' GROUP BY l.kind, l.provider, l.status, 4",
        params,
    )
    for kind, provider, status, hour, count in hourly:
        day = local_day(int(hour), zone)
        if day not in sent_by_type:
            continue
        if status == "SENT":
            per_type = sent_by_type[day]
            per_type[str(kind)] = per_type.get(str(kind), 0) + int(count)
        if provider != "sandbox" and status in ("SENT", "UNKNOWN", "SENDING"):
            paid_derived[day] += int(count)

    full = effective(settings)
    limit = int(full.get("paidMessagesDailyLimit") or 0)
    today = local_day(now_ms, zone)
    if limit:
        # The counter the limit is enforced with (kept only while a limit is set).
        counted = {
            str(day): int(n)
            for day, n in db.fetchall(
                conn,
                "SELECT day, count FROM paid_messages WHERE env_id = ? AND ((day >= ? AND day <= ?) OR day = ?)",
                (env_id, days[0], days[-1], today),
            )
        }
        paid = {day: counted.get(day, 0) for day in days}
        paid_today = counted.get(today, 0)
        source = "limit counter"
    else:
        paid = paid_derived
        paid_today = paid_derived[today] if today in paid_derived else _paid_on(conn, db, env_id, today, zone)
        source = "deliveries"
    return GatewayReport(
        since=since,
        until=until,
        timezone=timezone,
        channels=[health[c] for c in CHANNELS],
        paid_limit=limit,
        today=today,
        paid_today=paid_today,
        days=[DayUse(day=day, paid=paid[day], sent_by_type=sent_by_type[day]) for day in days],
        paid_source=source,
    )


def _later(current: Answer | None, candidate: Answer) -> Answer:
    return candidate if current is None or candidate.at > current.at else current


def _days(since: int, until: int, zone: ZoneInfo) -> list[str]:
    first = datetime.fromtimestamp(since / 1000, zone).date()
    last = datetime.fromtimestamp((until - 1) / 1000, zone).date()
    days: list[str] = []
    day: date = first
    while day <= last:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


def _paid_on(conn: Connection, db: Database, env_id: int, day: str, zone: ZoneInfo) -> int:
    """Messages that went to a paying gateway on one local day (no limit set: nothing counts them)."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), zone)
    since = int(start.timestamp() * 1000)
    until = int((start + timedelta(days=1)).timestamp() * 1000)
    row = db.fetchone(
        conn,
        "SELECT COUNT(*) FROM deliveries l WHERE l.dispatch_id IN (SELECT id FROM dispatches WHERE env_id = ? "
        "AND created_at >= ? AND created_at < ?) AND l.env_id = ? AND l.created_at >= ? AND l.created_at < ? "
        "AND l.channel <> 'push' AND l.provider <> 'sandbox' AND l.status IN ('SENT', 'UNKNOWN', 'SENDING')",
        (env_id, since - _LOOKBACK_MS, until, env_id, since, until),
    )
    return int(row[0]) if row else 0
