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

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, Final

import msgspec

from magpie.domain import delivery
from magpie.domain.audience import Recipient, cohort_names
from magpie.domain.campaigns import Campaign
from magpie.domain.delivery import Exclude, NightRule
from magpie.errors import Conflict, InvalidRequest, NotFound
from magpie.store.db import Connection, Database
from magpie.store.dispatches import AcceptTrigger
from magpie.store.stats import count_outcome
from magpie.store.transaction import Tx, dumps
from magpie.store.writer import JobDefaults

_decode = msgspec.json.decode
# A paused occurrence's waiting work items become available at this time, i.e. not until resumed.
PAUSED_UNTIL: Final = 2**62
# At most this many named users in a test send.
MAX_TEST_USERS: Final = 5
CANCELLED_REASON: Final = "BROADCAST_CANCELLED"


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


# -- the audience, a page at a time ---------------------------------------------------------------------


@dataclass(slots=True)
class AudiencePage:
    """One keyset page of users: who is reachable on the campaign's channel, and why the rest are not."""

    reachable: list[str] = field(default_factory=list)
    unreachable: dict[str, int] = field(default_factory=dict)  # reason -> users (in the audience)
    outside: int = 0  # users the audience's conditions leave out
    scanned: int = 0
    last: str | None = None  # the greatest user id read: where the next page starts


def audience_page(
    conn: Connection, *, db: Database, env_id: int, campaign: Campaign, after: str | None, limit: int, now_ms: int
) -> AudiencePage:
    """Users after ``after`` (by user id), sorted by the campaign's rules as they stand at ``now_ms``.

    Reachable: in the audience, consented for the channel and purpose, with a live push token (push) or a
    phone number (Kakao, SMS). The night window is not a reason: the worker holds or drops at send time.
    """
    # A user is a user profile, or a user id only devices were linked to (a token registered with a
    # userId): two ordered index scans, merged, and the page ends where the fuller one ended.
    start = after or ""
    named = [
        r[0]
        for r in db.fetchall(
            conn,
            "SELECT ident FROM profiles WHERE env_id = ? AND kind = 'u' AND ident > ? ORDER BY ident LIMIT ?",
            (env_id, start, limit),
        )
    ]
    linked_ids = [
        r[0]
        for r in db.fetchall(
            conn,
            "SELECT linked_user FROM profiles WHERE env_id = ? AND kind = 'd' AND linked_user > ? "
            "ORDER BY linked_user LIMIT ?",
            (env_id, start, limit),
        )
    ]
    ids = sorted({*named, *linked_ids})
    if not ids:
        return AudiencePage(scanned=0, last=after)
    full = [stream[-1] for stream in (named, linked_ids) if len(stream) == limit]
    last = min(full) if full else ids[-1]
    ids = [i for i in ids if i <= last][:limit]
    last = ids[-1]
    page = AudiencePage(scanned=len(ids), last=last)
    found = {
        r[0]: r
        for r in db.fetchall(
            conn,
            "SELECT ident, properties, crm, phone_enc IS NOT NULL FROM profiles WHERE env_id = ? AND kind = 'u' "
            "AND ident > ? AND ident <= ?",
            (env_id, start, last),
        )
    }
    rows = [found.get(i) or (i, "{}", "{}", False) for i in ids]
    devices: dict[str, list[str]] = {}
    with_token: set[str] = set()
    # The page's devices are those linked to a user id in the page's range: one range scan of the
    # linked-user index, with whether each has a live token, instead of lists of ids.
    for ident, linked, live in db.fetchall(
        conn,
        "SELECT d.ident, d.linked_user, EXISTS (SELECT 1 FROM push_tokens t WHERE t.env_id = d.env_id "
        "AND t.device_id = d.ident AND t.status = 'ACTIVE') FROM profiles d WHERE d.env_id = ? AND d.kind = 'd' "
        "AND d.linked_user > ? AND d.linked_user <= ?",
        (env_id, after or "", page.last),
    ):
        devices.setdefault(linked, []).append(ident)
        if live:
            with_token.add(linked)
    cohorts = sorted(cohort_names(campaign.audience))
    members: set[tuple[str, str]] = set()
    if cohorts:
        everyone = sorted({*ids, *(d for ds in devices.values() for d in ds)})
        cohort_marks = ",".join("?" * len(cohorts))
        for offset in range(0, len(everyone), 900):
            chunk = everyone[offset : offset + 900]
            members.update(
                (r[0], r[1])
                for r in db.fetchall(
                    conn,
                    f"SELECT cohort, member FROM cohort_members WHERE env_id = ? AND cohort IN ({cohort_marks}) "
                    f"AND member IN ({','.join('?' * len(chunk))})",
                    (env_id, *cohorts, *chunk),
                )
            )
    night = NightRule()
    for ident, props, crm, has_phone in rows:
        device_ids = tuple(devices.get(ident, ()))
        known = {ident, *device_ids}
        decision = delivery.decide(
            campaign=campaign,
            recipient=Recipient(user_id=ident, device_ids=device_ids, properties=_decode(props)),
            crm=_decode(crm),
            has_push_token=ident in with_token,
            has_phone=bool(has_phone),
            in_cohort=lambda name, known=known: any((name, i) in members for i in known),  # type: ignore[misc]
            now_ms=now_ms,
            night=night,
        )
        if isinstance(decision, Exclude) and decision.reason == delivery.NOT_IN_AUDIENCE:
            page.outside += 1
        elif isinstance(decision, Exclude) and decision.reason != delivery.NIGHT_TIME_DROPPED:
            page.unreachable[decision.reason] = page.unreachable.get(decision.reason, 0) + 1
        else:
            page.reachable.append(ident)
    return page


@dataclass(frozen=True, slots=True)
class Reach:
    """The reachable count of a campaign on its channel, and why the rest of its audience is not."""

    channel: str
    users: int  # every user of the environment
    audience: int  # users the conditions select
    reachable: int
    unreachable: dict[str, int]


def reach(
    read: Callable[[Callable[[Connection], AudiencePage]], AudiencePage],
    db: Database,
    *,
    env_id: int,
    campaign: Campaign,
    now_ms: int,
    page_size: int = 5000,
) -> Reach:
    """Count, page by page (memory stays bounded), who the campaign would reach now."""
    after: str | None = None
    users = audience = reachable = 0
    unreachable: dict[str, int] = {}
    while True:
        page = read(
            partial(audience_page, db=db, env_id=env_id, campaign=campaign, after=after, limit=page_size, now_ms=now_ms)
        )
        if not page.scanned:
            break
        users += page.scanned
        audience += page.scanned - page.outside
        reachable += len(page.reachable)
        for reason, n in page.unreachable.items():
            unreachable[reason] = unreachable.get(reason, 0) + n
        after = page.last
    return Reach(channel=campaign.channel, users=users, audience=audience, reachable=reachable, unreachable=unreachable)


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


def _occurrence(row: tuple[Any, ...]) -> OccurrenceRow:
    values = list(row)
    values[9] = _decode(values[9] or "{}")
    return OccurrenceRow(*values)


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
        row = tx.fetchone(
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
        )
        return None if row is None else int(row[0])


class ClaimOccurrence(JobDefaults):
    """Take the planning of the oldest due occurrence (or one whose planner's lease lapsed)."""

    __slots__ = ("lease_ms", "now_ms", "owner")
    profile_keys = ()

    def __init__(self, *, owner: str, now_ms: int, lease_ms: int) -> None:
        self.owner = owner
        self.now_ms = now_ms
        self.lease_ms = lease_ms

    def run(self, tx: Tx) -> OccurrenceRow | None:
        row = tx.fetchone(
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
        )
        return None if row is None else _occurrence(row)


def _holds(tx: Tx, occurrence_id: int, owner: str) -> bool:
    row = tx.fetchone("SELECT state, lease_owner FROM broadcast_occurrences WHERE id = ? FOR UPDATE", (occurrence_id,))
    return row is not None and row[0] == OccurrenceState.PLANNING.value and row[1] == owner


def _enqueue(
    tx: Tx,
    *,
    occurrence_id: int,
    env_id: int,
    campaign_key: int,
    channel: str,
    users: list[str],
    rate_per_minute: int | None = None,
) -> int:
    """Write ``users`` (those not yet planned by this occurrence) into dispatches and their work items.

    With a rate, the users go in slices of ten seconds' worth, each work item available when the rate
    allows it counted from the occurrence's start, so that the workers are handed no more than the rate.
    """
    if not users:
        return 0
    # The (occurrence, user) key decides: only the users it takes are enqueued, whatever ran before.
    taken: set[str] = set()
    unique = list(dict.fromkeys(users))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        taken.update(
            r[0]
            for r in tx.fetchall(
                "INSERT INTO broadcast_recipients (occurrence_id, user_id) VALUES "
                + ",".join(["(?, ?)"] * len(chunk))
                + " ON CONFLICT DO NOTHING RETURNING user_id",
                [v for u in chunk for v in (occurrence_id, u)],
            )
        )
    fresh = [u for u in unique if u in taken]
    if not fresh:
        return 0
    if not rate_per_minute:
        _dispatch(
            tx, occurrence_id=occurrence_id, env_id=env_id, campaign_key=campaign_key, channel=channel, users=fresh
        )
        return len(fresh)
    row = tx.fetchone("SELECT planned, started_at FROM broadcast_occurrences WHERE id = ?", (occurrence_id,))
    assert row is not None
    before, start = int(row[0]), int(row[1] or tx.now_ms)
    step = max(1, rate_per_minute // 6)
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
    ) -> None:
        self.rate_per_minute = rate_per_minute
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
        )
        row = tx.fetchone("SELECT unreachable FROM broadcast_occurrences WHERE id = ?", (self.occurrence_id,))
        counts: dict[str, int] = _decode(row[0]) if row is not None else {}
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
        row = tx.fetchone("SELECT planned FROM broadcast_occurrences WHERE id = ?", (self.occurrence_id,))
        planned = int(row[0]) if row is not None else 0
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
            r[0]
            for r in tx.fetchall(
                "SELECT DISTINCT b.occurrence_id FROM work_items w JOIN broadcast_dispatches b "
                "ON b.dispatch_id = w.dispatch_id WHERE w.done = 0"
            )
        }
        sending = tx.fetchall("SELECT id FROM broadcast_occurrences WHERE state = ?", (OccurrenceState.SENDING.value,))
        done = [(OccurrenceState.COMPLETED.value, tx.now_ms, tx.now_ms, r[0]) for r in sending if r[0] not in busy]
        tx.executemany("UPDATE broadcast_occurrences SET state = ?, finished_at = ?, updated_at = ? WHERE id = ?", done)
        return len(done)


def _occurrence_for_update(tx: Tx, env_id: int, occurrence_id: int) -> OccurrenceRow:
    row = tx.fetchone(
        f"SELECT {_COLUMNS} FROM broadcast_occurrences WHERE id = ? AND env_id = ? FOR UPDATE", (occurrence_id, env_id)
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
            items = tx.fetchall(waiting, (occ.id, now))
            tx.executemany("UPDATE work_items SET available_at = ? WHERE id = ?", [(PAUSED_UNTIL, i) for i, _ in items])
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
            for item_id, dispatch_id in tx.fetchall(waiting, (occ.id, now)):
                tx.execute("UPDATE work_items SET done = 1, lease_owner = NULL WHERE id = ?", (item_id,))
                _cancel_open_recipients(tx, dispatch_id)
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
    row = tx.fetchone("SELECT env_id, users FROM dispatches WHERE id = ?", (dispatch_id,))
    if row is None:
        return
    now = tx.now_ms
    tx.executemany(
        "INSERT INTO recipients (dispatch_id, idx, env_id, user_id, device_id, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [(dispatch_id, i, row[0], u.get("userId"), u.get("deviceId"), now) for i, u in enumerate(_decode(row[1]))],
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
        row = tx.fetchone(
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
        )
        assert row is not None
        occurrence_id = int(row[0])
        planned = _enqueue(
            tx,
            occurrence_id=occurrence_id,
            env_id=self.env_id,
            campaign_key=self.campaign_key,
            channel=self.channel,
            users=self.user_ids,
        )
        tx.execute("UPDATE broadcast_occurrences SET planned = ? WHERE id = ?", (planned, occurrence_id))
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
    row = db.fetchone(
        conn, f"SELECT {_COLUMNS} FROM broadcast_occurrences WHERE id = ? AND env_id = ?", (occurrence_id, env_id)
    )
    if row is None:
        raise NotFound(f"no occurrence {occurrence_id} in this environment")
    occ = _occurrence(row)
    counts = {"SENT": 0, "FAILED": 0, "EXCLUDED": 0, "UNKNOWN": 0}
    excluded_by: dict[str, int] = {}
    failed_by: dict[str, int] = {}
    for outcome, reason, n in db.fetchall(
        conn,
        "SELECT r.outcome, r.reason, COUNT(*) FROM recipients r JOIN broadcast_dispatches b "
        "ON b.dispatch_id = r.dispatch_id WHERE b.occurrence_id = ? AND r.outcome IS NOT NULL "
        "GROUP BY r.outcome, r.reason",
        (occ.id,),
    ):
        counts[outcome] = counts.get(outcome, 0) + int(n)
        if outcome == "EXCLUDED":
            excluded_by[reason or "UNKNOWN"] = excluded_by.get(reason or "UNKNOWN", 0) + int(n)
        elif outcome == "FAILED":
            failed_by[reason or "UNKNOWN"] = failed_by.get(reason or "UNKNOWN", 0) + int(n)
    held_row = db.fetchone(
        conn,
        "SELECT COALESCE(SUM(b.size), 0) FROM broadcast_dispatches b JOIN dispatches d ON d.id = b.dispatch_id "
        "WHERE b.occurrence_id = ? AND d.status = 'SCHEDULED'",
        (occ.id,),
    )
    recent = db.fetchone(
        conn,
        "SELECT COUNT(*) FROM recipients r JOIN broadcast_dispatches b ON b.dispatch_id = r.dispatch_id "
        "WHERE b.occurrence_id = ? AND r.outcome IS NOT NULL AND r.updated_at >= ?",
        (occ.id, now_ms - 60_000),
    )
    decided = sum(counts.values())
    remaining = max(0, occ.planned - decided)
    rate = int(recent[0]) if recent else 0
    eta = now_ms + remaining * 60_000 // rate if rate and remaining else None
    return Progress(
        occurrence=occ,
        planned=occ.planned,
        sent=counts["SENT"],
        failed=counts["FAILED"],
        excluded=counts["EXCLUDED"],
        held=min(remaining, int(held_row[0]) if held_row else 0),
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
    rows = db.fetchall(conn, sql + " ORDER BY slot_ms DESC, id DESC LIMIT ?", (*params, limit))
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
    rows = db.fetchall(
        conn,
        "SELECT c.env_id, e.timezone, c.key, c.definition, c.updated_at, "
        "(SELECT MAX(o.slot_ms) FROM broadcast_occurrences o WHERE o.env_id = c.env_id AND o.campaign_key = c.key "
        "AND o.kind = 'SCHEDULED') FROM campaigns c JOIN environments e ON e.id = c.env_id "
        "WHERE c.status = 'ACTIVE' AND c.definition LIKE ?",
        ('%"schedule":%',),
    )
    return [ScheduledCampaign(*r) for r in rows]


def broadcast_warnings(
    read: Callable[[Callable[[Connection], AudiencePage]], AudiencePage],
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
