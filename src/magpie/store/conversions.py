"""Experiments in the store: the arm each recipient got, conversions attributed at event ingestion, and
the figures the statistics read (docs/experiments.md).

Attribution, in one place: an event whose key is a campaign's goal (and whose properties meet its
conditions) converts the profile's **last** exposure to that campaign whose time is at most the goal's
window before the event's time — a SENT recipient of a variant, or a control-group recipient from the
moment it was recorded EXCLUDED CONTROL_GROUP. A recipient converts at most once (the ``conversions``
primary key); later goal events of the same recipient change nothing.

Each conversion is also counted in the hourly campaign counts (``stats``: metric
``CONVERSION:<version>:<arm>`` in the hour of its goal event, its value added to the row's
``revenue``), in the same transaction; the experiment report reads its conversions from there.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import msgspec

from magpie.domain import statistics
from magpie.domain.campaigns import Campaign, parse_campaign
from magpie.domain.events import Event
from magpie.domain.experiments import CONTROL_ARM, Goal, parse_goal
from magpie.domain.identity import DEVICE, USER
from magpie.errors import InvalidCampaign
from magpie.store import stats
from magpie.store.db import Connection, Database
from magpie.store.transaction import Tx
from magpie.store.writer import JobDefaults

_decode = msgspec.json.decode
_CHUNK = 500


class RecordExposures(JobDefaults):
    """Record the arm of each decided recipient of an experiment campaign: ``rows`` of (idx, arm, user_key).

    Submitted after ``PrepareRecipients`` made the recipients' rows; safe to run again (a retried work item).
    """

    profile_keys = ()

    def __init__(
        self,
        *,
        env_id: int,
        dispatch_id: str,
        campaign_key: int,
        version: str,
        rows: Sequence[tuple[int, int, str]],
        now_ms: int,
    ) -> None:
        self.env_id = env_id
        self.dispatch_id = dispatch_id
        self.campaign_key = campaign_key
        self.version = version
        self.rows = list(rows)
        self.now_ms = now_ms

    def run(self, tx: Tx) -> int:
        # Only the recipients not recorded yet are counted (a retried work item records the same ones).
        recorded: set[int] = set()
        for start in range(0, len(self.rows), _CHUNK):
            chunk = [idx for idx, _, _ in self.rows[start : start + _CHUNK]]
            marks = ",".join("?" * len(chunk))
            recorded.update(
                row.idx
                for row in tx.db.fetchall_as(
                    tx.conn,
                    f"SELECT idx FROM exposures WHERE dispatch_id = ? AND idx IN ({marks})",
                    (self.dispatch_id, *chunk),
                    _Index,
                )
            )
        fresh = [(idx, arm, user_key) for idx, arm, user_key in self.rows if idx not in recorded]
        tx.executemany(
            "INSERT INTO exposures (dispatch_id, idx, env_id, campaign_key, version, arm, user_key, exposed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (self.dispatch_id, idx, self.env_id, self.campaign_key, self.version, arm, user_key, self.now_ms)
                for idx, arm, user_key in fresh
            ],
        )
        tx.executemany(
            "UPDATE recipients SET variant = ? WHERE dispatch_id = ? AND idx = ?",
            [(arm, self.dispatch_id, idx) for idx, arm, _ in self.rows],
        )
        per_arm: dict[int, int] = {}
        for _, arm, _ in fresh:
            per_arm[arm] = per_arm.get(arm, 0) + 1
        for arm, n in sorted(per_arm.items()):
            stats.add_count(
                tx,
                env_id=self.env_id,
                campaign_key=self.campaign_key,
                at_ms=self.now_ms,
                metric=stats.exposure_metric(version=self.version, arm=arm),
                n=n,
                environment=False,
            )
        return len(self.rows)


class _Index(NamedTuple):
    idx: int


# -- attribution at ingestion ----------------------------------------------------------------------------

_GOALS = "experiment-goals"  # the transaction's memo entry for an environment's goals
_PENDING = "conversion-candidates"  # ... for the goal events its jobs stored, attributed at commit


class _Definition(NamedTuple):
    key: int
    definition: str


class _Exposure(NamedTuple):
    """An exposure that may own a goal event, and whether it converted already."""

    dispatch_id: str
    idx: int
    campaign_key: int
    version: str
    arm: int
    user_key: str
    exposed_at: int
    converted: int  # 1 when a conversion of this recipient is stored


def _goals(tx: Tx, env_id: int) -> dict[str, list[tuple[int, Goal]]]:
    """The environment's campaign goals by event key: one read per transaction, decoded once."""
    memo_key = (_GOALS, env_id)
    cached: dict[str, list[tuple[int, Goal]]] | None = tx.memo.get(memo_key)
    if cached is not None:
        return cached
    goals: dict[str, list[tuple[int, Goal]]] = {}
    for row in tx.db.fetchall_as(
        tx.conn,
        "SELECT key, definition FROM campaigns WHERE env_id = ? AND definition LIKE ?",
        (env_id, '%"goal":%'),
        _Definition,
    ):
        raw = _decode(row.definition).get("goal")
        try:
            goal = parse_goal(raw) if raw is not None else None
        except InvalidCampaign:
            continue
        if goal is not None:
            goals.setdefault(goal.event, []).append((int(row.key), goal))
    tx.memo[memo_key] = goals
    return goals


def _user_keys(event: Event, linked: Mapping[str, str] | None = None) -> list[str]:
    """The recipient keys an event speaks for: its user, its device, and the user its device is linked to
    (for an event that carries a device alone)."""
    keys = []
    if event.user_id is not None:
        keys.append(f"{USER}:{event.user_id}")
    if event.device_id is not None:
        keys.append(f"{DEVICE}:{event.device_id}")
        if event.user_id is None and linked and event.device_id in linked:
            keys.append(f"{USER}:{linked[event.device_id]}")
    return keys


def _linked_users(tx: Tx, env_id: int, device_ids: set[str]) -> dict[str, str]:
    """The users the devices are linked to, as the transaction leaves them (it read their profiles)."""
    found: dict[str, str] = {}
    for device_id in sorted(device_ids):
        user = tx.profile(env_id, DEVICE, device_id).linked_user
        if user:
            found[device_id] = user
    return found


def attribute_conversions(tx: Tx, *, env_id: int, events: Sequence[Event]) -> int:
    """Hand the goal events of a stored batch to attribution, which runs once for the whole transaction
    when it commits (``_attribute``); returns how many of ``events`` are goal events.

    A job's events end up attributed only if the transaction commits, and a transaction's goal events
    are attributed together: one read of the goals per transaction, and one indexed read of the
    exposures for all its goal events instead of one per job. Events are stored with their profiles
    locked (the jobs' ``profile_keys``) until that commit, so two transactions never attribute the same
    user's goal events at once and each conversion is counted once.
    """
    goals = _goals(tx, env_id)
    if not goals:
        return 0
    candidates = [e for e in events if e.key in goals and (e.user_id is not None or e.device_id is not None)]
    if not candidates:
        return 0
    memo_key = (_PENDING, env_id)
    pending: list[Event] | None = tx.memo.get(memo_key)
    if pending is None:
        pending = tx.memo[memo_key] = []
        # First among the commit-time writes: the hourly counts it adds are applied after it.
        tx.before_commit.insert(0, partial(_attribute, tx, env_id, pending))
    pending.extend(candidates)
    return len(candidates)


def _exposures(
    tx: Tx, *, env_id: int, users: Sequence[str], campaign_keys: Sequence[int], since: int, until: int
) -> list[_Exposure]:
    """The exposures of ``users`` to the campaigns between ``since`` and ``until`` that can convert (a SENT
    recipient of a variant, or the control group), with whether each converted already: one read of
    ``ix_exposures_user`` (which covers the columns read) per ``_CHUNK`` users.

    A variant recipient not SENT is one that ``ix_recipients_unsent_variant`` holds (a partial index of
    those alone, kept small), so the check reads that index, not the recipients.
    """
    found: list[_Exposure] = []
    ckeys = ",".join("?" * len(campaign_keys))
    # SQLite would take the primary key, whose rows it must then read; PostgreSQL chooses the small index.
    unsent = " INDEXED BY ix_recipients_unsent_variant" if tx.db.is_sqlite else ""
    for start in range(0, len(users), _CHUNK):
        chunk = users[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        found.extend(
            tx.db.fetchall_as(
                tx.conn,
                "SELECT x.dispatch_id, x.idx, x.campaign_key, x.version, x.arm, x.user_key, x.exposed_at, "
                "CASE WHEN c.idx IS NULL THEN 0 ELSE 1 END FROM exposures x "
                "LEFT JOIN conversions c ON c.dispatch_id = x.dispatch_id AND c.idx = x.idx "
                f"WHERE x.env_id = ? AND x.user_key IN ({marks}) AND x.exposed_at >= ? AND x.exposed_at <= ? "
                f"AND x.campaign_key IN ({ckeys}) AND NOT EXISTS (SELECT 1 FROM recipients r{unsent} "
                "WHERE r.dispatch_id = x.dispatch_id AND r.idx = x.idx AND r.variant > 0 "
                "AND (r.outcome IS NULL OR r.outcome <> 'SENT'))",
                (env_id, *chunk, since, until, *campaign_keys),
                _Exposure,
            )
        )
    return found


def _attribute(tx: Tx, env_id: int, candidates: list[Event]) -> None:
    """Attribute a transaction's goal events to exposures and store the conversions.

    Costs one indexed read of the exposures of those events' profiles (with their conversions) per
    ``_CHUNK`` profiles, limited to the times that could own the events (from the earliest event less
    its goal's window to the latest event), one batched insert of the new conversions, and their hourly
    counts (summed with the transaction's other counts). An event's properties are decoded only when
    an exposure could own it.
    """
    goals = _goals(tx, env_id)
    event_keys = {e.key for e in candidates}
    campaign_keys = sorted({key for event_key in event_keys for key, _ in goals[event_key]})
    # Only exposures that could own one of these events: sent at most a goal's window before it, not after.
    window = {event_key: max(goal.window_ms for _, goal in goals[event_key]) for event_key in event_keys}
    since = min(e.timestamp - window[e.key] for e in candidates)
    until = max(e.timestamp for e in candidates)
    linked = _linked_users(tx, env_id, {e.device_id for e in candidates if e.user_id is None and e.device_id})
    keys_of = {e.insert_id: _user_keys(e, linked) for e in candidates}
    users = sorted({k for keys in keys_of.values() for k in keys})
    exposures: dict[tuple[str, int], list[_Exposure]] = {}
    converted: set[tuple[str, int]] = set()  # exposures with a conversion, stored or made here
    for exposure in _exposures(tx, env_id=env_id, users=users, campaign_keys=campaign_keys, since=since, until=until):
        if exposure.converted:
            converted.add((exposure.dispatch_id, exposure.idx))
        exposures.setdefault((exposure.user_key, exposure.campaign_key), []).append(exposure)
    if not exposures:
        return
    exposed = {user_key for user_key, _ in exposures}
    owned = [e for e in candidates if any(k in exposed for k in keys_of[e.insert_id])]
    rows: list[tuple[Any, ...]] = []
    for event in sorted(owned, key=lambda e: (e.timestamp, e.insert_id)):
        properties: dict[str, Any] | None = None
        for campaign_key, goal in goals[event.key]:
            found = [
                x
                for k in keys_of[event.insert_id]
                for x in exposures.get((k, campaign_key), ())
                if x.exposed_at <= event.timestamp <= x.exposed_at + goal.window_ms
            ]
            if not found:
                continue
            last = max(found, key=lambda x: (x.exposed_at, x.dispatch_id, x.idx))
            if (last.dispatch_id, last.idx) in converted:
                continue  # at most once per recipient: its first goal event converted it
            if properties is None:
                decoded = _decode(event.properties) if event.properties else {}
                properties = decoded if isinstance(decoded, dict) else {}
            if not goal.matches(properties):
                continue
            converted.add((last.dispatch_id, last.idx))
            value = goal.value_of(properties)
            rows.append(
                (
                    last.dispatch_id,
                    last.idx,
                    env_id,
                    campaign_key,
                    last.version,
                    last.arm,
                    event.insert_id,
                    value,
                    event.timestamp,
                )
            )
            stats.add_count(
                tx,
                env_id=env_id,
                campaign_key=campaign_key,
                at_ms=event.timestamp,
                metric=stats.conversion_metric(version=last.version, arm=last.arm),
                revenue=value or 0.0,
            )
    # A conflict is a conversion another process stored meanwhile: the first one stays.
    tx.executemany(
        "INSERT INTO conversions (dispatch_id, idx, env_id, campaign_key, version, arm, insert_id, value, "
        "converted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        rows,
    )


# -- reads -----------------------------------------------------------------------------------------------


@dataclass
class ArmFigures:
    """One arm of one experiment version: how many were exposed and what they did."""

    arm: int
    exposed: int = 0  # SENT for a variant; recorded CONTROL_GROUP for the control group
    clicks: int = 0
    unique_clicks: int = 0  # recipients with at least one attributed click
    conversions: int = 0
    revenue: float = 0.0
    daily: list[tuple[int, int]] = field(default_factory=list)  # (day start ms, conversions that day)


@dataclass
class VersionFigures:
    version: str
    first_exposed: int
    last_exposed: int
    arms: dict[int, ArmFigures] = field(default_factory=dict)


class _Unsent(NamedTuple):
    version: str
    arm: int
    n: int


class _Clicks(NamedTuple):
    version: str
    arm: int
    clicks: int
    unique: int


class _Time(NamedTuple):
    at: int | None


def experiment_figures(conn: Connection, db: Database, *, env_id: int, campaign_key: int) -> list[VersionFigures]:
    """Every version of a campaign's experiment, newest first, with its arms' counts.

    Bounded reads only, whatever the number of exposures: the hourly counts (exposures and conversions
    per arm), the first and last exposure of each arm (a seek each in ``ix_exposures_campaign``), the
    variant recipients not SENT (``ix_recipients_unsent_variant`` holds only those) and the attributed
    clicks.
    """
    versions: dict[str, VersionFigures] = {}

    def arm(version: str, number: int) -> ArmFigures:
        return versions[version].arms.setdefault(number, ArmFigures(arm=number))

    # Every recorded exposure per arm, from the hourly counts...
    exposed: dict[tuple[str, int], int] = {}
    for count in stats.exposure_counts(conn, db, env_id=env_id, campaign_key=campaign_key):
        exposed[(count.version, count.arm)] = exposed.get((count.version, count.arm), 0) + count.n
    for (version, number), n in exposed.items():
        # MIN and MAX in separate statements: SQLite seeks for a lone MIN or MAX, but scans for both at once.
        where = "FROM exposures WHERE env_id = ? AND campaign_key = ? AND version = ? AND arm = ?"
        params = (env_id, campaign_key, version, number)
        first = db.fetchone_as(conn, f"SELECT MIN(exposed_at) {where}", params, _Time)
        last = db.fetchone_as(conn, f"SELECT MAX(exposed_at) {where}", params, _Time)
        if first is None or last is None or first.at is None or last.at is None:
            continue
        figures = versions.setdefault(
            version, VersionFigures(version=version, first_exposed=int(first.at), last_exposed=int(last.at))
        )
        figures.first_exposed = min(figures.first_exposed, int(first.at))
        figures.last_exposed = max(figures.last_exposed, int(last.at))
        arm(version, number).exposed = n
    # ... less the variant recipients not SENT (failed, excluded or pending), from the partial index
    # ``ix_recipients_unsent_variant``, which holds only those: a variant's exposed are its SENT recipients.
    for unsent in db.fetchall_as(
        conn,
        # CROSS JOIN: SQLite reads the recipients (the small partial index) first, as PostgreSQL would choose to.
        "SELECT x.version, x.arm, COUNT(*) FROM recipients r CROSS JOIN exposures x "
        "WHERE r.variant > 0 AND (r.outcome IS NULL OR r.outcome <> 'SENT') AND x.dispatch_id = r.dispatch_id "
        "AND x.idx = r.idx AND x.env_id = ? AND x.campaign_key = ? AND x.arm <> ? GROUP BY x.version, x.arm",
        (env_id, campaign_key, CONTROL_ARM),
        _Unsent,
    ):
        if unsent.version in versions:
            arm(unsent.version, int(unsent.arm)).exposed -= int(unsent.n)
    for clicks in db.fetchall_as(
        conn,
        "SELECT x.version, x.arm, COUNT(*), COUNT(DISTINCT d.recipient_idx || ':' || d.dispatch_id) "
        "FROM push_clicks c JOIN deliveries d ON d.id = c.delivery_id "
        "JOIN exposures x ON x.dispatch_id = d.dispatch_id AND x.idx = d.recipient_idx "
        "WHERE c.env_id = ? AND c.campaign_key = ? AND c.attributed = 1 GROUP BY x.version, x.arm",
        (env_id, campaign_key),
        _Clicks,
    ):
        if clicks.version in versions:
            figures_arm = arm(clicks.version, int(clicks.arm))
            figures_arm.clicks, figures_arm.unique_clicks = int(clicks.clicks), int(clicks.unique)
    # Conversions from the hourly counts (one row per hour and arm), summed into days.
    for count in stats.conversion_counts(conn, db, env_id=env_id, campaign_key=campaign_key):
        if count.version not in versions:
            continue
        figures_arm = arm(count.version, count.arm)
        figures_arm.conversions += count.n
        figures_arm.revenue += count.revenue
        day = count.hour - count.hour % stats.DAY_MS
        last_day, last_n = figures_arm.daily.pop() if figures_arm.daily else (day, 0)
        if last_day != day:
            figures_arm.daily.append((last_day, last_n))
            last_n = 0
        figures_arm.daily.append((day, last_n + count.n))
    return sorted(versions.values(), key=lambda v: v.last_exposed, reverse=True)


class _Key(NamedTuple):
    key: str


class _DefinitionText(NamedTuple):
    definition: str


def seen_event_keys(conn: Connection, db: Database, *, env_id: int, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` the environment has received an event for."""
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    marks = ",".join("?" * len(wanted))
    rows = db.fetchall_as(
        conn, f"SELECT key FROM event_types WHERE env_id = ? AND key IN ({marks})", (env_id, *wanted), _Key
    )
    return {str(r.key) for r in rows}


def experiment_warnings(conn: Connection, db: Database, *, env_id: int, campaign: Campaign) -> list[str]:
    """What applying ``campaign`` means for its experiment: a goal no event has named yet, and a change of
    variants after sends (a new version whose figures are kept apart from the old one's)."""
    experiment = campaign.experiment
    if experiment is None:
        return []
    warnings: list[str] = []
    goal = experiment.goal
    if goal is not None and goal.event not in seen_event_keys(conn, db, env_id=env_id, keys=[goal.event]):
        warnings.append(
            f"goal.event '{goal.event}' has never been received in this environment: check the key "
            "(conversions count only events with exactly this key)"
        )
    # The latest other version with recorded recipients, from the hourly counts.
    recorded: dict[str, int] = {}
    latest: dict[str, int] = {}
    for count in stats.exposure_counts(conn, db, env_id=env_id, campaign_key=campaign.key):
        if count.version != experiment.version:
            recorded[count.version] = recorded.get(count.version, 0) + count.n
            latest[count.version] = max(latest.get(count.version, count.hour), count.hour)
    if recorded:
        version = max(recorded, key=lambda v: (latest[v], v))
        warnings.append(
            f"the experiment changed after sends: version {experiment.version} starts now; the {recorded[version]} "
            f"recipients of version {version} keep their own figures"
        )
    return warnings


# -- the report every surface shows ------------------------------------------------------------------------


def _interval(interval: statistics.Interval) -> list[float]:
    return [round(interval.low, 6), round(interval.high, 6)]


def _comparison(arm: ArmFigures, reference: ArmFigures) -> dict[str, Any]:
    result = statistics.compare(x1=arm.conversions, n1=arm.exposed, x2=reference.conversions, n2=reference.exposed)
    return {
        "difference": round(result.difference, 6),
        "interval": _interval(result.interval),
        "zTest": {"z": round(result.z_test.statistic, 4), "pValue": round(result.z_test.p_value, 6)},
        "alwaysValid": {
            "pValue": round(result.always_valid.p_value, 6),
            "interval": _interval(result.always_valid.interval),
        },
        "verdict": result.verdict,
    }


def _arm_report(arm: ArmFigures, name: str, first: ArmFigures | None, control: ArmFigures | None) -> dict[str, Any]:
    interval = statistics.wilson(successes=arm.conversions, trials=arm.exposed)
    running = 0
    cumulative = []
    for day, count in arm.daily:
        running += count
        cumulative.append([day, running])
    report: dict[str, Any] = {
        "arm": arm.arm,
        "name": name,
        "exposed": arm.exposed,
        "clicks": arm.clicks,
        "uniqueClicks": arm.unique_clicks,
        "uniqueCtr": round(statistics.rate(successes=arm.unique_clicks, trials=arm.exposed), 6),
        "conversions": arm.conversions,
        "conversionRate": round(statistics.rate(successes=arm.conversions, trials=arm.exposed), 6),
        "interval": _interval(interval),
        "revenue": round(arm.revenue, 6),
        "cumulativeConversions": cumulative,
    }
    if arm.arm != CONTROL_ARM and first is not None and first is not arm:
        report["vsFirst"] = _comparison(arm, first)
    if arm.arm != CONTROL_ARM and control is not None:
        report["vsControl"] = _comparison(arm, control)
    return report


def experiment_report(conn: Connection, db: Database, *, env_id: int, campaign: Campaign) -> dict[str, Any]:
    """A campaign's experiment figures and statistics, per version (current first) and per arm.

    Rates are of the exposed: SENT recipients of a variant, recorded recipients of the control group.
    ``vsFirst`` compares a variant with the first one, ``vsControl`` with the control group (the uplift);
    ``verdict`` comes from the always-valid test only (docs/experiments.md#statistics).
    """
    experiment = campaign.experiment
    names = dict(experiment.arms) if experiment is not None else {}
    versions = []
    for figures in experiment_figures(conn, db, env_id=env_id, campaign_key=campaign.key):
        current = experiment is not None and figures.version == experiment.version
        arms = [figures.arms[n] for n in sorted(figures.arms)]
        control = figures.arms.get(CONTROL_ARM)
        first = next((a for a in arms if a.arm != CONTROL_ARM), None)
        versions.append(
            {
                "version": figures.version,
                "current": current,
                "firstExposedAt": figures.first_exposed,
                "lastExposedAt": figures.last_exposed,
                "arms": [
                    _arm_report(a, (names.get(a.arm) if current else None) or _arm_name(a.arm), first, control)
                    for a in arms
                ],
            }
        )
    return {
        "campaignKey": campaign.key,
        "level": statistics.LEVEL,
        "version": experiment.version if experiment is not None else None,
        "goal": experiment.goal.to_json() if experiment is not None and experiment.goal is not None else None,
        "controlGroup": experiment.control_percent if experiment is not None else 0,
        "versions": versions,
    }


def _arm_name(arm: int) -> str:
    return "control" if arm == CONTROL_ARM else f"variant {arm}"


CSV_COLUMNS = (
    "version",
    "arm",
    "name",
    "exposed",
    "clicks",
    "uniqueClicks",
    "uniqueCtr",
    "conversions",
    "conversionRate",
    "rateLow",
    "rateHigh",
    "revenue",
    "upliftVsControl",
    "upliftLow",
    "upliftHigh",
    "alwaysValidPValueVsControl",
    "verdictVsControl",
    "differenceVsFirst",
    "pValueVsFirst",
    "alwaysValidPValueVsFirst",
    "verdictVsFirst",
)


def report_csv_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    """The report as CSV rows (a header, then one row per version and arm)."""
    rows: list[list[Any]] = [list(CSV_COLUMNS)]
    for version in report["versions"]:
        for arm in version["arms"]:
            control = arm.get("vsControl", {})
            first = arm.get("vsFirst", {})
            uplift_low, uplift_high = control.get("alwaysValid", {}).get("interval", ["", ""])
            low, high = arm["interval"]
            rows.append(
                [
                    version["version"],
                    arm["arm"],
                    arm["name"],
                    arm["exposed"],
                    arm["clicks"],
                    arm["uniqueClicks"],
                    arm["uniqueCtr"],
                    arm["conversions"],
                    arm["conversionRate"],
                    low,
                    high,
                    arm["revenue"],
                    control.get("difference", ""),
                    uplift_low,
                    uplift_high,
                    control.get("alwaysValid", {}).get("pValue", ""),
                    control.get("verdict", ""),
                    first.get("difference", ""),
                    first.get("zTest", {}).get("pValue", ""),
                    first.get("alwaysValid", {}).get("pValue", ""),
                    first.get("verdict", ""),
                ]
            )
    return rows


def report_csv(report: Mapping[str, Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(report_csv_rows(report))
    return out.getvalue()


def campaign_experiment(conn: Connection, db: Database, *, env_id: int, key: int) -> dict[str, Any] | None:
    """The experiment report of a campaign (with its CSV text, ``csv``), or None when it has no goal, control
    group or variants: what the campaign page shows."""
    row = db.fetchone_as(
        conn, "SELECT definition FROM campaigns WHERE env_id = ? AND key = ?", (env_id, key), _DefinitionText
    )
    if row is None:
        return None
    campaign = parse_campaign(_decode(row.definition))
    if campaign.experiment is None:
        return None
    report = experiment_report(conn, db, env_id=env_id, campaign=campaign)
    return {**report, "csv": report_csv(report)}
