"""Experiments in the store: the arm each recipient got, conversions attributed at event ingestion, and
the figures the statistics read (docs/experiments.md).

Attribution, in one place: an event whose key is a campaign's goal (and whose properties meet its
conditions) converts the profile's **last** exposure to that campaign whose time is at most the goal's
window before the event's time — a SENT recipient of a variant, or a control-group recipient from the
moment it was recorded EXCLUDED CONTROL_GROUP. A recipient converts at most once (the ``conversions``
primary key); later goal events of the same recipient change nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from magpie.domain import statistics
from magpie.domain.campaigns import Campaign, parse_campaign
from magpie.domain.events import Event
from magpie.domain.experiments import CONTROL_ARM, MAX_WINDOW_MS, Goal, parse_goal
from magpie.domain.identity import DEVICE, USER
from magpie.errors import InvalidCampaign
from magpie.store.db import Connection, Database
from magpie.store.transaction import Tx
from magpie.store.writer import JobDefaults

_decode = msgspec.json.decode
_CHUNK = 200


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
        tx.executemany(
            "INSERT INTO exposures (dispatch_id, idx, env_id, campaign_key, version, arm, user_key, exposed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (self.dispatch_id, idx, self.env_id, self.campaign_key, self.version, arm, user_key, self.now_ms)
                for idx, arm, user_key in self.rows
            ],
        )
        tx.executemany(
            "UPDATE recipients SET variant = ? WHERE dispatch_id = ? AND idx = ?",
            [(arm, self.dispatch_id, idx) for idx, arm, _ in self.rows],
        )
        return len(self.rows)


# -- attribution at ingestion ----------------------------------------------------------------------------


def _goals(tx: Tx, env_id: int) -> dict[str, list[tuple[int, Goal]]]:
    """The environment's campaign goals by event key (one indexed read per batch)."""
    memo_key = ("experiment-goals", env_id)
    cached: dict[str, list[tuple[int, Goal]]] | None = tx.memo.get(memo_key)
    if cached is not None:
        return cached
    goals: dict[str, list[tuple[int, Goal]]] = {}
    for key, definition in tx.fetchall(
        "SELECT key, definition FROM campaigns WHERE env_id = ? AND definition LIKE ?", (env_id, '%"goal":%')
    ):
        raw = _decode(definition).get("goal")
        try:
            goal = parse_goal(raw) if raw is not None else None
        except InvalidCampaign:
            continue
        if goal is not None:
            goals.setdefault(goal.event, []).append((int(key), goal))
    tx.memo[memo_key] = goals
    return goals


@dataclass(frozen=True, slots=True)
class _Exposure:
    dispatch_id: str
    idx: int
    campaign_key: int
    version: str
    arm: int
    user_key: str
    exposed_at: int


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
    """The users the devices are linked to, as this batch leaves them (the batch read their profiles)."""
    found: dict[str, str] = {}
    for device_id in sorted(device_ids):
        user = tx.profile(env_id, DEVICE, device_id).linked_user
        if user:
            found[device_id] = user
    return found


def attribute_conversions(tx: Tx, *, env_id: int, events: Sequence[Event]) -> int:
    """Attribute the goal events of a stored batch to exposures; returns how many conversions it made.

    Costs one read of the goals, and for a batch holding goal events one indexed read of the exposures
    of those events' profiles (``ix_exposures_user``, with their conversions) per 200 profiles, and one
    batched insert of the new conversions.
    """
    goals = _goals(tx, env_id)
    if not goals:
        return 0
    candidates = [e for e in events if e.key in goals and _user_keys(e)]
    if not candidates:
        return 0
    campaign_keys = sorted({key for e in candidates for key, _ in goals[e.key]})
    since = min(e.timestamp for e in candidates) - MAX_WINDOW_MS
    linked = _linked_users(tx, env_id, {e.device_id for e in candidates if e.user_id is None and e.device_id})
    keys_of = {e.insert_id: _user_keys(e, linked) for e in candidates}
    users = sorted({k for keys in keys_of.values() for k in keys})
    exposures: dict[tuple[str, int], list[_Exposure]] = {}
    converted: set[tuple[str, int]] = set()  # exposures with a conversion, stored or made by this batch
    ckeys = ",".join("?" * len(campaign_keys))
    for start in range(0, len(users), _CHUNK):
        chunk = users[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in tx.fetchall(
            "SELECT x.dispatch_id, x.idx, x.campaign_key, x.version, x.arm, x.user_key, x.exposed_at, "
            "c.idx IS NOT NULL FROM exposures x JOIN recipients r ON r.dispatch_id = x.dispatch_id AND r.idx = x.idx "
            "LEFT JOIN conversions c ON c.dispatch_id = x.dispatch_id AND c.idx = x.idx "
            f"WHERE x.env_id = ? AND x.user_key IN ({marks}) AND x.exposed_at >= ? AND x.campaign_key IN ({ckeys}) "
            "AND (x.arm = ? OR r.outcome = 'SENT')",
            (env_id, *chunk, since, *campaign_keys, CONTROL_ARM),
        ):
            exposure = _Exposure(str(row[0]), int(row[1]), int(row[2]), str(row[3]), int(row[4]), row[5], int(row[6]))
            if row[7]:
                converted.add((exposure.dispatch_id, exposure.idx))
            exposures.setdefault((exposure.user_key, exposure.campaign_key), []).append(exposure)
    if not exposures:
        return 0
    rows: list[tuple[Any, ...]] = []
    for event in sorted(candidates, key=lambda e: (e.timestamp, e.insert_id)):
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
            if properties is None:
                decoded = _decode(event.properties) if event.properties else {}
                properties = decoded if isinstance(decoded, dict) else {}
            if not goal.matches(properties):
                continue
            last = max(found, key=lambda x: (x.exposed_at, x.dispatch_id, x.idx))
            if (last.dispatch_id, last.idx) in converted:
                continue  # at most once per recipient: its first goal event converted it
            converted.add((last.dispatch_id, last.idx))
            rows.append(
                (
                    last.dispatch_id,
                    last.idx,
                    env_id,
                    campaign_key,
                    last.version,
                    last.arm,
                    event.insert_id,
                    goal.value_of(properties),
                    event.timestamp,
                )
            )
    # A conflict is a conversion another process stored meanwhile: the first one stays.
    tx.executemany(
        "INSERT INTO conversions (dispatch_id, idx, env_id, campaign_key, version, arm, insert_id, value, "
        "converted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        rows,
    )
    return len(rows)


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


def experiment_figures(conn: Connection, db: Database, *, env_id: int, campaign_key: int) -> list[VersionFigures]:
    """Every version of a campaign's experiment, newest first, with its arms' counts."""
    versions: dict[str, VersionFigures] = {}

    def arm(version: str, number: int) -> ArmFigures:
        return versions[version].arms.setdefault(number, ArmFigures(arm=number))

    for version, number, exposed, first, last in db.fetchall(
        conn,
        "SELECT x.version, x.arm, COUNT(*), MIN(x.exposed_at), MAX(x.exposed_at) FROM exposures x "
        "JOIN recipients r ON r.dispatch_id = x.dispatch_id AND r.idx = x.idx "
        "WHERE x.env_id = ? AND x.campaign_key = ? AND (x.arm = ? OR r.outcome = 'SENT') GROUP BY x.version, x.arm",
        (env_id, campaign_key, CONTROL_ARM),
    ):
        figures = versions.setdefault(version, VersionFigures(version=version, first_exposed=first, last_exposed=last))
        figures.first_exposed = min(figures.first_exposed, int(first))
        figures.last_exposed = max(figures.last_exposed, int(last))
        arm(version, int(number)).exposed = int(exposed)
    for version, number, clicks, unique in db.fetchall(
        conn,
        "SELECT x.version, x.arm, COUNT(*), COUNT(DISTINCT d.recipient_idx || ':' || d.dispatch_id) "
        "FROM push_clicks c JOIN deliveries d ON d.id = c.delivery_id "
        "JOIN exposures x ON x.dispatch_id = d.dispatch_id AND x.idx = d.recipient_idx "
        "WHERE c.env_id = ? AND c.campaign_key = ? AND c.attributed = 1 GROUP BY x.version, x.arm",
        (env_id, campaign_key),
    ):
        if version in versions:
            figures_arm = arm(version, int(number))
            figures_arm.clicks, figures_arm.unique_clicks = int(clicks), int(unique)
    for version, number, day, count, revenue in db.fetchall(
        conn,
        "SELECT version, arm, converted_at / 86400000, COUNT(*), SUM(value) FROM conversions "
        "WHERE env_id = ? AND campaign_key = ? GROUP BY version, arm, converted_at / 86400000 "
        "ORDER BY converted_at / 86400000",
        (env_id, campaign_key),
    ):
        if version not in versions:
            continue
        figures_arm = arm(version, int(number))
        figures_arm.conversions += int(count)
        figures_arm.revenue += float(revenue or 0.0)
        figures_arm.daily.append((int(day) * 86_400_000, int(count)))
    return sorted(versions.values(), key=lambda v: v.last_exposed, reverse=True)


def seen_event_keys(conn: Connection, db: Database, *, env_id: int, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` the environment has received an event for."""
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    marks = ",".join("?" * len(wanted))
    rows = db.fetchall(conn, f"SELECT key FROM event_types WHERE env_id = ? AND key IN ({marks})", (env_id, *wanted))
    return {str(r[0]) for r in rows}


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
    row = db.fetchone(
        conn,
        "SELECT version, COUNT(*) FROM exposures WHERE env_id = ? AND campaign_key = ? AND version <> ? "
        "GROUP BY version ORDER BY MAX(exposed_at) DESC LIMIT 1",
        (env_id, campaign.key, experiment.version),
    )
    if row is not None:
        warnings.append(
            f"the experiment changed after sends: version {experiment.version} starts now; the {int(row[1])} "
            f"recipients of version {row[0]} keep their own figures"
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
            uplift_interval = control.get("alwaysValid", {}).get("interval", ["", ""])
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
                    arm["interval"][0],
                    arm["interval"][1],
                    arm["revenue"],
                    control.get("difference", ""),
                    uplift_interval[0],
                    uplift_interval[1],
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
    row = db.fetchone(conn, "SELECT definition FROM campaigns WHERE env_id = ? AND key = ?", (env_id, key))
    if row is None:
        return None
    campaign = parse_campaign(_decode(row[0]))
    if campaign.experiment is None:
        return None
    report = experiment_report(conn, db, env_id=env_id, campaign=campaign)
    return {**report, "csv": report_csv(report)}
