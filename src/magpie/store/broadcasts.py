"""Broadcasts: occurrences of scheduled campaigns, the audience they plan, and their controls.

An occurrence plans its audience into ordinary dispatches and work items (``AcceptTrigger``), a page
of users at a time, and the dispatch workers deliver them as they deliver triggers. Guarantees
(docs/broadcasts.md):

- one occurrence per campaign and slot: ``UNIQUE (env_id, campaign_key, slot_ms)`` and
  ``INSERT ... ON CONFLICT DO NOTHING``, whatever the number of schedulers;
- one planner at a time: an occurrence is claimed with a lease, like a work item;
- each user at most once per occurrence: ``broadcast_recipients`` is keyed by (occurrence, user) and a
  page enqueues only the users its ``INSERT ... ON CONFLICT DO NOTHING`` took; the page's dispatch, its
  users and the planning cursor are written in one transaction.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, NamedTuple, TypeVar

import msgspec

from magpie.domain.campaigns import Campaign
from magpie.errors import Conflict, InvalidRequest, NotFound
from magpie.store.db import DATA_ERRORS, Connection, Database
from magpie.store.dispatches import AcceptTrigger
from magpie.store.reach import FREQUENCY_CAP, AudiencePage, Reach, Read, audience_page, grouped_reach, reach
from magpie.store.stats import count_outcome
from magpie.store.transaction import Tx, dumps
from magpie.store.writer import JobDefaults

_decode = msgspec.json.decode
_R = TypeVar("_R")
# A paused occurrence's waiting work items become available at this time, i.e. not until resumed.
PAUSED_UNTIL: Final = 2**62
# At most this many named users in a test send.
MAX_TEST_USERS: Final = 5
CANCELLED_REASON: Final = "BROADCAST_CANCELLED"
__all__ = ["FREQUENCY_CAP", "AudiencePage", "Reach", "Read", "audience_page", "grouped_reach", "reach"]


class OccurrenceState(StrEnum):
    SCHEDULED = "scheduled"
    PLANNING = "planning"
    SENDING = "sending"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class OccurrenceKind(StrEnum):
    SCHEDULED = "SCHEDULED"  # a slot of the campaign's schedule
    NOW = "NOW"  # "send now"
    TEST = "TEST"  # a test send to named users


class Control(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


FINAL: Final = (OccurrenceState.COMPLETED, OccurrenceState.CANCELLED, OccurrenceState.FAILED)


# -- occurrences ---------------------------------------------------------------------------------------------


_COLUMNS: Final = (
    "id, env_id, campaign_key, slot_ms, kind, state, channel, cursor, planned, unreachable, error, "
    "created_at, started_at, planned_at, finished_at"
)


@dataclass(frozen=True, slots=True)
class OccurrenceRow:
    id: int
    env_id: int
    campaign_key: int
    slot_ms: int
    kind: str
    state: str
    channel: str
    cursor: str | None
    planned: int
    unreachable: dict[str, int]
    error: str | None
    created_at: int
    started_at: int | None
    planned_at: int | None
    finished_at: int | None


class _StoredOccurrence(NamedTuple):
    """The columns of ``_COLUMNS``, as stored."""

    id: int
    env_id: int
    campaign_key: int
    slot_ms: int
    kind: str
    state: str
    channel: str
    cursor: str | None
    planned: int
    unreachable: str | None
    error: str | None
    created_at: int
    started_at: int | None
    planned_at: int | None
    finished_at: int | None


def _occurrence(row: _StoredOccurrence) -> OccurrenceRow:
    return OccurrenceRow(**{**row._asdict(), "unreachable": _decode(row.unreachable or "{}")})


class _Id(NamedTuple):
    id: int


class _UserId(NamedTuple):
    user_id: str


class _Count(NamedTuple):
    n: int


class _Lease(NamedTuple):
    state: str
    lease_owner: str | None


class _Progressed(NamedTuple):
    planned: int
    started_at: int | None


class _Unreachable(NamedTuple):
    unreachable: str


class _Waiting(NamedTuple):
    id: int
    dispatch_id: str


class _Outcomes(NamedTuple):
    outcome: str
    reason: str | None
    n: int


class _DispatchUsers(NamedTuple):
    env_id: int
    users: str


def _one(tx: Tx, sql: str, params: Sequence[Any], row_type: type[_R]) -> _R | None:
    return tx.db.fetchone_as(tx.conn, sql, params, row_type)


def _all(tx: Tx, sql: str, params: Sequence[Any], row_type: type[_R]) -> list[_R]:
    return tx.db.fetchall_as(tx.conn, sql, params, row_type)


class CreateOccurrence(JobDefaults):
    """Create the occurrence of a campaign's slot unless it exists: returns its id, or None when another
    scheduler (or an earlier run) created it first."""

    __slots__ = ("campaign_key", "channel", "env_id", "kind", "slot_ms")
    profile_keys = ()

    def __init__(self, *, env_id: int, campaign_key: int, slot_ms: int, channel: str, kind: OccurrenceKind) -> None:
        self.env_id = env_id
        self.campaign_key = campaign_key
        self.slot_ms = slot_ms
        self.channel = channel
        self.kind = kind

    def run(self, tx: Tx) -> int | None:
        row = _one(
            tx,
            "INSERT INTO broadcast_occurrences (env_id, campaign_key, slot_ms, kind, state, channel, planned, "
            "unreachable, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, '{}', ?, ?) "
            "ON CONFLICT (env_id, campaign_key, slot_ms) DO NOTHING RETURNING id",
            (
                self.env_id,
                self.campaign_key,
                self.slot_ms,
                self.kind.value,
                OccurrenceState.SCHEDULED.value,
                self.channel,
                tx.now_ms,
                tx.now_ms,
            ),
            _Id,
        )
        return None if row is None else int(row.id)


class ClaimOccurrence(JobDefaults):
    """Take the planning of the oldest due occurrence (or one whose planner's lease lapsed)."""

    __slots__ = ("lease_ms", "now_ms", "owner")
    profile_keys = ()

    def __init__(self, *, owner: str, now_ms: int, lease_ms: int) -> None:
        self.owner = owner
        self.now_ms = now_ms
        self.lease_ms = lease_ms

    def run(self, tx: Tx) -> OccurrenceRow | None:
        row = _one(
            tx,
            "UPDATE broadcast_occurrences SET state = ?, lease_owner = ?, lease_until = ?, "
            "started_at = COALESCE(started_at, ?), updated_at = ? WHERE id IN (SELECT id FROM broadcast_occurrences "
            "WHERE (state = ? AND slot_ms <= ?) OR (state = ? AND lease_until < ?) ORDER BY slot_ms, id LIMIT 1 "
            f"FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
            (
                OccurrenceState.PLANNING.value,
                self.owner,
                self.now_ms + self.lease_ms,
                self.now_ms,
                self.now_ms,
                OccurrenceState.SCHEDULED.value,
                self.now_ms,
                OccurrenceState.PLANNING.value,
                self.now_ms,
            ),
            _StoredOccurrence,
        )
        return None if row is None else _occurrence(row)


def _holds(tx: Tx, occurrence_id: int, owner: str) -> bool:
    row = _one(
        tx, "SELECT state, lease_owner FROM broadcast_occurrences WHERE id = ? FOR UPDATE", (occurrence_id,), _Lease
    )
    return row is not None and row.state == OccurrenceState.PLANNING.value and row.lease_owner == owner


def _enqueue(
    tx: Tx,
    *,
    occurrence_id: int,
    env_id: int,
    campaign_key: int,
    channel: str,
    users: list[str],
    rate_per_minute: int | None = None,
    dispatch_size: int | None = None,
) -> int:
    """Write ``users`` (those not yet planned by this occurrence) into dispatches of at most
    ``dispatch_size`` users (None: one) and their work items.

    With a rate, the users go in slices of ten seconds' worth, each work item available when the rate
    allows it counted from the occurrence's start, so that the workers are handed no more than the rate.
    """
    if not users:
        return 0
    # The (occurrence, user) key decides: only the users it takes are enqueued, whatever ran before.
    fresh = _take(tx, occurrence_id, list(dict.fromkeys(users)))
    if not fresh:
        return 0
    size = dispatch_size or len(fresh)
    if not rate_per_minute:
        for offset in range(0, len(fresh), size):
            _dispatch(
                tx,
                occurrence_id=occurrence_id,
                env_id=env_id,
                campaign_key=campaign_key,
                channel=channel,
                users=fresh[offset : offset + size],
            )
        return len(fresh)
    row = _one(tx, "SELECT planned, started_at FROM broadcast_occurrences WHERE id = ?", (occurrence_id,), _Progressed)
    assert row is not None
    before, start = int(row.planned), int(row.started_at or tx.now_ms)
    step = min(size, max(1, rate_per_minute // 6))
    for offset in range(0, len(fresh), step):
        due = start + (before + offset) * 60_000 // rate_per_minute
        _dispatch(
            tx,
            occurrence_id=occurrence_id,
            env_id=env_id,
            campaign_key=campaign_key,
            channel=channel,
            users=fresh[offset : offset + step],
            available_at=max(due, tx.now_ms),
        )
    return len(fresh)


def _take(tx: Tx, occurrence_id: int, users: list[str]) -> list[str]:
    """Record ``users`` as planned by the occurrence; returns those it had not planned yet.

    The ids travel as one JSON array. A page is planned once (its cursor moves with it), so the plain
    insert is tried first; only when a user is there already is the page inserted again, skipping those.
    """
    elements = "json_each(?)" if tx.db.is_sqlite else "json_array_elements_text(?::json)"
    insert = f"INSERT INTO broadcast_recipients (occurrence_id, user_id) SELECT ?, u.value FROM {elements} AS u"
    tx.execute("SAVEPOINT plan_page")
    try:
        tx.execute(insert, (occurrence_id, dumps(users)))
    except DATA_ERRORS:
        tx.execute("ROLLBACK TO SAVEPOINT plan_page")
        again = insert + " WHERE true ON CONFLICT DO NOTHING RETURNING user_id"
        taken = {r.user_id for r in _all(tx, again, (occurrence_id, dumps(users)), _UserId)}
        users = [u for u in users if u in taken]
    tx.execute("RELEASE SAVEPOINT plan_page")
    return users


def _dispatch(
    tx: Tx,
    *,
    occurrence_id: int,
    env_id: int,
    campaign_key: int,
    channel: str,
    users: list[str],
    available_at: int | None = None,
) -> None:
    fresh = users
    dispatch_id, _ = AcceptTrigger(
        key_hash=None,
        env_id=env_id,
        campaign_key=campaign_key,
        users=dumps([{"userId": u, "deviceId": None} for u in fresh]),
        requested=len(fresh),
        idempotency_key=None,
        channel=channel,
    ).run(tx)
    tx.execute(
        "INSERT INTO broadcast_dispatches (occurrence_id, dispatch_id, size) VALUES (?, ?, ?)",
        (occurrence_id, dispatch_id, len(fresh)),
    )
    if available_at is not None:
        tx.execute("UPDATE work_items SET available_at = ? WHERE dispatch_id = ?", (available_at, dispatch_id))


class PlanPage(JobDefaults):
    """Enqueue one page of reachable users and move the occurrence's cursor past the page, together.

    Returns how many users were enqueued, or None when this planner no longer holds the occurrence
    (paused, cancelled, or taken over after its lease lapsed): then nothing is written.
    """

    __slots__ = (
        "campaign_key",
        "channel",
        "dispatch_size",
        "env_id",
        "last",
        "lease_ms",
        "occurrence_id",
        "owner",
        "rate_per_minute",
        "unreachable",
        "users",
    )
    profile_keys = ()

    def __init__(
        self,
        *,
        occurrence_id: int,
        owner: str,
        env_id: int,
        campaign_key: int,
        channel: str,
        users: list[str],
        unreachable: dict[str, int],
        last: str | None,
        lease_ms: int,
        rate_per_minute: int | None = None,
        dispatch_size: int | None = None,
    ) -> None:
        self.rate_per_minute = rate_per_minute
        self.dispatch_size = dispatch_size
        self.occurrence_id = occurrence_id
        self.owner = owner
        self.env_id = env_id
        self.campaign_key = campaign_key
        self.channel = channel
        self.users = users
        self.unreachable = unreachable
        self.last = last
        self.lease_ms = lease_ms

    def run(self, tx: Tx) -> int | None:
        if not _holds(tx, self.occurrence_id, self.owner):
            return None
        enqueued = _enqueue(
            tx,
            occurrence_id=self.occurrence_id,
            env_id=self.env_id,
            campaign_key=self.campaign_key,
            channel=self.channel,
            users=self.users,
            rate_per_minute=self.rate_per_minute,
            dispatch_size=self.dispatch_size,
        )
        row = _one(
            tx, "SELECT unreachable FROM broadcast_occurrences WHERE id = ?", (self.occurrence_id,), _Unreachable
        )
        counts: dict[str, int] = _decode(row.unreachable) if row is not None else {}
        for reason, n in self.unreachable.items():
            counts[reason] = counts.get(reason, 0) + n
        tx.execute(
            "UPDATE broadcast_occurrences SET cursor = ?, planned = planned + ?, unreachable = ?, lease_until = ?, "
            "updated_at = ? WHERE id = ?",
            (self.last, enqueued, dumps(counts), tx.now_ms + self.lease_ms, tx.now_ms, self.occurrence_id),
        )
        return enqueued


class FinishPlanning(JobDefaults):
    """Planning is over: the occurrence is sending (or, with nobody planned, completed; with an error, failed)."""

    __slots__ = ("error", "occurrence_id", "owner")
    profile_keys = ()

    def __init__(self, *, occurrence_id: int, owner: str, error: str | None = None) -> None:
        self.occurrence_id = occurrence_id
        self.owner = owner
        self.error = error

    def run(self, tx: Tx) -> str | None:
        if not _holds(tx, self.occurrence_id, self.owner):
            return None
        row = _one(tx, "SELECT planned AS n FROM broadcast_occurrences WHERE id = ?", (self.occurrence_id,), _Count)
        planned = int(row.n) if row is not None else 0
        if self.error is not None:
            state = OccurrenceState.FAILED
        else:
            state = OccurrenceState.SENDING if planned else OccurrenceState.COMPLETED
        tx.execute(
            "UPDATE broadcast_occurrences SET state = ?, error = ?, lease_owner = NULL, lease_until = NULL, "
            "planned_at = ?, finished_at = ?, updated_at = ? WHERE id = ?",
            (
                state.value,
                self.error,
                tx.now_ms,
                None if state is OccurrenceState.SENDING else tx.now_ms,
                tx.now_ms,
                self.occurrence_id,
            ),
        )
        return state.value


class CompleteOccurrences(JobDefaults):
    """Sending occurrences whose work items are all done are completed; returns how many."""

    __slots__ = ()
    profile_keys = ()

    def run(self, tx: Tx) -> int:
        busy = {
            r.id
            for r in _all(
                tx,
                "SELECT DISTINCT b.occurrence_id FROM work_items w JOIN broadcast_dispatches b "
                "ON b.dispatch_id = w.dispatch_id WHERE w.done = 0",
                (),
                _Id,
            )
        }
        sending = _all(
            tx, "SELECT id FROM broadcast_occurrences WHERE state = ?", (OccurrenceState.SENDING.value,), _Id
        )
        done = [(OccurrenceState.COMPLETED.value, tx.now_ms, tx.now_ms, r.id) for r in sending if r.id not in busy]
        tx.executemany("UPDATE broadcast_occurrences SET state = ?, finished_at = ?, updated_at = ? WHERE id = ?", done)
        return len(done)


def _occurrence_for_update(tx: Tx, env_id: int, occurrence_id: int) -> OccurrenceRow:
    row = _one(
        tx,
        f"SELECT {_COLUMNS} FROM broadcast_occurrences WHERE id = ? AND env_id = ? FOR UPDATE",
        (occurrence_id, env_id),
        _StoredOccurrence,
    )
    if row is None:
        raise NotFound(f"no occurrence {occurrence_id} in this environment")
    return _occurrence(row)


class ControlOccurrence(JobDefaults):
    """Pause, resume or cancel an occurrence; returns its new state.

    Pausing stops planning and makes its waiting work items wait until resumed; cancelling ends it:
    its waiting work items are closed and their recipients end ``EXCLUDED`` (``BROADCAST_CANCELLED``).
    A batch a worker already holds is finished (at most one page of users per worker).
    """

    __slots__ = ("action", "env_id", "occurrence_id")
    profile_keys = ()

    def __init__(self, *, env_id: int, occurrence_id: int, action: Control) -> None:
        self.env_id = env_id
        self.occurrence_id = occurrence_id
        self.action = action

    def run(self, tx: Tx) -> str:
        occ = _occurrence_for_update(tx, self.env_id, self.occurrence_id)
        state = OccurrenceState(occ.state)
        if state in FINAL:
            raise Conflict(f"occurrence {occ.id} is {state.value}: it can no longer be {self.action.value}d")
        now = tx.now_ms
        waiting = (
            "SELECT w.id, w.dispatch_id FROM work_items w JOIN broadcast_dispatches b ON b.dispatch_id = w.dispatch_id "
            "WHERE b.occurrence_id = ? AND w.done = 0 AND (w.lease_until IS NULL OR w.lease_until < ?)"
        )
        if self.action is Control.PAUSE:
            if state is OccurrenceState.PAUSED:
                return state.value
            items = _all(tx, waiting, (occ.id, now), _Waiting)
            tx.executemany("UPDATE work_items SET available_at = ? WHERE id = ?", [(PAUSED_UNTIL, w.id) for w in items])
            new = OccurrenceState.PAUSED
        elif self.action is Control.RESUME:
            if state is not OccurrenceState.PAUSED:
                raise Conflict(f"occurrence {occ.id} is {state.value}, not paused")
            tx.execute(
                "UPDATE work_items SET available_at = ? WHERE available_at = ? AND done = 0 AND dispatch_id IN "
                "(SELECT dispatch_id FROM broadcast_dispatches WHERE occurrence_id = ?)",
                (now, PAUSED_UNTIL, occ.id),
            )
            # Planning that was cut short goes on from its cursor.
            new = OccurrenceState.SENDING if occ.planned_at is not None else OccurrenceState.SCHEDULED
        else:
            for item in _all(tx, waiting, (occ.id, now), _Waiting):
                tx.execute("UPDATE work_items SET done = 1, lease_owner = NULL WHERE id = ?", (item.id,))
                _cancel_open_recipients(tx, item.dispatch_id)
            new = OccurrenceState.CANCELLED
        tx.execute(
            "UPDATE broadcast_occurrences SET state = ?, lease_owner = NULL, lease_until = NULL, finished_at = ?, "
            "updated_at = ? WHERE id = ?",
            (new.value, now if new in FINAL else None, now, occ.id),
        )
        return new.value


def _cancel_open_recipients(tx: Tx, dispatch_id: str) -> None:
    """Each recipient of a cancelled batch not yet decided ends EXCLUDED, so that every one has an outcome."""
    if tx.fetchone("SELECT 1 FROM work_items WHERE dispatch_id = ? AND done = 0", (dispatch_id,)) is not None:
        return  # another item of the batch is in a worker's hands: it decides its recipients
    row = _one(tx, "SELECT env_id, users FROM dispatches WHERE id = ?", (dispatch_id,), _DispatchUsers)
    if row is None:
        return
    now = tx.now_ms
    tx.executemany(
        "INSERT INTO recipients (dispatch_id, idx, env_id, user_id, device_id, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [
            (dispatch_id, i, row.env_id, u.get("userId"), u.get("deviceId"), now)
            for i, u in enumerate(_decode(row.users))
        ],
    )
    tx.execute(
        "UPDATE deliveries SET status = 'FAILED', error_code = ?, updated_at = ? WHERE dispatch_id = ? "
        "AND status = 'PENDING'",
        (CANCELLED_REASON, tx.now_ms, dispatch_id),
    )
    closed = tx.fetchall(
        "UPDATE recipients SET outcome = 'EXCLUDED', reason = ?, updated_at = ? WHERE dispatch_id = ? "
        "AND outcome IS NULL RETURNING idx",
        (CANCELLED_REASON, tx.now_ms, dispatch_id),
    )
    count_outcome(tx, dispatch_id=dispatch_id, outcome="EXCLUDED", reason=CANCELLED_REASON, n=len(closed))
    tx.execute(
        "UPDATE dispatches SET status = 'COMPLETED', completed_at = ? WHERE id = ? AND completed_at IS NULL",
        (tx.now_ms, dispatch_id),
    )


class TestSend(JobDefaults):
    """Send a campaign now to at most five named users, as a test occurrence; returns its id.

    The users go through the same rules as any recipient (audience, consent, night, caps), so that
    the test shows what the broadcast would do to them.
    """

    __slots__ = ("campaign_key", "channel", "env_id", "user_ids")
    profile_keys = ()

    def __init__(self, *, env_id: int, campaign_key: int, channel: str, user_ids: list[str]) -> None:
        self.env_id = env_id
        self.campaign_key = campaign_key
        self.channel = channel
        self.user_ids = user_ids

    def prepare(self) -> None:
        if not 1 <= len(set(self.user_ids)) <= MAX_TEST_USERS:
            raise InvalidRequest(f"a test send names 1 to {MAX_TEST_USERS} users")

    def run(self, tx: Tx) -> int:
        slot = tx.now_ms
        while tx.fetchone(
            "SELECT 1 FROM broadcast_occurrences WHERE env_id = ? AND campaign_key = ? AND slot_ms = ?",
            (self.env_id, self.campaign_key, slot),
        ):
            slot += 1
        row = _one(
            tx,
            "INSERT INTO broadcast_occurrences (env_id, campaign_key, slot_ms, kind, state, channel, planned, "
            "unreachable, created_at, started_at, planned_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 0, '{}', ?, ?, ?, ?) RETURNING id",
            (
                self.env_id,
                self.campaign_key,
                slot,
                OccurrenceKind.TEST.value,
                OccurrenceState.SENDING.value,
                self.channel,
                tx.now_ms,
                tx.now_ms,
                tx.now_ms,
                tx.now_ms,
            ),
            _Id,
        )
        assert row is not None
        occurrence_id = int(row.id)
        planned = _enqueue(
            tx,
            occurrence_id=occurrence_id,
            env_id=self.env_id,
            campaign_key=self.campaign_key,
            channel=self.channel,
            users=self.user_ids,
        )
        tx.execute("UPDATE broadcast_occurrences SET planned = ? WHERE id = ?", (planned, occurrence_id))
        # Its work items carry the test mark the push payload shows (``delivery.hackle_payload``).
        tx.execute(
            "UPDATE work_items SET payload = ? WHERE dispatch_id IN "
            "(SELECT dispatch_id FROM broadcast_dispatches WHERE occurrence_id = ?)",
            (dumps({"test": True}), occurrence_id),
        )
        return occurrence_id


# -- reads ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """An occurrence and where its recipients stand, with the definitions of every other surface."""

    occurrence: OccurrenceRow
    planned: int
    sent: int
    failed: int
    excluded: int
    held: int
    unknown: int
    remaining: int
    excluded_by: dict[str, int]
    failed_by: dict[str, int]
    rate_per_minute: int  # recipients decided in the last minute
    eta_ms: int | None  # estimated finish at that rate


def occurrence_progress(conn: Connection, db: Database, *, env_id: int, occurrence_id: int, now_ms: int) -> Progress:
    row = db.fetchone_as(
        conn,
        f"SELECT {_COLUMNS} FROM broadcast_occurrences WHERE id = ? AND env_id = ?",
        (occurrence_id, env_id),
        _StoredOccurrence,
    )
    if row is None:
        raise NotFound(f"no occurrence {occurrence_id} in this environment")
    occ = _occurrence(row)
    counts = {"SENT": 0, "FAILED": 0, "EXCLUDED": 0, "UNKNOWN": 0}
    excluded_by: dict[str, int] = {}
    failed_by: dict[str, int] = {}
    for outcome, reason, n in db.fetchall_as(
        conn,
        "SELECT r.outcome, r.reason, COUNT(*) FROM recipients r JOIN broadcast_dispatches b "
        "ON b.dispatch_id = r.dispatch_id WHERE b.occurrence_id = ? AND r.outcome IS NOT NULL "
        "GROUP BY r.outcome, r.reason",
        (occ.id,),
        _Outcomes,
    ):
        counts[outcome] = counts.get(outcome, 0) + int(n)
        if outcome == "EXCLUDED":
            excluded_by[reason or "UNKNOWN"] = excluded_by.get(reason or "UNKNOWN", 0) + int(n)
        elif outcome == "FAILED":
            failed_by[reason or "UNKNOWN"] = failed_by.get(reason or "UNKNOWN", 0) + int(n)
    held_row = db.fetchone_as(
        conn,
        "SELECT COALESCE(SUM(b.size), 0) FROM broadcast_dispatches b JOIN dispatches d ON d.id = b.dispatch_id "
        "WHERE b.occurrence_id = ? AND d.status = 'SCHEDULED'",
        (occ.id,),
        _Count,
    )
    recent = db.fetchone_as(
        conn,
        "SELECT COUNT(*) FROM recipients r JOIN broadcast_dispatches b ON b.dispatch_id = r.dispatch_id "
        "WHERE b.occurrence_id = ? AND r.outcome IS NOT NULL AND r.updated_at >= ?",
        (occ.id, now_ms - 60_000),
        _Count,
    )
    decided = sum(counts.values())
    remaining = max(0, occ.planned - decided)
    rate = int(recent.n) if recent else 0
    eta = now_ms + remaining * 60_000 // rate if rate and remaining else None
    return Progress(
        occurrence=occ,
        planned=occ.planned,
        sent=counts["SENT"],
        failed=counts["FAILED"],
        excluded=counts["EXCLUDED"],
        held=min(remaining, int(held_row.n) if held_row else 0),
        unknown=counts["UNKNOWN"],
        remaining=remaining,
        excluded_by=excluded_by,
        failed_by=failed_by,
        rate_per_minute=rate,
        eta_ms=eta,
    )


def list_occurrences(
    conn: Connection, db: Database, *, env_id: int, campaign_key: int | None = None, limit: int = 100
) -> list[OccurrenceRow]:
    sql = f"SELECT {_COLUMNS} FROM broadcast_occurrences WHERE env_id = ?"
    params: list[Any] = [env_id]
    if campaign_key is not None:
        sql += " AND campaign_key = ?"
        params.append(campaign_key)
    rows = db.fetchall_as(conn, sql + " ORDER BY slot_ms DESC, id DESC LIMIT ?", (*params, limit), _StoredOccurrence)
    return [_occurrence(r) for r in rows]


@dataclass(frozen=True, slots=True)
class ScheduledCampaign:
    env_id: int
    timezone: str
    key: int
    definition: str
    updated_at: int
    last_slot: int | None  # the newest slot of the schedule with an occurrence


def scheduled_campaigns(conn: Connection, db: Database) -> list[ScheduledCampaign]:
    """ACTIVE campaigns of every environment whose definition carries a schedule."""
    return db.fetchall_as(
        conn,
        "SELECT c.env_id, e.timezone, c.key, c.definition, c.updated_at, "
        "(SELECT MAX(o.slot_ms) FROM broadcast_occurrences o WHERE o.env_id = c.env_id AND o.campaign_key = c.key "
        "AND o.kind = 'SCHEDULED') FROM campaigns c JOIN environments e ON e.id = c.env_id "
        "WHERE c.status = 'ACTIVE' AND c.definition LIKE ?",
        ('%"schedule":%',),
        ScheduledCampaign,
    )


def broadcast_warnings(
    read: Read,
    db: Database,
    *,
    env_id: int,
    campaign: Campaign,
    now_ms: int,
) -> list[str]:
    """What applying a scheduled campaign should warn of: an audience that reaches nobody now."""
    if campaign.schedule is None:
        return []
    found = reach(read, db, env_id=env_id, campaign=campaign, now_ms=now_ms)
    if found.reachable:
        return []
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(found.unreachable.items())) or "no user matches"
    return [
        f"campaign {campaign.key} reaches nobody on {found.channel} now ({found.audience} of {found.users} users in "
        f"its audience; {why}): its occurrences would complete with zero recipients"
    ]


# -- statistics per occurrence -------------------------------------------------------------------------------

STATISTICS_COLUMNS: Final = (
    "occurrence",
    "kind",
    "state",
    "channel",
    "slot",
    "started_at",
    "finished_at",
    "planned",
    "sent",
    "failed",
    "excluded",
    "held",
    "unknown",
    "remaining",
    "not_reachable",
    "excluded_by",
    "failed_by",
)


def occurrence_statistics(
    conn: Connection, db: Database, *, env_id: int, campaign_key: int, now_ms: int, limit: int = 100
) -> list[Progress]:
    """Where the recipients of each of a campaign's occurrences stand, newest first."""
    return [
        occurrence_progress(conn, db, env_id=env_id, occurrence_id=row.id, now_ms=now_ms)
        for row in list_occurrences(conn, db, env_id=env_id, campaign_key=campaign_key, limit=limit)
    ]


def _iso(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reasons(counts: Mapping[str, int]) -> str:
    return "; ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


def statistics_csv(rows: Sequence[Progress]) -> str:
    """Occurrence statistics as CSV: one line per occurrence, times in UTC (ISO 8601), reasons as
    ``REASON n; REASON n``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(STATISTICS_COLUMNS)
    for p in rows:
        occ = p.occurrence
        writer.writerow(
            (
                occ.id,
                occ.kind,
                occ.state,
                occ.channel,
                _iso(occ.slot_ms),
                _iso(occ.started_at),
                _iso(occ.finished_at),
                p.planned,
                p.sent,
                p.failed,
                p.excluded,
                p.held,
                p.unknown,
                p.remaining,
                _reasons(occ.unreachable),
                _reasons(p.excluded_by),
                _reasons(p.failed_by),
            )
        )
    return out.getvalue()
