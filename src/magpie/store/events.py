"""The event store: one writer job per SDK batch, reads for the admin API, and retention.

**Snapshot.** Each stored event carries ``user_properties``: the properties of the profile
it resolved to, as stored at the moment magpie accepted the event: after the earlier events
of the same batch and after the event's own ``$properties`` operations, before anything
later. Later updates never touch a stored event, which is what "updated properties are not
applied retroactively" means. The properties the SDK itself attached to the event
(``userProperties``, ``hackleProperties``) are kept apart, as sent, in ``context``.

**Once per insertId.** An event already stored (or repeated in its batch) is skipped with
its effects. Rows are claimed with ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, which on
PostgreSQL waits for another process inserting the same id; should that process win, the
job undoes its in-memory changes and runs again without the ids it lost.

**Nothing partial.** Everything that can reject an event (limits, identity rules) runs on the
in-memory profiles before the first SQL write of the job, so a rejected batch leaves nothing.

**Jobs cross a process boundary.** ``magpie serve`` runs the writer in a child process, so
jobs are plain picklable data. A batch arrives here already parsed and validated by the API
process (``magpie.domain.events``): parsing costs several times what unpickling does, and
the writer is the one serial stage every request shares.

**Retention** counts from ``received_at`` (magpie's clock, not the client's) and is purged in
chunks through the writer, so a purge never holds the write lock for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from magpie.domain import consent
from magpie.domain.events import (
    USER_ONLY,
    ConsentUpdate,
    Event,
    PhoneUpdate,
    PropertyUpdate,
    PushClick,
    PushTokenUpdate,
    event_type_id,
    is_system_key,
)
from magpie.domain.identity import DEVICE, USER, check_identifier
from magpie.domain.operations import apply_operations
from magpie.errors import EmptyIdentifier, InvalidRequest, NotFound, ServiceUnavailable
from magpie.store.conversions import attribute_conversions
from magpie.store.db import Connection, Database
from magpie.store.profiles import resolve, set_phone
from magpie.store.stats import add_count
from magpie.store.tokens import register_token_row
from magpie.store.transaction import ProfileRow, Tx, dumps
from magpie.store.writer import JobDefaults, Writer

log = logging.getLogger("magpie.events")

_decode = msgspec.json.decode
_COLUMNS = (
    "env_id, insert_id, kind, ident, event_key, ts, received_at, value, properties, user_properties, "
    "identifiers, context"
)
# Where ``insert_id`` sits in an event row built for ``_COLUMNS``.
_INSERT_ID = [name.strip() for name in _COLUMNS.split(",")].index("insert_id")
_ROW_MARKS = "(" + ", ".join("?" * 12) + ")"
_CHUNK = 200
_CLAIM_ATTEMPTS = 3
PURGE_CHUNK = 5000


def _profile_keys(events: Sequence[Event], env_id: int) -> tuple[tuple[int, str, str], ...]:
    keys: set[tuple[int, str, str]] = set()
    for event in events:
        if event.user_id is not None:
            keys.add((env_id, USER, event.user_id))
        if event.device_id is not None:
            keys.add((env_id, DEVICE, event.device_id))
    return tuple(keys)


class StoreEvents(JobDefaults):
    """Apply and store a batch of events in the group commit; returns how many were new.

    >>> await writer.submit(StoreEvents(key_hash=h, env_id=1, events=events))  # doctest: +SKIP
    2
    """

    __slots__ = ("env_id", "events", "key_hash", "profile_keys")
    key_hash: str  # always acting for an API key

    def __init__(self, *, key_hash: str, env_id: int, events: list[Event]) -> None:
        self.key_hash = key_hash
        self.env_id = env_id
        self.events = events
        self.profile_keys = _profile_keys(events, env_id)

    def run(self, tx: Tx) -> int:
        tx.check_key(self.key_hash, self.env_id)
        stored = _stored_ids(tx, self.env_id, [e.insert_id for e in self.events])
        for _ in range(_CLAIM_ATTEMPTS):
            fresh = [e for e in self.events if e.insert_id not in stored]
            rows = [self._apply(tx, event) for event in fresh]
            claimed = _claim(tx, rows)
            if len(claimed) == len(rows):
                break
            # Another process stored some of these ids after we looked: start over without them.
            tx.undo_job()
            tx.begin_job()
            _release(tx, self.env_id, claimed)
            stored.update(e.insert_id for e in fresh if e.insert_id not in claimed)
        else:
            raise ServiceUnavailable("events kept being stored concurrently; retry the batch")
        self._side_effects(tx, fresh)
        attribute_conversions(tx, env_id=self.env_id, events=fresh)
        return len(fresh)

    def _apply(self, tx: Tx, event: Event) -> tuple[Any, ...]:
        """Apply the event's profile change in memory and return its row (validation lives here)."""
        target = resolve(tx, env_id=self.env_id, user_id=event.user_id, device_id=event.device_id)
        effect = event.effect
        if effect is not None and event.key in USER_ONLY and target.kind != USER:
            raise EmptyIdentifier(f"{event.where}: {event.key} needs a $userId (or a device linked to a user)")
        if isinstance(effect, PropertyUpdate):
            if effect.operations:
                tx.update(
                    target,
                    properties=apply_operations(properties=target.properties, operations=effect.operations),
                )
        elif isinstance(effect, ConsentUpdate):
            if effect.changes:
                tx.update(
                    target,
                    crm=consent.apply_consent(
                        crm=target.crm, channel=effect.channel, changes=effect.changes, now_ms=tx.now_ms
                    ),
                )
        elif isinstance(effect, PhoneUpdate):
            set_phone(tx, target, effect.phone)  # the number and its blind index, as the phone endpoint does
        elif isinstance(effect, PushTokenUpdate):
            assert event.device_id is not None
            _touch(tx, tx.profile(self.env_id, DEVICE, event.device_id))
        _touch(tx, target)
        return (
            self.env_id,
            event.insert_id,
            target.kind,
            target.ident,
            event.key,
            event.timestamp,
            tx.now_ms,
            event.value,
            event.properties,
            dumps(target.properties),
            event.identifiers,
            event.context,
        )

    def _side_effects(self, tx: Tx, fresh: list[Event]) -> None:
        """SQL writes beyond the event rows; they run once the batch can no longer be rejected."""
        new_types: list[tuple[int, str, int, int]] = []
        for event in fresh:
            effect = event.effect
            if isinstance(effect, PushTokenUpdate):
                assert event.device_id is not None
                register_token_row(
                    tx,
                    env_id=self.env_id,
                    device_id=event.device_id,
                    provider_type=effect.provider_type,
                    token=effect.token,
                )
            elif isinstance(effect, PushClick):
                _record_click(tx, self.env_id, event, effect)
            memo = ("event-type", self.env_id, event.key)
            if not is_system_key(event.key) and memo not in tx.memo:
                tx.memo[memo] = True
                new_types.append((self.env_id, event.key, event_type_id(event.key), tx.now_ms))
        # Known types conflict and change nothing, so the workspace's Last-Modified stays put.
        tx.executemany(
            "INSERT INTO event_types (env_id, key, id, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            new_types,
        )


def _touch(tx: Tx, profile: ProfileRow) -> None:
    """Make sure a profile that sent an event exists, without rewriting one that does."""
    if not profile.exists and not profile.dirty:
        tx.update(profile)


def _stored_ids(tx: Tx, env_id: int, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = tx.fetchall(
            f"SELECT insert_id FROM events WHERE env_id = ? AND insert_id IN ({marks})", (env_id, *chunk)
        )
        found.update(str(insert_id) for (insert_id,) in rows)
    return found


def _claim(tx: Tx, rows: list[tuple[Any, ...]]) -> set[str]:
    """Insert event rows unless their id is taken; returns the ids this transaction inserted."""
    claimed: set[str] = set()
    # A stable order, so that two processes inserting overlapping ids wait instead of deadlocking.
    ordered = sorted(rows, key=lambda row: str(row[_INSERT_ID]))
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        values = ", ".join([_ROW_MARKS] * len(chunk))
        params = [value for row in chunk for value in row]
        found = tx.fetchall(
            f"INSERT INTO events ({_COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING RETURNING insert_id", params
        )
        claimed.update(str(insert_id) for (insert_id,) in found)
    return claimed


def _release(tx: Tx, env_id: int, ids: set[str]) -> None:
    tx.executemany("DELETE FROM events WHERE env_id = ? AND insert_id = ?", [(env_id, i) for i in sorted(ids)])


def _record_click(tx: Tx, env_id: int, event: Event, click: PushClick) -> None:
    """Store a click; count it for a campaign only when it is attributed.

    A click is attributed when it names a delivery of this environment that was sent, belongs to
    the campaign the click names (if it names one), and went to the profile or device the click
    comes from. Anything else (an unknown delivery, another campaign's delivery, only a campaign
    key) is stored with ``attributed = 0`` and counts nowhere. Only the first attributed click of
    a delivery is a unique click.
    """
    if click.debug:
        return  # test sends from a console are not campaign traffic
    campaign_key = click.campaign_key
    dispatch_id: str | None = None
    attributed = False
    if click.delivery_id is not None:
        row = tx.fetchone(
            "SELECT dispatch_id, campaign_key, user_key, device_id, status FROM deliveries WHERE id = ? AND env_id = ?",
            (click.delivery_id, env_id),
        )
        if row is not None:
            sent_dispatch, sent_campaign, user_key, sent_to, status = row
            same_campaign = campaign_key is None or campaign_key == int(sent_campaign)
            same_recipient = (event.user_id is not None and user_key == f"{USER}:{event.user_id}") or (
                event.device_id is not None
                and (sent_to == event.device_id or user_key == f"{DEVICE}:{event.device_id}")
            )
            attributed = status == "SENT" and same_campaign and same_recipient
            if attributed:
                dispatch_id, campaign_key = str(sent_dispatch), int(sent_campaign)
    clicked_at = min(event.timestamp, tx.now_ms)
    inserted = tx.fetchone(
        "INSERT INTO push_clicks (env_id, insert_id, campaign_key, dispatch_id, delivery_id, clicked_at, attributed) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING insert_id",
        (env_id, event.insert_id, campaign_key, dispatch_id, click.delivery_id, clicked_at, int(attributed)),
    )
    if not attributed or inserted is None or campaign_key is None:
        return
    add_count(tx, env_id=env_id, campaign_key=campaign_key, at_ms=clicked_at, metric="CLICK")
    earlier = tx.fetchone(
        "SELECT 1 FROM push_clicks WHERE env_id = ? AND delivery_id = ? AND attributed = 1 AND insert_id <> ? LIMIT 1",
        (env_id, click.delivery_id, event.insert_id),
    )
    if earlier is None:
        add_count(tx, env_id=env_id, campaign_key=campaign_key, at_ms=clicked_at, metric="UNIQUE_CLICK")


# -- reads --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventType:
    id: int
    key: str


def event_types(conn: Connection, db: Database, *, env_id: int) -> tuple[list[EventType], int]:
    """The environment's event types for the workspace document, and when the list last changed."""
    rows = db.fetchall(conn, "SELECT key, id, created_at FROM event_types WHERE env_id = ? ORDER BY key", (env_id,))
    env_created = db.scalar(conn, "SELECT created_at FROM environments WHERE id = ?", (env_id,))
    if env_created is None:
        raise NotFound("the environment of this key no longer exists")
    changed = max([int(env_created), *(int(created_at) for _, _, created_at in rows)])
    return [EventType(int(type_id), key) for key, type_id, _ in rows], changed


def _cursor(value: str | None) -> tuple[int, str] | None:
    if not value:
        return None
    ts, sep, insert_id = value.partition(":")
    digits = ts.removeprefix("-")
    if not sep or not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise InvalidRequest("cursor is not one this API returned")
    if not -(2**63) <= int(ts) < 2**63:
        raise InvalidRequest("cursor is not one this API returned")
    return int(ts), check_identifier(insert_id, field="cursor")


@dataclass(frozen=True, slots=True)
class EventRow:
    insert_id: str
    key: str
    timestamp: int
    received_at: int
    value: float | None
    properties: dict[str, Any]
    user_properties: dict[str, Any]  # the profile's properties when the event was stored
    identifiers: dict[str, Any]
    context: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[EventRow]
    next_cursor: str | None  # continues the list; None at its end


def list_events(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    kind: str,
    ident: str,
    limit: int = 50,
    cursor: str | None = None,
) -> EventPage:
    """A profile's stored events, newest first."""
    sql = (
        "SELECT insert_id, event_key, ts, received_at, value, properties, user_properties, identifiers, context "
        "FROM events WHERE env_id = ? AND kind = ? AND ident = ?"
    )
    params: list[Any] = [env_id, kind, ident]
    after = _cursor(cursor)
    if after is not None:
        sql += " AND (ts < ? OR (ts = ? AND insert_id < ?))"
        after_ts, after_id = after
        params.extend((after_ts, after_ts, after_id))
    rows = db.fetchall(conn, sql + " ORDER BY ts DESC, insert_id DESC LIMIT ?", (*params, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    events = [
        EventRow(insert_id, key, ts, received_at, value, *(_decode(raw) for raw in documents))
        for insert_id, key, ts, received_at, value, *documents in rows
    ]
    if not (more and events):
        return EventPage(events, None)
    *_, oldest = events
    return EventPage(events, f"{oldest.timestamp}:{oldest.insert_id}")


# -- retention --------------------------------------------------------------------------------------


class PurgeEvents(JobDefaults):
    """Delete up to ``limit`` events per environment received before ``before_ms``; returns how many."""

    __slots__ = ("before_ms", "limit")
    profile_keys = ()

    def __init__(self, *, before_ms: int, limit: int) -> None:
        self.before_ms = before_ms
        self.limit = limit

    def run(self, tx: Tx) -> int:
        deleted = 0
        for (env_id,) in tx.fetchall("SELECT id FROM environments ORDER BY id"):
            cursor = tx.execute(
                "DELETE FROM events WHERE env_id = ? AND insert_id IN "
                "(SELECT insert_id FROM events WHERE env_id = ? AND received_at < ? LIMIT ?)",
                (env_id, env_id, self.before_ms, self.limit),
            )
            deleted += max(0, int(cursor.rowcount))
        return deleted


async def purge_expired(*, writer: Writer, retention_days: int, now_ms: int, chunk: int = PURGE_CHUNK) -> int:
    """Delete events received more than ``retention_days`` before ``now_ms``; returns how many."""
    if retention_days <= 0:
        return 0
    before = now_ms - retention_days * 86_400_000
    total = 0
    while True:
        deleted = await writer.submit(PurgeEvents(before_ms=before, limit=chunk))
        total += deleted
        if deleted < chunk:
            return total


class Retention:
    """The periodic purge, owned by the app's lifespan (``start`` / ``stop``)."""

    def __init__(
        self,
        *,
        writer: Writer,
        retention_days: int,
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.writer = writer
        self.retention_days = retention_days
        self.interval = interval
        self.clock = clock
        self.purged = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.retention_days > 0 and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=30)
            self._task = None

    async def _run(self) -> None:
        # The first purge waits too: short-lived processes (tests, CLI) should not pay for it.
        while not await self._wait(self.interval):
            try:
                self.purged += await purge_expired(
                    writer=self.writer, retention_days=self.retention_days, now_ms=int(self.clock() * 1000)
                )
            except Exception as exc:  # storage trouble: try again next round
                log.warning("event retention purge failed: %s", type(exc).__name__)

    async def _wait(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return False
        return True


def recent_events(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    user_id: str | None,
    device_id: str | None = None,
    limit: int = 20,
) -> list[EventRow]:
    """Stored events of a user (else of a device), newest first, with their property snapshots."""
    kind, ident = (USER, user_id) if user_id is not None else (DEVICE, device_id)
    if ident is None:
        return []
    return list_events(conn, db, env_id=env_id, kind=kind, ident=ident, limit=limit).events
