"""Gateway health per environment, derived from what is already recorded: which provider or gateway
each channel goes through, when one last answered and last failed, outcomes by reason and report
code, the daily paid-message count against its limit, and messages sent by type per day.

Nothing is recorded for the report, and no read scans every delivery:

- sent, failed and UNKNOWN by reason come from the statistics' hourly counts (``campaign_counts``,
  by the time each outcome was recorded), per campaign and so per channel;
- Kakao and SMS details (report codes, message types, paid messages, the gateways' last answers with
  their exact time) come from the phone deliveries created in the range, read through their own
  partial index (``ix_deliveries_reports``), so push deliveries are never read for them;
- push's last success and last error take their exact time and provider from the latest deliveries
  (``_PUSH_WINDOW`` of them); older than that, the hour the statistics counted them in is shown;
- the paid count is ``paid_messages``, the counter the daily limit is enforced with (without a
  limit, the phone deliveries that went to a gateway other than the sandbox).

Secrets never leave this module: a provider's configuration is reported by its name and the
identifiers it is known by (an FCM project, an APNs team and topic, a webhook's host), never by
a key, a token or a full URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from magpie.domain.environment import effective
from magpie.store.db import Connection, Database

CHANNELS = ("push", "kakao", "sms")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
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
    # False: known only to the hour (the statistics' hourly counts), without the provider.
    exact: bool = True


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
    _outcomes(conn, db, health, env_id=env_id, since=since, until=until)

    days = _days(since, until, zone)
    sent_by_type: dict[str, dict[str, int]] = {day: {} for day in days}
    paid_derived: dict[str, int] = dict.fromkeys(days, 0)
    # Kakao and SMS deliveries, through the index of phone deliveries (push ones are never read):
    # report codes, types, paid messages and the gateways' last answers.
    rows = db.fetchall(
        conn,
        "SELECT channel, provider, kind, status, error_code, report_code, delivered_at IS NOT NULL, "
        f"(created_at / {HOUR_MS}) * {HOUR_MS}, COUNT(*), MAX(updated_at) FROM deliveries "
        f"WHERE {_PHONE} AND created_at >= ? AND created_at < ? GROUP BY 1, 2, 3, 4, 5, 6, 7, 8",
        (env_id, since, until),
    )
    for channel, provider, kind, status, error_code, report_code, delivered, hour, count, latest in rows:
        found = health.get(str(channel))
        if found is None:
            continue
        n, at, day = int(count), int(latest), local_day(int(hour), zone)
        if status == "SENT":
            found.last_success = _later(found.last_success, Answer(str(provider), at, report_code))
            if report_code is None:
                found.awaiting_report += n
            elif delivered:
                found.delivered += n
            else:
                found.undelivered[str(report_code)] = found.undelivered.get(str(report_code), 0) + n
            if day in sent_by_type:
                sent_by_type[day][str(kind)] = sent_by_type[day].get(str(kind), 0) + n
        elif status in ("FAILED", "UNKNOWN"):
            found.last_error = _later(found.last_error, Answer(str(provider), at, str(error_code or status)))
        else:
            found.in_flight += n
        if provider != "sandbox" and status in ("SENT", "UNKNOWN", "SENDING") and day in paid_derived:
            paid_derived[day] += n
    _push_answers(conn, db, health["push"], env_id=env_id, since=since, until=until)

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
                (env_id, min(days), max(days), today),
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


# Phone deliveries of one environment: the condition of the partial index ``ix_deliveries_reports``,
# with the environment compared without an index (``+``), so that the planner takes that index.
_PHONE = "channel <> 'push' AND +env_id = ?"
# How far back, in deliveries of every environment, the exact time of a push's last answer is looked
# for; past it, the hour the statistics counted it in is shown.
_PUSH_WINDOW = 100_000


def _outcomes(
    conn: Connection, db: Database, health: dict[str, ChannelHealth], *, env_id: int, since: int, until: int
) -> None:
    """Sent, failed and UNKNOWN per channel by reason, from the statistics' hourly counts (by the time
    each outcome was recorded), and the hour of each channel's last success and last error."""
    channel_of = {
        int(key): str(channel)
        for key, channel in db.fetchall(conn, "SELECT key, channel FROM campaigns WHERE env_id = ?", (env_id,))
    }
    rows = db.fetchall(
        conn,
        "SELECT campaign_key, metric, SUM(n), MAX(hour) FROM campaign_counts WHERE env_id = ? AND campaign_key <> 0 "
        "AND hour >= ? AND hour < ? GROUP BY campaign_key, metric",
        (env_id, since - since % HOUR_MS, until),
    )
    for key, metric, total, last_hour in rows:
        found = health.get(channel_of.get(int(key), "push"))
        outcome, _, reason = str(metric).partition(":")
        if found is None or outcome not in ("SENT", "FAILED", "UNKNOWN"):
            continue
        n, hour = int(total), int(last_hour)
        if outcome == "SENT":
            found.sent += n
            found.last_success = _later(found.last_success, Answer("", hour, None, exact=False))
        else:
            bucket = found.failed if outcome == "FAILED" else found.unknown
            bucket[reason or outcome] = bucket.get(reason or outcome, 0) + n
            found.last_error = _later(found.last_error, Answer("", hour, reason or outcome, exact=False))


class _PushAnswerRow(NamedTuple):
    provider: str
    updated_at: int
    error_code: str | None


def _push_answers(conn: Connection, db: Database, push: ChannelHealth, *, env_id: int, since: int, until: int) -> None:
    """The exact time and provider of push's last success and last error, among the latest deliveries."""
    top = db.scalar(conn, "SELECT MAX(id) FROM deliveries")
    floor = int(top) - _PUSH_WINDOW if top is not None else 0

    def latest(statuses: str, hourly: Answer) -> Answer:
        row = db.fetchone_as(
            conn,
            "SELECT provider, updated_at, error_code FROM deliveries WHERE id > ? AND +env_id = ? AND channel = 'push' "
            f"AND status IN ({statuses}) AND updated_at >= ? AND updated_at < ? ORDER BY id DESC LIMIT 1",
            (floor, env_id, since, until),
            _PushAnswerRow,
        )
        if row is None or int(row.updated_at) < hourly.at:
            return hourly
        code = None if hourly.code is None else str(row.error_code or hourly.code)
        return Answer(str(row.provider), int(row.updated_at), code)

    if push.last_success is not None:
        push.last_success = latest("'SENT'", push.last_success)
    if push.last_error is not None:
        push.last_error = latest("'FAILED', 'UNKNOWN'", push.last_error)


def _later(current: Answer | None, candidate: Answer) -> Answer:
    """The later answer; at the same time, the exact one (a delivery's, not an hour's)."""
    if current is None or candidate.at > current.at or (candidate.at == current.at and candidate.exact):
        return candidate
    return current


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
    count = db.scalar(
        conn,
        f"SELECT COUNT(*) FROM deliveries WHERE {_PHONE} AND created_at >= ? AND created_at < ? "
        "AND provider <> 'sandbox' AND status IN ('SENT', 'UNKNOWN', 'SENDING')",
        (env_id, int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)),
    )
    return int(count) if count is not None else 0
