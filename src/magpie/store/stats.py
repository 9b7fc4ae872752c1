"""Campaign statistics: hourly counts kept by the writer, and the reads built on them.

Every fact that changes a campaign's numbers adds to ``campaign_counts`` in the transaction that
records it (acceptance, an outcome, an attributed click), so a statistics page reads at most one
row per hour and metric instead of counting recipients. Metrics:

======================  ====================================================================
``REQUESTED``           recipients named in accepted triggers, at acceptance time
``SENT``                recipients whose push a provider accepted, at outcome time
``FAILED:<reason>``     recipients that failed, with the provider's (or magpie's) reason
``EXCLUDED:<reason>``   recipients magpie excluded, with the reason
``UNKNOWN:<reason>``    Kakao and SMS recipients a gateway may have taken but would not confirm
``CLICK``               attributed clicks, at click time
``UNIQUE_CLICK``        deliveries clicked at least once, at their first click
``CONVERSION:<v>:<a>``  conversions of arm ``a`` (0: control group) of experiment version ``v``,
                        at the goal event's time; ``revenue`` sums their values
``EXPOSED:<v>:<a>``     recipients recorded in arm ``a`` of experiment version ``v``, at the time
                        they were recorded (the experiment report's exposures; no other figure)
======================  ====================================================================

``n`` is the count of each row; ``revenue`` is 0 except on ``CONVERSION`` rows.

Each fact except ``EXPOSED`` is also added under campaign key ``0`` (``ALL``; campaign keys are
positive), the environment's total, so an overview of every campaign reads one row per hour and
metric too.

Hours are UTC hours (epoch ms); a display in a whole-hour time zone groups them into its days.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from magpie.errors import CampaignNotFound
from magpie.store.db import Connection, Database
from magpie.store.transaction import Tx

ALL = 0  # the campaign key of the environment-wide rows
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def hour_of(ms: int) -> int:
    return ms - ms % HOUR_MS


CountKey = tuple[int, int, int, str]  # env_id, campaign_key, hour, metric
_PENDING = "campaign-counts"  # the transaction's memo entry for its count increments


def add_count(
    tx: Tx,
    *,
    env_id: int,
    campaign_key: int,
    at_ms: int,
    metric: str,
    n: int = 1,
    revenue: float = 0.0,
    environment: bool = True,
) -> None:
    """Add ``n`` (and ``revenue``) to one hourly count of the campaign and, unless ``environment`` is
    false, of the environment (rows made on first use).

    The increment is applied when the transaction commits, summed with the batch's others for the
    same row (see ``_apply_counts``).
    """
    if n <= 0:
        return
    pending: dict[CountKey, tuple[int, float]] | None = tx.memo.get(_PENDING)
    if pending is None:
        pending = tx.memo[_PENDING] = {}
        tx.before_commit.append(partial(_apply_counts, tx, pending))
    hour = hour_of(at_ms)
    keys = [(env_id, campaign_key, hour, metric)]
    if environment:
        keys.append((env_id, ALL, hour, metric))
    for key in keys:
        old_n, old_revenue = pending.get(key, (0, 0.0))
        pending[key] = (old_n + n, old_revenue + revenue)


def _apply_counts(tx: Tx, pending: dict[CountKey, tuple[int, float]]) -> None:
    """One upsert per row, in key order: concurrent batches (several processes on PostgreSQL) lock the
    rows they share in the same order, so they queue behind each other instead of deadlocking."""
    tx.executemany(
        "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n, revenue) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (env_id, campaign_key, hour, metric) DO UPDATE SET n = campaign_counts.n + excluded.n, "
        "revenue = campaign_counts.revenue + excluded.revenue",
        [(*key, n, revenue) for key, (n, revenue) in sorted(pending.items())],
    )


def outcome_metric(outcome: str, reason: str | None) -> str:
    return "SENT" if outcome == "SENT" else f"{outcome}:{reason or ''}"


CONVERSION = "CONVERSION"


def conversion_metric(*, version: str, arm: int) -> str:
    """The metric of the conversions of one arm of one experiment version."""
    return f"{CONVERSION}:{version}:{arm}"


EXPOSED = "EXPOSED"


def exposure_metric(*, version: str, arm: int) -> str:
    """The metric of the recipients recorded in one arm of one experiment version."""
    return f"{EXPOSED}:{version}:{arm}"


def parse_conversion_metric(metric: str) -> tuple[str, int] | None:
    """``(version, arm)`` of a conversion metric; None for any other metric."""
    return _parse_arm_metric(metric, CONVERSION)


def parse_exposure_metric(metric: str) -> tuple[str, int] | None:
    """``(version, arm)`` of an exposure metric; None for any other metric."""
    return _parse_arm_metric(metric, EXPOSED)


def _parse_arm_metric(metric: str, kind: str) -> tuple[str, int] | None:
    found, _, rest = metric.partition(":")
    if found != kind:
        return None
    version, _, arm = rest.rpartition(":")
    return version, int(arm)


def dispatch_campaign(tx: Tx, dispatch_id: str) -> tuple[int, int]:
    """``(env_id, campaign_key)`` of a dispatch, looked up once per transaction."""
    memo = ("dispatch-campaign", dispatch_id)
    found = tx.memo.get(memo)
    if found is None:
        row = tx.fetchone("SELECT env_id, campaign_key FROM dispatches WHERE id = ?", (dispatch_id,))
        assert row is not None, dispatch_id
        env_id, campaign_key = row
        found = tx.memo[memo] = (int(env_id), int(campaign_key))
    return found


def count_outcome(tx: Tx, *, dispatch_id: str, outcome: str, reason: str | None, n: int = 1) -> None:
    env_id, campaign_key = dispatch_campaign(tx, dispatch_id)
    add_count(
        tx, env_id=env_id, campaign_key=campaign_key, at_ms=tx.now_ms, metric=outcome_metric(outcome, reason), n=n
    )


# -- reads ---------------------------------------------------------------------------------------------


# Channels whose messages carry magpie's click tracking: CTR means something only there.
CLICK_CHANNELS = frozenset({"push"})


class Totals:
    """The numbers of one campaign (or of all campaigns) over a range, with one definition each.

    ``channel`` names the channel these numbers are of (None: several channels, or unknown). The
    figures every surface shows are defined here and nowhere else:

    - *pending* = requested - sent - failed - unknown - excluded (never below 0);
    - *sent rate* = sent / (sent + failed + unknown): of the recipients magpie tried to send to, the
      share the provider accepted (*sent* is acceptance, not delivery; docs/dashboard.md);
    - *CTR* = unique clicks / sent, over the channels that carry clicks (push) only;
    - *conversions* and *revenue* = attributed goal events and their values, of every arm (control
      group included) and experiment version; they are neither recipients nor outcomes, so they count
      in no other figure (docs/experiments.md).

    >>> t = Totals(channel="sms")
    >>> for metric, n in (("REQUESTED", 10), ("SENT", 6), ("FAILED:TIMEOUT", 1), ("UNKNOWN:GATEWAY_UNCONFIRMED", 3)):
    ...     t.add(metric, n)
    >>> t.add("CONVERSION:0123456789abcdef:1", 2, revenue=30.0)
    >>> t.sent_rate, t.pending, t.ctr, t.excluded_total, t.conversions, t.revenue
    (0.6, 0, None, 0, 2, 30.0)
    """

    __slots__ = (
        "channel",
        "clickable_sent",
        "clicks",
        "conversions",
        "excluded",
        "failed",
        "requested",
        "revenue",
        "sent",
        "unique_clicks",
        "unknown",
        "unknown_reasons",
    )

    def __init__(self, *, channel: str | None = None) -> None:
        self.channel = channel
        self.requested = self.sent = self.clicks = self.unique_clicks = self.unknown = 0
        # Sent messages of channels with clicks (all of ``sent`` for a push campaign).
        self.clickable_sent = 0
        self.conversions = 0
        self.revenue = 0.0
        self.failed: dict[str, int] = {}
        self.excluded: dict[str, int] = {}
        self.unknown_reasons: dict[str, int] = {}

    def add(self, metric: str, n: int, revenue: float = 0.0) -> None:
        if metric == "REQUESTED":
            self.requested += n
        elif metric == "SENT":
            self.sent += n
            if self.channel in CLICK_CHANNELS:
                self.clickable_sent += n
        elif metric == "CLICK":
            self.clicks += n
        elif metric == "UNIQUE_CLICK":
            self.unique_clicks += n
        elif metric.startswith(f"{CONVERSION}:"):
            self.conversions += n
            self.revenue += revenue
        elif metric.startswith(f"{EXPOSED}:"):
            pass  # the experiment report's own figure (recipients counted by their outcomes already)
        else:
            outcome, _, reason = metric.partition(":")
            if outcome == "UNKNOWN":
                self.unknown += n
                bucket = self.unknown_reasons
            else:
                bucket = self.failed if outcome == "FAILED" else self.excluded
            bucket[reason or "UNKNOWN"] = bucket.get(reason or "UNKNOWN", 0) + n

    def merge(self, other: Totals) -> None:
        """Add another channel's (or campaign's) totals into these."""
        self.requested += other.requested
        self.sent += other.sent
        self.clicks += other.clicks
        self.unique_clicks += other.unique_clicks
        self.unknown += other.unknown
        self.clickable_sent += other.clickable_sent
        self.conversions += other.conversions
        self.revenue += other.revenue
        for mine, theirs in (
            (self.failed, other.failed),
            (self.excluded, other.excluded),
            (self.unknown_reasons, other.unknown_reasons),
        ):
            for reason, n in theirs.items():
                mine[reason] = mine.get(reason, 0) + n

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def excluded_total(self) -> int:
        return sum(self.excluded.values())

    @property
    def pending(self) -> int:
        return max(0, self.requested - self.sent - self.failed_total - self.excluded_total - self.unknown)

    @property
    def clicks_apply(self) -> bool:
        """Whether these numbers include messages that can be clicked (CTR means something)."""
        return self.channel in CLICK_CHANNELS or (self.channel is None and self.clickable_sent > 0)

    @property
    def ctr(self) -> float | None:
        """Unique clicks / sent, over the channels with clicks: never above 1; None where clicks do not
        exist (Kakao, SMS) or nothing that could be clicked was sent."""
        if not self.clicks_apply or not self.clickable_sent:
            return None
        return round(min(self.unique_clicks, self.clickable_sent) / self.clickable_sent, 4)

    @property
    def sent_rate(self) -> float | None:
        """Sent / (sent + failed + unknown); None before any recipient was tried."""
        tried = self.sent + self.failed_total + self.unknown
        return round(self.sent / tried, 4) if tried else None


def totals_of(rows: list[tuple[int, str, int]], *, since: int, until: int, channel: str | None = None) -> Totals:
    """Sum ``series`` rows whose hour starts in ``[since, until)`` (``since`` rounded down to its hour)."""
    result = Totals(channel=channel)
    start = hour_of(since)
    for hour, metric, n in rows:
        if start <= hour < until:
            result.add(metric, n)
    return result


def campaign_channel(
    conn: Connection, db: Database, *, env_id: int, campaign_key: int, channel: str | None = None
) -> str | None:
    """The channel of the environment's campaign with the key (of ``channel``, when given), whatever its
    status; None when there is no such campaign."""
    found = db.scalar(conn, "SELECT channel FROM campaigns WHERE env_id = ? AND key = ?", (env_id, campaign_key))
    if found is None or (channel is not None and found != channel):
        return None
    return str(found)


def totals(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    since: int,
    until: int,
    campaign_key: int | None = None,
    channel: str | None = None,
) -> Totals:
    """Sums over the hours that start in ``[since, until)`` (``since`` is rounded down to its hour), of one
    campaign or of the environment; ``channel`` is the campaign's (it decides whether CTR applies)."""
    rows = db.fetchall(
        conn,
        "SELECT metric, SUM(n), SUM(revenue) FROM campaign_counts WHERE env_id = ? AND campaign_key = ? "
        "AND hour >= ? AND hour < ? GROUP BY metric",
        (env_id, ALL if campaign_key is None else campaign_key, hour_of(since), until),
    )
    result = Totals(channel=channel)
    for metric, n, revenue in rows:
        result.add(str(metric), int(n), float(revenue or 0.0))
    return result


def per_campaign(conn: Connection, db: Database, *, env_id: int, since: int, until: int) -> dict[int, Totals]:
    """Each campaign's totals over the range (with its channel), keyed by campaign key."""
    rows = db.fetchall(
        conn,
        "SELECT s.campaign_key, c.channel, s.metric, SUM(s.n), SUM(s.revenue) FROM campaign_counts s "
        "JOIN campaigns c ON c.env_id = s.env_id AND c.key = s.campaign_key "
        "WHERE s.env_id = ? AND s.hour >= ? AND s.hour < ? AND s.campaign_key <> 0 "
        "GROUP BY s.campaign_key, c.channel, s.metric",
        (env_id, hour_of(since), until),
    )
    result: dict[int, Totals] = {}
    for key, channel, metric, n, revenue in rows:
        found = result.get(int(key))
        if found is None:
            found = result[int(key)] = Totals(channel=str(channel))
        found.add(str(metric), int(n), float(revenue or 0.0))
    return result


def series_of(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    since: int,
    until: int,
    campaign_keys: list[int],
    metric: str | None = None,
) -> list[tuple[int, str, int]]:
    """``(hour, metric, n)`` rows over the range summed over some campaigns (those of one channel), in
    time order; of one ``metric`` only, when given."""
    if not campaign_keys:
        return []
    marks = ",".join("?" * len(campaign_keys))
    only = "" if metric is None else " AND metric = ?"
    rows = db.fetchall(
        conn,
        f"SELECT hour, metric, SUM(n) FROM campaign_counts WHERE env_id = ? AND campaign_key IN ({marks}) "
        f"AND hour >= ? AND hour < ?{only} GROUP BY hour, metric ORDER BY hour",
        (env_id, *campaign_keys, hour_of(since), until, *([] if metric is None else [metric])),
    )
    return [(int(h), str(m), int(n)) for h, m, n in rows]


def mixed_totals(
    rows: list[tuple[int, str, int]], *, clickable: list[tuple[int, str, int]], since: int, until: int
) -> Totals:
    """Totals of several channels from their summed ``rows``, with CTR over ``clickable`` (the rows of the
    channels with clicks) only."""
    result = totals_of(rows, since=since, until=until)
    result.clickable_sent = totals_of(clickable, since=since, until=until, channel="push").sent
    return result


def by_channel(per_campaign: dict[int, Totals]) -> dict[str, Totals]:
    """Campaigns' totals summed per channel."""
    result: dict[str, Totals] = {}
    for t in per_campaign.values():
        channel = t.channel or "push"
        result.setdefault(channel, Totals(channel=channel)).merge(t)
    return dict(sorted(result.items()))


def series(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    since: int,
    until: int,
    campaign_key: int | None = None,
) -> list[tuple[int, str, int]]:
    """``(hour, metric, n)`` rows over the range (of one campaign, or all), in time order, for charts."""
    rows = db.fetchall(
        conn,
        "SELECT hour, metric, n FROM campaign_counts WHERE env_id = ? AND campaign_key = ? AND hour >= ? AND hour < ? "
        "ORDER BY hour",
        (env_id, ALL if campaign_key is None else campaign_key, hour_of(since), until),
    )
    return [(int(h), str(m), int(n)) for h, m, n in rows]


class ArmCount(NamedTuple):
    """One hour of one arm of a campaign's experiment: its conversions (and revenue), or its exposures."""

    version: str
    arm: int
    hour: int
    n: int
    revenue: float


class _CountRow(NamedTuple):
    metric: str
    hour: int
    n: int
    revenue: float | None


def _arm_counts(conn: Connection, db: Database, *, env_id: int, campaign_key: int, kind: str) -> list[ArmCount]:
    result = []
    for row in db.fetchall_as(
        conn,
        "SELECT metric, hour, n, revenue FROM campaign_counts WHERE env_id = ? AND campaign_key = ? "
        "AND metric LIKE ? ORDER BY hour",
        (env_id, campaign_key, f"{kind}:%"),
        _CountRow,
    ):
        parsed = _parse_arm_metric(str(row.metric), kind)
        if parsed is not None:
            version, arm = parsed
            result.append(ArmCount(version, arm, int(row.hour), int(row.n), float(row.revenue or 0.0)))
    return result


def conversion_counts(conn: Connection, db: Database, *, env_id: int, campaign_key: int) -> list[ArmCount]:
    """The conversions of a campaign's experiment, in time order: one row per hour and arm, read through
    the table's primary key."""
    return _arm_counts(conn, db, env_id=env_id, campaign_key=campaign_key, kind=CONVERSION)


def exposure_counts(conn: Connection, db: Database, *, env_id: int, campaign_key: int) -> list[ArmCount]:
    """The recorded exposures of a campaign's experiment, in time order: one row per hour and arm."""
    return _arm_counts(conn, db, env_id=env_id, campaign_key=campaign_key, kind=EXPOSED)


@dataclass(frozen=True, slots=True)
class CampaignStats:
    """A campaign's numbers over a range: its ``Totals`` (each figure's one definition), with dispatches
    and, for Kakao and SMS, what the gateways reported."""

    campaign_key: int
    since: int
    until: int
    dispatches: int
    totals: Totals
    # Kakao and SMS: sent messages by type, and what the gateways confirmed (None for push).
    sent_by_type: dict[str, int] | None = None
    delivered: int = 0
    undelivered: int = 0

    @property
    def requested(self) -> int:
        return self.totals.requested

    @property
    def sent(self) -> int:
        return self.totals.sent

    @property
    def failures(self) -> dict[str, int]:
        """Failed recipients by reason."""
        return self.totals.failed

    @property
    def failed(self) -> int:
        return self.totals.failed_total

    @property
    def excluded(self) -> dict[str, int]:
        """Excluded recipients by reason."""
        return self.totals.excluded

    @property
    def excluded_total(self) -> int:
        return self.totals.excluded_total

    @property
    def pending(self) -> int:
        return self.totals.pending

    @property
    def unknown(self) -> int:
        """Recipients a gateway may have taken but would not confirm."""
        return self.totals.unknown

    @property
    def unique_clicks(self) -> int:
        return self.totals.unique_clicks

    @property
    def total_clicks(self) -> int:
        return self.totals.clicks

    @property
    def ctr(self) -> float | None:
        return self.totals.ctr

    @property
    def sent_rate(self) -> float | None:
        return self.totals.sent_rate

    @property
    def channel(self) -> str | None:
        return self.totals.channel


def campaign_stats(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    campaign_key: int,
    since: int,
    until: int,
    channel: str | None = None,
) -> CampaignStats:
    """Requested, sent, failed and excluded by reason, unique and total clicks over a range.

    Raises ``CampaignNotFound`` for a key no campaign of the environment has (of ``channel``, when
    given: each channel's endpoint sees its own campaigns).
    """
    found = campaign_channel(conn, db, env_id=env_id, campaign_key=campaign_key, channel=channel)
    if found is None:
        raise CampaignNotFound(channel=channel)
    t = totals(conn, db, env_id=env_id, since=since, until=until, campaign_key=campaign_key, channel=found)
    dispatches = db.scalar(
        conn,
        "SELECT COUNT(*) FROM dispatches WHERE env_id = ? AND campaign_key = ? AND created_at >= ? AND created_at < ?",
        (env_id, campaign_key, hour_of(since), until),
    )
    return CampaignStats(
        campaign_key=campaign_key,
        since=since,
        until=until,
        dispatches=int(dispatches) if dispatches is not None else 0,
        totals=t,
        **_report_counts(conn, db, env_id=env_id, campaign_key=campaign_key, since=hour_of(since), until=until),
    )


def _report_counts(
    conn: Connection, db: Database, *, env_id: int, campaign_key: int, since: int, until: int
) -> dict[str, Any]:
    """Kakao and SMS: sent messages by type, and how many the gateway confirmed delivered or not."""
    rows = db.fetchall(
        conn,
        "SELECT l.kind, l.delivered_at IS NOT NULL, l.report_code IS NOT NULL, COUNT(*) FROM deliveries l "
        "JOIN dispatches d ON d.id = l.dispatch_id WHERE d.env_id = ? AND d.campaign_key = ? AND d.created_at >= ? "
        "AND d.created_at < ? AND l.channel <> 'push' AND l.status = 'SENT' GROUP BY l.kind, 2, 3",
        (env_id, campaign_key, since, until),
    )
    if not rows:
        return {}
    by_type: dict[str, int] = {}
    delivered = undelivered = 0
    for kind, was_delivered, reported, count in rows:
        by_type[str(kind)] = by_type.get(str(kind), 0) + int(count)
        if was_delivered:
            delivered += int(count)
        elif reported:
            undelivered += int(count)
    return {"sent_by_type": by_type, "delivered": delivered, "undelivered": undelivered}
