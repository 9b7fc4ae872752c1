"""Deliveries: claiming a dispatch's work items with leases, and recording each recipient's outcome.

The other half, accepting a dispatch and reading it back, is ``magpie.store.dispatches``.

Work items are claimed with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the
writer's ``BEGIN IMMEDIATE`` on SQLite). A worker that dies stops renewing its lease;
once it expires another worker claims the item and finishes it: recipients with an
outcome are skipped and deliveries already SENT are not sent again.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import msgspec

from magpie.domain import compliance
from magpie.domain.delivery import Outcome
from magpie.domain.environment import effective
from magpie.domain.identity import DEVICE, USER
from magpie.providers.base import DeliveryReport
from magpie.store.campaigns import memberships
from magpie.store.conversions import RecordExposures
from magpie.store.db import Connection, Database
from magpie.store.stats import count_outcome
from magpie.store.transaction import Tx, dumps
from magpie.store.writer import JobDefaults

_decode = msgspec.json.decode


# Rows per multi-row statement: within both engines' bound on parameters (SQLite 32,766; 16 columns here).
_CHUNK = 500
# The column types of the row sources (``Database.row_source``) of the batch statements below. Typed,
# or PostgreSQL could take an integer column for numeric and compare a key through a cast (no index).
_RECIPIENT_TYPES = ("text", "integer", "integer", "text", "text", "bigint")
_DELIVERY_TYPES = (
    *("integer", "text", "integer", "integer", "text", "text", "text", "text", "text"),
    *("bigint", "bigint", "text", "text", "integer", "text", "text"),
)
_RESULT_TYPES = ("integer", "text", "text", "text", "text", "integer")
_OUTCOME_TYPES = ("integer", "text", "text")
R = TypeVar("R")


def _chunks(rows: list[R]) -> Iterator[list[R]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


def _fetchone_as(tx: Tx, sql: str, params: Sequence[Any], row_type: Callable[..., R]) -> R | None:
    """The one row of ``sql`` in the writer's transaction as ``row_type`` (fields in SELECT order), or None."""
    row = tx.fetchone(sql, params)
    return None if row is None else row_type(*row)


def _fetchall_as(tx: Tx, sql: str, params: Sequence[Any], row_type: Callable[..., R]) -> list[R]:
    """Every row of ``sql`` in the writer's transaction as ``row_type``."""
    return [row_type(*row) for row in tx.fetchall(sql, params)]


class _DeliveryId(NamedTuple):
    id: int
    recipient_idx: int
    token: str


class _Count(NamedTuple):
    n: int


class _Id(NamedTuple):
    id: int


class _Idx(NamedTuple):
    idx: int


class _Sent(NamedTuple):
    sent_at: int
    tags: str
    channel: str


class _PaidDelivery(NamedTuple):
    id: int
    paid_day: str


class _Awaiting(NamedTuple):
    env_id: int
    provider_message_id: str


class _UserId(NamedTuple):
    user_id: str


class _DispatchUsers(NamedTuple):
    env_id: int
    users: str


class _Candidate(NamedTuple):
    id: int
    size: int


class _Claimed(NamedTuple):
    id: int
    env_id: int
    dispatch_id: str
    payload: str
    attempts: int


@dataclass(frozen=True)
class WorkItem:
    id: int
    env_id: int
    dispatch_id: str
    payload: dict[str, Any]
    attempts: int
    size: int = 1  # the recipients its dispatch was accepted with


class ClaimWork(JobDefaults):
    """Lease up to ``limit`` due work items, oldest first, whose recipients sum to at most
    ``max_recipients`` (the first item is taken whatever its size)."""

    profile_keys = ()

    def __init__(
        self, *, owner: str, now_ms: int, lease_ms: int, limit: int, max_recipients: int | None = None
    ) -> None:
        self.owner = owner
        self.now_ms = now_ms
        self.lease_ms = lease_ms
        self.limit = limit
        self.max_recipients = max_recipients

    def run(self, tx: Tx) -> list[WorkItem]:
        candidates = _fetchall_as(
            tx,
            "SELECT w.id, COALESCE((SELECT d.requested FROM dispatches d WHERE d.id = w.dispatch_id), 1) "
            "FROM work_items w WHERE w.done = 0 AND w.available_at <= ? "
            "AND (w.lease_until IS NULL OR w.lease_until < ?) ORDER BY w.available_at, w.id LIMIT ? "
            "FOR UPDATE SKIP LOCKED",
            (self.now_ms, self.now_ms, self.limit),
            _Candidate,
        )
        sizes: dict[int, int] = {}
        total = 0
        for c in candidates:
            if sizes and self.max_recipients is not None and total + c.size > self.max_recipients:
                break
            sizes[c.id] = max(1, c.size)
            total += c.size
        if not sizes:
            return []
        rows = _fetchall_as(
            tx,
            "UPDATE work_items SET lease_owner = ?, lease_until = ?, attempts = attempts + 1 "
            f"WHERE id IN ({', '.join('?' * len(sizes))}) RETURNING id, env_id, dispatch_id, payload, attempts",
            (self.owner, self.now_ms + self.lease_ms, *sizes),
            _Claimed,
        )
        return sorted(
            (
                WorkItem(
                    id=r.id,
                    env_id=r.env_id,
                    dispatch_id=r.dispatch_id,
                    payload=_decode(r.payload),
                    attempts=r.attempts,
                    size=sizes[r.id],
                )
                for r in rows
            ),
            key=lambda item: item.id,
        )


class ExtendLease(JobDefaults):
    profile_keys = ()

    def __init__(self, *, item_ids: list[int], owner: str, until_ms: int) -> None:
        self.item_ids = item_ids
        self.owner = owner
        self.until_ms = until_ms

    def run(self, tx: Tx) -> None:
        tx.executemany(
            "UPDATE work_items SET lease_until = ? WHERE id = ? AND lease_owner = ? AND done = 0",
            [(self.until_ms, i, self.owner) for i in self.item_ids],
        )


class HoldLease(JobDefaults):
    """Whether ``owner`` still holds the lease of a work item, extending it if so.

    Checked right before a paid batch goes to a gateway: a worker whose lease lapsed (it stalled,
    another worker took the item over) must leave the batch to the new owner rather than send it too.
    """

    profile_keys = ()

    def __init__(self, *, item_id: int, owner: str, now_ms: int, until_ms: int) -> None:
        self.item_id = item_id
        self.owner = owner
        self.now_ms = now_ms
        self.until_ms = until_ms

    def run(self, tx: Tx) -> bool:
        cursor = tx.execute(
            "UPDATE work_items SET lease_until = ? WHERE id = ? AND lease_owner = ? AND done = 0 AND lease_until >= ?",
            (self.until_ms, self.item_id, self.owner, self.now_ms),
        )
        return int(cursor.rowcount) == 1


# -- what a worker reads before deciding ---------------------------------------------------------


class Addressee(msgspec.Struct, frozen=True, rename="camel"):
    """One recipient as the dispatch names it (``users`` of the accepted request)."""

    user_id: str | None = None
    device_id: str | None = None
    api_properties: dict[str, Any] = {}


_addressees = msgspec.json.Decoder(list[Addressee])


class TokenRow(NamedTuple):
    """An active push token of one of the recipient's devices."""

    device_id: str
    token: str
    provider_type: str


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A delivery an earlier attempt at the dispatch created."""

    id: int
    status: Outcome
    attempts: int
    batch_key: str | None


@dataclass(slots=True)
class Target:
    """A recipient resolved against the store as it is now."""

    user_key: str
    user_id: str | None
    device_ids: tuple[str, ...]
    properties: dict[str, Any]
    crm: dict[str, Any]
    tokens: list[TokenRow]
    # The user's phone number, still encrypted: the worker decrypts it only to send.
    phone_enc: bytes | None = None


@dataclass
class Snapshot:
    item: WorkItem
    exists: bool = False
    channel: str = "push"
    exec_id: int = 0
    campaign_key: int = 0
    users: list[Addressee] = field(default_factory=list)
    timezone: str = "Asia/Seoul"
    settings: dict[str, Any] = field(default_factory=dict)
    campaign_row: tuple[str, int] | None = None
    outcomes: dict[int, str | None] = field(default_factory=dict)
    deliveries: dict[tuple[int, str], DeliveryRow] = field(default_factory=dict)
    targets: dict[int, Target | None] = field(default_factory=dict)
    memberships: set[tuple[str, str]] = field(default_factory=set)
    # Kakao and SMS deliveries handed to a gateway whose answer was never recorded: id -> batch key.
    in_flight: dict[int, str] = field(default_factory=dict)


class _ItemRow(NamedTuple):
    """A work item's dispatch, with its environment and campaign (None where the campaign is gone)."""

    exec_id: int
    campaign_key: int
    users: str
    channel: str
    timezone: str | None
    settings: str | None
    definition: str | None
    updated_at: int | None


class _OutcomeRow(NamedTuple):
    idx: int
    outcome: str | None


class _EarlierDelivery(NamedTuple):
    id: int
    recipient_idx: int
    token: str
    status: str
    attempts: int
    batch_key: str | None


class _ProfileRow(NamedTuple):
    """A profile the batch names: a user (``kind`` USER) or a device (``linked`` is its user)."""

    kind: str
    ident: str
    properties: str | None
    crm: str | None
    phone_enc: bytes | None
    linked: str | None


class _Device(NamedTuple):
    """A device the batch names, decoded: its properties, CRM fields and the user it is linked to."""

    properties: dict[str, Any]
    crm: dict[str, Any]
    linked: str | None


class _TokenRow(NamedTuple):
    device_id: str
    token: str
    provider_type: str


@functools.lru_cache(maxsize=256)
def _settings(stored: str) -> dict[str, Any]:
    """An environment's effective settings, decoded once per distinct stored text (read-only: shared)."""
    return effective(_decode(stored))


def load_snapshot(conn: Connection, db: Database, *, item: WorkItem, cohorts: set[str] | None = None) -> Snapshot:
    """Everything a worker needs to decide one work item, in a handful of batched queries."""
    snap = Snapshot(item=item)
    row = db.fetchone_as(
        conn,
        "SELECT d.exec_id, d.campaign_key, d.users, d.channel, e.timezone, e.settings, c.definition, c.updated_at "
        "FROM dispatches d LEFT JOIN environments e ON e.id = d.env_id "
        "LEFT JOIN campaigns c ON c.env_id = d.env_id AND c.key = d.campaign_key WHERE d.id = ? AND d.env_id = ?",
        (item.dispatch_id, item.env_id),
        _ItemRow,
    )
    if row is None:
        return snap
    snap.exists = True
    snap.exec_id, snap.campaign_key, snap.users = row.exec_id, row.campaign_key, _addressees.decode(row.users)
    snap.channel = row.channel
    if row.timezone is not None and row.settings is not None:
        snap.timezone, snap.settings = row.timezone, _settings(row.settings)
    if row.definition is not None and row.updated_at is not None:
        snap.campaign_row = (row.definition, row.updated_at)
    for r in db.fetchall_as(
        conn, "SELECT idx, outcome FROM recipients WHERE dispatch_id = ?", (item.dispatch_id,), _OutcomeRow
    ):
        snap.outcomes[r.idx] = r.outcome
    for d in db.fetchall_as(
        conn,
        "SELECT id, recipient_idx, token, status, attempts, batch_key FROM deliveries WHERE dispatch_id = ?",
        (item.dispatch_id,),
        _EarlierDelivery,
    ):
        snap.deliveries[(d.recipient_idx, d.token)] = DeliveryRow(
            id=d.id, status=Outcome(d.status), attempts=d.attempts, batch_key=d.batch_key
        )
        if d.status == Outcome.SENDING and d.batch_key:
            snap.in_flight[d.id] = d.batch_key
    _resolve_targets(conn, db, snap)
    if cohorts:
        ids = {t.user_id for t in snap.targets.values() if t and t.user_id} | {
            d for t in snap.targets.values() if t for d in t.device_ids
        }

        snap.memberships = memberships(conn, db, env_id=item.env_id, cohorts=cohorts, ids={i for i in ids if i})
    return snap


def _profiles(conn: Connection, db: Database, *, env_id: int, users: set[str], devices: set[str]) -> list[_ProfileRow]:
    """The named users (with their phone), the named devices, and every device linked to a named user, in one read.

    SQLite's planner, without statistics, would rather scan every device of the environment by the
    primary key (env_id, kind) than look the users up in the partial index: the index is named.
    """
    parts: list[str] = []
    params: list[Any] = []
    if users:
        named, named_params = db.any_of("ident", users)
        linked, linked_params = db.any_of("linked_user", users)
        hint = " INDEXED BY ix_profiles_linked_user" if db.is_sqlite else ""
        parts.append(
            f"SELECT kind, ident, properties, crm, phone_enc, NULL FROM profiles WHERE env_id = ? AND kind = ? "
            f"AND {named}"
        )
        parts.append(
            f"SELECT kind, ident, NULL, NULL, NULL, linked_user FROM profiles{hint} WHERE env_id = ? "
            f"AND {linked} AND kind = ?"
        )
        params += [env_id, USER, *named_params, env_id, *linked_params, DEVICE]
    if devices:
        named, named_params = db.any_of("ident", devices)
        parts.append(
            f"SELECT kind, ident, properties, crm, NULL, linked_user FROM profiles WHERE env_id = ? AND kind = ? "
            f"AND {named}"
        )
        params += [env_id, DEVICE, *named_params]
    if not parts:
        return []
    return db.fetchall_as(conn, " UNION ALL ".join(parts), params, _ProfileRow)


def _resolve_targets(conn: Connection, db: Database, snap: Snapshot) -> None:
    env_id = snap.item.env_id
    user_ids = {u.user_id for u in snap.users if u.user_id}
    device_ids = {u.device_id for u in snap.users if u.device_id and not u.user_id}
    devices: dict[str, _Device] = {}
    users: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    phones: dict[str, bytes] = {}
    linked_devices: dict[str, list[str]] = {}
    # A device named without its user, linked to a user the batch does not name: that user is read next.
    unnamed: set[str] = set()
    for p in _profiles(conn, db, env_id=env_id, users=user_ids, devices=device_ids):
        if p.kind == USER:
            users[p.ident] = (_decode(p.properties or "{}"), _decode(p.crm or "{}"))
            if p.phone_enc is not None:
                phones[p.ident] = bytes(p.phone_enc)
        elif p.properties is None:
            linked_devices.setdefault(p.linked or "", []).append(p.ident)
        else:
            devices[p.ident] = _Device(_decode(p.properties), _decode(p.crm or "{}"), p.linked)
            if p.linked and p.linked not in user_ids:
                unnamed.add(p.linked)
    if unnamed:
        for p in _profiles(conn, db, env_id=env_id, users=unnamed, devices=set()):
            if p.kind == USER:
                users[p.ident] = (_decode(p.properties or "{}"), _decode(p.crm or "{}"))
                if p.phone_enc is not None:
                    phones[p.ident] = bytes(p.phone_enc)
            else:
                linked_devices.setdefault(p.linked or "", []).append(p.ident)
    for owned in linked_devices.values():
        owned.sort()
    tokens: dict[str, list[TokenRow]] = {}
    all_devices = set(devices) | {d for ds in linked_devices.values() for d in ds}
    # Kakao and SMS go to the user's phone: their devices' push tokens are not read.
    if all_devices and snap.channel == "push":
        among, params = db.any_of("device_id", all_devices)
        for t in db.fetchall_as(
            conn,
            f"SELECT device_id, token, provider_type FROM push_tokens WHERE env_id = ? AND status = 'ACTIVE' "
            f"AND {among} ORDER BY created_at, token",
            (env_id, *params),
            _TokenRow,
        ):
            tokens.setdefault(t.device_id, []).append(TokenRow(t.device_id, t.token, t.provider_type))
    for idx, user in enumerate(snap.users):
        user_id = user.user_id
        device_id = user.device_id
        if not user_id and device_id in devices and devices[device_id].linked:
            user_id = devices[device_id].linked
        if user_id:
            owned = linked_devices.get(user_id, [])
            if user_id not in users and not owned:
                snap.targets[idx] = None
                continue
            props, crm = users.get(user_id, ({}, {}))
            snap.targets[idx] = Target(
                user_key=f"{USER}:{user_id}",
                user_id=user_id,
                device_ids=tuple(owned),
                properties=props,
                crm=crm,
                tokens=[t for d in owned for t in tokens.get(d, [])],
                phone_enc=phones.get(user_id),
            )
        elif device_id is not None and device_id in devices:
            props, crm, _ = devices[device_id]
            snap.targets[idx] = Target(
                user_key=f"{DEVICE}:{device_id}",
                user_id=None,
                device_ids=(device_id,),
                properties=props,
                crm=crm,
                tokens=tokens.get(device_id, []),
            )
        else:
            snap.targets[idx] = None


# -- recording decisions and results ------------------------------------------------------------------


class Planned(msgspec.Struct):
    """A recipient the worker wants to send to: tokens to deliver and the rendered message."""

    idx: int
    user_key: str
    tokens: Sequence[tuple[str, str, str]]
    marketing: bool
    provider_names: dict[str, str]  # token -> provider name
    # Kakao and SMS: the channel, the message type and size, and whether the gateway charges for it.
    channel: str = "push"
    kind: str | None = None
    size_bytes: int | None = None
    paid: bool = False


class PrepareRecipients(JobDefaults):
    """Record exclusions, apply frequency caps (reserving sends), and create delivery rows.

    Returns ``{idx: {token: delivery_id}}`` for recipients still to send, and the set of
    recipients excluded by a frequency cap.
    """

    profile_keys = ()

    def __init__(
        self,
        *,
        env_id: int,
        dispatch_id: str,
        campaign_key: int,
        users: Sequence[Addressee | Mapping[str, Any] | tuple[str | None, str | None]],
        excluded: dict[int, tuple[str, str]],
        planned: list[Planned],
        caps: list[dict[str, Any]],
        tags: list[str],
        now_ms: int,
        channel: str = "push",
        paid_limit: int = 0,
        day: str = "",
        batch_key: str | None = None,
        gateway: str = "",
        gateway_limit: int = 0,
    ) -> None:
        self.batch_key = batch_key
        self.gateway = gateway
        self.gateway_limit = gateway_limit
        # Recipients past the minute's gateway budget, set by ``run``: neither sent nor decided.
        self.deferred: list[int] = []
        self.env_id = env_id
        self.dispatch_id = dispatch_id
        self.campaign_key = campaign_key
        self.users = users
        self.excluded = excluded
        self.planned = planned
        self.caps = caps
        self.tags = tags
        self.now_ms = now_ms
        self.channel = channel
        self.paid_limit = paid_limit
        self.day = day

    def __getstate__(self) -> dict[str, Any]:
        # Handed to the writer process: the planned recipients as plain tuples, which pickle several
        # times faster than a thousand objects.
        return {**self.__dict__, "planned": [msgspec.structs.astuple(p) for p in self.planned]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, planned=[Planned(*p) for p in state["planned"]])

    def run(self, tx: Tx) -> tuple[dict[int, dict[str, int]], set[int]]:
        recipients = [(self.dispatch_id, i, self.env_id, *_idents(u), self.now_ms) for i, u in enumerate(self.users)]
        for chunk in _chunks(recipients):
            source, params = tx.db.row_source(_RECIPIENT_TYPES, chunk)
            tx.execute(
                "INSERT INTO recipients (dispatch_id, idx, env_id, user_id, device_id, updated_at) "
                f"SELECT * FROM {source} WHERE true ON CONFLICT DO NOTHING",
                params,
            )
        tx.execute(
            "UPDATE dispatches SET status = 'RUNNING' WHERE id = ? AND status = 'ACCEPTED'",
            (self.dispatch_id,),
        )
        excluded = dict(self.excluded)
        capped: set[int] = set()
        window = compliance.longest_window_ms(self.caps)
        sending: list[Planned] = []
        paid: set[int] = set()  # recipients whose delivery reserves one of today's paid messages
        for plan in self.planned:
            if plan.marketing:
                if self.caps and self._capped(tx, plan.user_key, window):
                    excluded[plan.idx] = ("EXCLUDED", "FREQUENCY_CAP")
                    capped.add(plan.idx)
                    continue
                # Reserved now, in the same transaction as the cap check; released if the push fails.
                tx.execute(
                    "INSERT INTO marketing_sends (env_id, user_key, dispatch_id, campaign_key, tags, sent_at, channel) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        self.env_id,
                        plan.user_key,
                        self.dispatch_id,
                        self.campaign_key,
                        dumps(self.tags),
                        self.now_ms,
                        self.channel,
                    ),
                )
            if plan.paid and self.paid_limit and not self._has_delivery(tx, plan.idx):
                # Counted once per delivery row, on the day it is created: a recipient whose delivery
                # another attempt already created (a worker that stalled past its lease, and the one
                # that took over) was counted then.
                if not self._reserve_paid(tx):
                    excluded[plan.idx] = ("EXCLUDED", "DAILY_LIMIT")
                    capped.add(plan.idx)
                    if plan.marketing:
                        tx.execute(
                            "DELETE FROM marketing_sends WHERE env_id = ? AND user_key = ? AND dispatch_id = ?",
                            (self.env_id, plan.user_key, self.dispatch_id),
                        )
                    continue
                paid.add(plan.idx)
            sending.append(plan)
        self.deferred = []
        if self.gateway_limit and sending:
            sending = self._within_gateway_budget(tx, sending, paid)
            capped.update(self.deferred)
        for idx, (outcome, reason) in excluded.items():
            if tx.fetchone(
                "UPDATE recipients SET outcome = ?, reason = ?, updated_at = ? WHERE dispatch_id = ? AND idx = ? "
                "AND outcome IS NULL RETURNING idx",
                (outcome, reason, self.now_ms, self.dispatch_id, idx),
            ):
                count_outcome(tx, dispatch_id=self.dispatch_id, outcome=outcome, reason=reason)
        rows = [
            (
                self.env_id,
                self.dispatch_id,
                p.idx,
                self.campaign_key,
                p.user_key,
                device or None,
                token,
                p.provider_names[token],
                # A gateway batch is SENDING from its creation: if this worker dies before recording
                # the answer, the next one must ask the gateway before sending again.
                "SENDING" if self.batch_key else "PENDING",
                self.now_ms,
                self.now_ms,
                p.channel,
                p.kind,
                p.size_bytes,
                self.batch_key,
                self.day if p.idx in paid else None,
            )
            for p in sending
            for device, token, _ in p.tokens
        ]
        ids: dict[int, dict[str, int]] = {}
        created = 0
        for part in _chunks(rows):
            # One statement per chunk, answering the ids it created.
            source, params = tx.db.row_source(_DELIVERY_TYPES, part)
            for d in _fetchall_as(
                tx,
                "INSERT INTO deliveries (env_id, dispatch_id, recipient_idx, campaign_key, user_key, device_id, token, "
                "provider, status, attempts, created_at, updated_at, channel, kind, size_bytes, batch_key, paid_day) "
                "SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, 0, column10, "
                f"column11, column12, column13, column14, column15, column16 FROM {source} WHERE true "
                "ON CONFLICT DO NOTHING RETURNING id, recipient_idx, token",
                params,
                _DeliveryId,
            ):
                ids.setdefault(d.recipient_idx, {})[d.token] = d.id
                created += 1
        if created < len(rows):
            # Some existed already (an earlier attempt created them): every delivery of the dispatch, as stored.
            ids = {}
            for d in _fetchall_as(
                tx,
                "SELECT id, recipient_idx, token FROM deliveries WHERE dispatch_id = ?",
                (self.dispatch_id,),
                _DeliveryId,
            ):
                ids.setdefault(d.recipient_idx, {})[d.token] = d.id
        return ids, capped

    def _capped(self, tx: Tx, user_key: str, window: int) -> bool:
        kind, _, ident = user_key.partition(":")
        # Serialise cap checks per user across workers (PostgreSQL); SQLite's writer already is.
        tx.fetchone(
            "SELECT 1 FROM profiles WHERE env_id = ? AND kind = ? AND ident = ? FOR UPDATE",
            (self.env_id, kind, ident),
        )
        rows = _fetchall_as(
            tx,
            "SELECT sent_at, tags, channel FROM marketing_sends WHERE env_id = ? AND user_key = ? AND sent_at > ? "
            "AND dispatch_id <> ?",
            (self.env_id, user_key, self.now_ms - window, self.dispatch_id),
            _Sent,
        )
        return compliance.cap_exceeded(
            caps=self.caps,
            campaign_tags=self.tags,
            sends=[(r.sent_at, _decode(r.tags), r.channel) for r in rows],
            now_ms=self.now_ms,
            channel=self.channel,
        )

    def _within_gateway_budget(self, tx: Tx, sending: list[Planned], paid: set[int]) -> list[Planned]:
        """The plans the gateway's budget for this minute has room for, in order; the rest are deferred.

        The minute's row is locked while it is counted (PostgreSQL; SQLite's writer is one), so the
        workers of every process share it. A deferred recipient leaves the frequency caps and the
        day's paid count it reserved above; a recipient whose delivery an earlier attempt created was
        counted then.
        """
        minute = self.now_ms // 60_000
        marks = ",".join("?" * len(sending))
        existing = {
            int(row.idx)
            for row in _fetchall_as(
                tx,
                "SELECT DISTINCT recipient_idx AS idx FROM deliveries "
                f"WHERE dispatch_id = ? AND recipient_idx IN ({marks})",
                (self.dispatch_id, *(p.idx for p in sending)),
                _Idx,
            )
        }
        if len(existing) == len(sending):
            return sending
        created = tx.fetchone(
            "INSERT INTO gateway_sends (env_id, gateway, minute, count) VALUES (?, ?, ?, 0) "
            "ON CONFLICT DO NOTHING RETURNING minute",
            (self.env_id, self.gateway, minute),
        )
        if created is not None:
            # A new minute: the rows of past ones are no longer read.
            tx.execute(
                "DELETE FROM gateway_sends WHERE env_id = ? AND gateway = ? AND minute < ?",
                (self.env_id, self.gateway, minute - 1),
            )
        row = _fetchone_as(
            tx,
            "SELECT count FROM gateway_sends WHERE env_id = ? AND gateway = ? AND minute = ? FOR UPDATE",
            (self.env_id, self.gateway, minute),
            _Count,
        )
        room = self.gateway_limit - (int(row.n) if row is not None else 0)
        granted: list[Planned] = []
        used = 0
        for plan in sending:
            if plan.idx in existing:
                granted.append(plan)
                continue
            # One message per delivery (a push token); a recipient never needs more than a whole minute.
            cost = min(max(1, len(plan.tokens)), self.gateway_limit)
            if self.deferred or cost > room - used:
                self.deferred.append(plan.idx)
                continue
            used += cost
            granted.append(plan)
        if used:
            tx.execute(
                "UPDATE gateway_sends SET count = count + ? WHERE env_id = ? AND gateway = ? AND minute = ?",
                (used, self.env_id, self.gateway, minute),
            )
        deferred = [p for p in sending if p.idx in set(self.deferred)]
        marketing = [(self.env_id, p.user_key, self.dispatch_id) for p in deferred if p.marketing]
        if marketing:
            tx.executemany(
                "DELETE FROM marketing_sends WHERE env_id = ? AND user_key = ? AND dispatch_id = ?", marketing
            )
        unpaid = sum(1 for p in deferred if p.idx in paid)
        if unpaid:
            tx.execute(
                "UPDATE paid_messages SET count = count - ? WHERE env_id = ? AND day = ?",
                (unpaid, self.env_id, self.day),
            )
            paid.difference_update(p.idx for p in deferred)
        return granted

    def _has_delivery(self, tx: Tx, idx: int) -> bool:
        row = tx.fetchone(
            "SELECT 1 FROM deliveries WHERE dispatch_id = ? AND recipient_idx = ? LIMIT 1", (self.dispatch_id, idx)
        )
        return row is not None

    def _reserve_paid(self, tx: Tx) -> bool:
        """Count one more paid message today; False (and nothing counted) past the environment's limit."""
        row = _fetchone_as(
            tx,
            "INSERT INTO paid_messages (env_id, day, count) VALUES (?, ?, 1) "
            "ON CONFLICT (env_id, day) DO UPDATE SET count = paid_messages.count + 1 RETURNING count",
            (self.env_id, self.day),
            _Count,
        )
        if row is not None and int(row.n) > self.paid_limit:
            tx.execute(
                "UPDATE paid_messages SET count = count - 1 WHERE env_id = ? AND day = ?", (self.env_id, self.day)
            )
            return False
        return True


def _idents(user: Addressee | Mapping[str, Any] | tuple[str | None, str | None]) -> tuple[str | None, str | None]:
    """A recipient's user and device ids, named by a tuple of them, an ``Addressee`` or the request's object."""
    if isinstance(user, tuple):
        return user
    if isinstance(user, Addressee):
        return user.user_id, user.device_id
    return user.get("userId"), user.get("deviceId")


class DeliveryResult(msgspec.Struct):
    """What became of one delivery (a push token, or a Kakao or SMS message)."""

    delivery_id: int
    token: str
    status: str  # SENT | FAILED | UNKNOWN (phone gateways only)
    provider: str
    provider_message_id: str | None
    error_code: str | None
    attempts: int
    retire: bool = False


class RecordRecipient(JobDefaults):
    """Store one recipient's delivery results and its single outcome."""

    profile_keys = ()

    def __init__(
        self,
        *,
        env_id: int,
        dispatch_id: str,
        idx: int,
        results: list[DeliveryResult],
        outcome: str,
        reason: str | None,
        user_key: str,
        now_ms: int,
    ) -> None:
        self.env_id = env_id
        self.dispatch_id = dispatch_id
        self.idx = idx
        self.results = results
        self.outcome = outcome
        self.reason = reason
        self.user_key = user_key
        self.now_ms = now_ms

    def run(self, tx: Tx) -> None:
        RecordOutcomes(
            env_id=self.env_id,
            dispatch_id=self.dispatch_id,
            now_ms=self.now_ms,
            outcomes=[OutcomeRow(self.idx, self.user_key, self.outcome, self.reason)],
            results=self.results,
        ).run(tx)


class ReserveBatch(JobDefaults):
    """The reserve stage in one transaction: the lease still held (when asked), the recipients'
    exclusions and deliveries (``PrepareRecipients``), an experiment's exposures (``RecordExposures``,
    less the recipients a cap or the daily limit excluded) and night-time recipients handed on.

    Answers ``None`` when the lease was lost (nothing is reserved: the new owner decides the item
    again), else the answer of ``recipients`` (a ``PrepareRecipients``).
    """

    profile_keys = ()

    def __init__(
        self,
        *,
        recipients: PrepareRecipients,
        lease: HoldLease | None = None,
        hold: HoldRecipients | None = None,
        exposures: RecordExposures | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        self.recipients = recipients
        self.lease = lease
        self.hold = hold
        self.exposures = exposures
        # The work item's payload, carried to the item that takes the recipients past the gateway's budget.
        self.payload = payload or {}

    def run(self, tx: Tx) -> tuple[dict[int, dict[str, int]], set[int]] | None:
        if self.lease is not None and not self.lease.run(tx):
            return None
        reserved = self.recipients.run(tx)
        if self.exposures is not None:
            _, capped = reserved
            exposures = copy.copy(self.exposures)
            exposures.rows = [(idx, arm, user_key) for idx, arm, user_key in self.exposures.rows if idx not in capped]
            exposures.run(tx)
        if self.hold is not None:
            self.hold.run(tx)
        deferred = self.recipients.deferred
        if deferred:
            # Past the minute's gateway budget: a new work item takes them when the next minute begins.
            payload = {k: v for k, v in self.payload.items() if k not in ("held", "deferred")}
            payload["deferred"] = sorted(deferred)
            tx.execute(
                "INSERT INTO work_items (env_id, dispatch_id, payload, available_at, attempts, done) "
                "VALUES (?, ?, ?, ?, 0, 0)",
                (
                    self.recipients.env_id,
                    self.recipients.dispatch_id,
                    dumps(payload),
                    (self.recipients.now_ms // 60_000 + 1) * 60_000,
                ),
            )
        return reserved


class RecordRecipients(JobDefaults):
    """Several recipients' outcomes in one job (a gateway batch answers for all of them at once),
    and the end of the work item when this was its last batch."""

    profile_keys = ()

    def __init__(self, *, records: list[RecordRecipient], finish: FinishItem | None = None) -> None:
        self.records = records
        self.finish = finish

    def run(self, tx: Tx) -> None:
        for record in self.records:
            record.run(tx)
        if self.finish is not None:
            self.finish.run(tx)


class OutcomeRow(NamedTuple):
    """A recipient's single outcome, as the record stage stores it."""

    idx: int
    user_key: str
    outcome: str
    reason: str | None


class RecordOutcomes(JobDefaults):
    """The record stage: one batch's delivery results and its recipients' outcomes, in a few statements
    for the whole batch, and the end of the work item with its last batch.

    An outcome is stored (and counted) only for a recipient that has none yet; a recipient that did not
    get its message leaves the frequency caps and the day's paid count it reserved.
    """

    profile_keys = ()

    def __init__(
        self,
        *,
        env_id: int,
        dispatch_id: str,
        now_ms: int,
        outcomes: list[OutcomeRow],
        results: list[DeliveryResult],
        finish: FinishItem | None = None,
    ) -> None:
        self.env_id = env_id
        self.dispatch_id = dispatch_id
        self.now_ms = now_ms
        self.outcomes = outcomes
        self.results = results
        self.finish = finish

    def __getstate__(self) -> dict[str, Any]:
        # As ``PrepareRecipients``: the batch's rows as plain tuples on their way to the writer.
        return {
            **self.__dict__,
            "outcomes": [tuple(o) for o in self.outcomes],
            "results": [msgspec.structs.astuple(r) for r in self.results],
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(
            state,
            outcomes=list(map(OutcomeRow._make, state["outcomes"])),
            results=[DeliveryResult(*r) for r in state["results"]],
        )

    def run(self, tx: Tx) -> None:
        now = self.now_ms
        for part in _chunks(self.results):
            # One statement per chunk, the results as its row source.
            source, params = tx.db.row_source(
                _RESULT_TYPES,
                [(r.delivery_id, r.status, r.provider, r.provider_message_id, r.error_code, r.attempts) for r in part],
            )
            tx.execute(
                "UPDATE deliveries SET status = v.column2, provider = v.column3, provider_message_id = v.column4, "
                f"error_code = v.column5, attempts = v.column6, updated_at = ? FROM {source} "
                "WHERE deliveries.id = v.column1",
                [now, *params],
            )
        tx.executemany(
            "UPDATE push_tokens SET status = 'RETIRED', retired_reason = ?, updated_at = ? "
            "WHERE env_id = ? AND token = ?",
            [(r.error_code, now, self.env_id, r.token) for r in self.results if r.retire],
        )
        if self.outcomes:
            self._outcomes(tx)
        if self.finish is not None:
            self.finish.run(tx)

    def _outcomes(self, tx: Tx) -> None:
        now = self.now_ms
        among, params = tx.db.any_of("idx", (o.idx for o in self.outcomes), "integer")
        # Locked (PostgreSQL) so that a worker recording the same recipients at once waits, then sees them set.
        still_open = {
            int(row.idx)
            for row in _fetchall_as(
                tx,
                f"SELECT idx FROM recipients WHERE dispatch_id = ? AND outcome IS NULL AND {among} "
                "ORDER BY idx FOR UPDATE",
                (self.dispatch_id, *params),
                _Idx,
            )
        }
        settled = [o for o in self.outcomes if o.idx in still_open]
        for part in _chunks(settled):
            source, params = tx.db.row_source(_OUTCOME_TYPES, [(o.idx, o.outcome, o.reason) for o in part])
            tx.execute(
                f"UPDATE recipients SET outcome = v.column2, reason = v.column3, updated_at = ? FROM {source} "
                "WHERE recipients.dispatch_id = ? AND recipients.idx = v.column1 AND recipients.outcome IS NULL",
                [now, *params, self.dispatch_id],
            )
        counts: dict[tuple[str, str | None], int] = {}
        for o in settled:
            counts[(o.outcome, o.reason)] = counts.get((o.outcome, o.reason), 0) + 1
        for (outcome, reason), n in counts.items():
            count_outcome(tx, dispatch_id=self.dispatch_id, outcome=outcome, reason=reason, n=n)
        for o in self.outcomes:
            if o.outcome not in (Outcome.SENT, Outcome.UNKNOWN):
                self._release(tx, o)

    def _release(self, tx: Tx, o: OutcomeRow) -> None:
        # A push that never arrived does not count against the user's frequency caps (a message
        # the gateway may have taken, UNKNOWN, keeps counting, and keeps its paid count).
        tx.execute(
            "DELETE FROM marketing_sends WHERE env_id = ? AND user_key = ? AND dispatch_id = ?",
            (self.env_id, o.user_key, self.dispatch_id),
        )
        # A message the gateway refused is not charged: it leaves the paid count of the day its
        # delivery was counted on, once (whoever clears the delivery's mark releases it).
        for paid in _fetchall_as(
            tx,
            "SELECT id, paid_day FROM deliveries WHERE dispatch_id = ? AND recipient_idx = ? AND paid_day IS NOT NULL",
            (self.dispatch_id, o.idx),
            _PaidDelivery,
        ):
            if tx.fetchone(
                "UPDATE deliveries SET paid_day = NULL WHERE id = ? AND paid_day IS NOT NULL RETURNING id",
                (paid.id,),
            ):
                tx.execute(
                    "UPDATE paid_messages SET count = count - 1 WHERE env_id = ? AND day = ? AND count > 0",
                    (self.env_id, paid.paid_day),
                )


class HoldRecipients(JobDefaults):
    """Night time: hand these recipients to a new work item that becomes available at release."""

    profile_keys = ()

    def __init__(
        self,
        *,
        env_id: int,
        dispatch_id: str,
        idxs: list[int],
        release_ms: int,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        self.env_id = env_id
        self.dispatch_id = dispatch_id
        self.idxs = idxs
        self.release_ms = release_ms
        # The holding item's payload (a test send's mark), carried to the item that takes the recipients.
        self.payload = payload or {}

    def run(self, tx: Tx) -> None:
        carried = {k: v for k, v in self.payload.items() if k not in ("held", "deferred")}
        tx.execute(
            "INSERT INTO work_items (env_id, dispatch_id, payload, available_at, attempts, done) "
            "VALUES (?, ?, ?, ?, 0, 0)",
            (self.env_id, self.dispatch_id, dumps({**carried, "held": sorted(self.idxs)}), self.release_ms),
        )
        tx.execute("UPDATE dispatches SET status = 'SCHEDULED' WHERE id = ?", (self.dispatch_id,))


class FinishItem(JobDefaults):
    profile_keys = ()

    def __init__(self, *, item_id: int, dispatch_id: str, now_ms: int, fail_reason: str | None = None) -> None:
        self.item_id = item_id
        self.dispatch_id = dispatch_id
        self.now_ms = now_ms
        self.fail_reason = fail_reason

    def run(self, tx: Tx) -> str:
        if self.fail_reason is not None:
            self._fail_open_recipients(tx, self.fail_reason)
        tx.execute("UPDATE work_items SET done = 1, lease_owner = NULL WHERE id = ?", (self.item_id,))
        pending = _fetchone_as(
            tx, "SELECT COUNT(*) FROM work_items WHERE dispatch_id = ? AND done = 0", (self.dispatch_id,), _Count
        )
        open_recipients = _fetchone_as(
            tx, "SELECT COUNT(*) FROM recipients WHERE dispatch_id = ? AND outcome IS NULL", (self.dispatch_id,), _Count
        )
        if (pending and pending.n) or (open_recipients and open_recipients.n):
            return "RUNNING"
        tx.execute(
            "UPDATE dispatches SET status = 'COMPLETED', completed_at = ? WHERE id = ? AND completed_at IS NULL",
            (self.now_ms, self.dispatch_id),
        )
        return "COMPLETED"

    def _fail_open_recipients(self, tx: Tx, reason: str) -> None:
        # Recipients never prepared (the item failed before) get their row now, so that each
        # one ends with exactly one outcome; deliveries left pending fail with them.
        row = _fetchone_as(tx, "SELECT env_id, users FROM dispatches WHERE id = ?", (self.dispatch_id,), _DispatchUsers)
        if row is not None:
            tx.executemany(
                "INSERT INTO recipients (dispatch_id, idx, env_id, user_id, device_id, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    (
                        self.dispatch_id,
                        i,
                        row.env_id,
                        _storable(u.get("userId")),
                        _storable(u.get("deviceId")),
                        self.now_ms,
                    )
                    for i, u in enumerate(_decode(row.users))
                ],
            )
        tx.execute(
            "UPDATE deliveries SET status = 'FAILED', error_code = ?, updated_at = ? WHERE dispatch_id = ? "
            "AND status = 'PENDING'",
            (reason, self.now_ms, self.dispatch_id),
        )
        tx.execute(
            "DELETE FROM marketing_sends WHERE dispatch_id = ? AND user_key NOT IN "
            "(SELECT user_key FROM deliveries WHERE dispatch_id = ? AND status = 'SENT')",
            (self.dispatch_id, self.dispatch_id),
        )
        failed = tx.fetchall(
            "UPDATE recipients SET outcome = 'FAILED', reason = ?, updated_at = ? WHERE dispatch_id = ? "
            "AND outcome IS NULL RETURNING idx",
            (reason, self.now_ms, self.dispatch_id),
        )
        count_outcome(tx, dispatch_id=self.dispatch_id, outcome="FAILED", reason=reason, n=len(failed))


def _storable(ident: object) -> str | None:
    """An identifier both engines can store (triggers accepted before the identifier rule may hold NUL)."""
    return ident.replace("\x00", "") if isinstance(ident, str) else None


class RetryItem(JobDefaults):
    """Hand a failed work item back, to be claimed again once ``available_ms`` has passed."""

    profile_keys = ()

    def __init__(self, *, item_id: int, owner: str, available_ms: int) -> None:
        self.item_id = item_id
        self.owner = owner
        self.available_ms = available_ms

    def run(self, tx: Tx) -> None:
        tx.execute(
            "UPDATE work_items SET lease_owner = NULL, lease_until = NULL, available_at = ? "
            "WHERE id = ? AND lease_owner = ? AND done = 0",
            (self.available_ms, self.item_id, self.owner),
        )


class InboxRecord(JobDefaults):
    """One message in the sandbox inbox; with ``once``, an entry for the same delivery is reused."""

    profile_keys = ()

    def __init__(
        self, *, env_id: int, delivery_id: int, token: str, payload: str, now_ms: int, once: bool = False
    ) -> None:
        self.env_id = env_id
        self.delivery_id = delivery_id
        self.token = token
        self.payload = payload
        self.now_ms = now_ms
        self.once = once

    def run(self, tx: Tx) -> int:
        if self.once:
            found = _fetchone_as(
                tx, "SELECT id FROM inbox WHERE env_id = ? AND delivery_id = ?", (self.env_id, self.delivery_id), _Id
            )
            if found is not None:
                return int(found.id)
        row = _fetchone_as(
            tx,
            "INSERT INTO inbox (env_id, delivery_id, token, payload, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
            (self.env_id, self.delivery_id, self.token, self.payload, self.now_ms),
            _Id,
        )
        assert row is not None
        return int(row.id)


# -- Kakao and SMS ---------------------------------------------------------------------------------------


class RecordReports(JobDefaults):
    """A gateway's final word on accepted messages: delivered (with the time) or not, with its code."""

    profile_keys = ()

    def __init__(self, *, env_id: int | None, provider: str, reports: list[DeliveryReport], now_ms: int = 0) -> None:
        self.env_id = env_id
        self.provider = provider
        self.reports = reports
        self.now_ms = now_ms

    def run(self, tx: Tx) -> int:
        now = self.now_ms or tx.now_ms
        updated = 0
        for report in self.reports:
            sql = (
                "UPDATE deliveries SET delivered_at = ?, report_code = ?, updated_at = ? WHERE provider = ? "
                "AND provider_message_id = ? AND status = 'SENT' AND report_code IS NULL"
            )
            params: tuple[Any, ...] = (
                now if report.delivered else None,
                report.code[:32],
                now,
                self.provider,
                report.provider_message_id,
            )
            if self.env_id is not None:
                sql += " AND env_id = ?"
                params += (self.env_id,)
            updated += int(tx.execute(sql, params).rowcount)
        return updated


def awaiting_reports(
    conn: Connection, db: Database, *, provider: str, since_ms: int, limit: int = 1000
) -> list[tuple[int, str]]:
    """``(env_id, provider message id)`` of accepted messages whose final result is still unknown."""
    rows = db.fetchall_as(
        conn,
        "SELECT env_id, provider_message_id FROM deliveries WHERE provider = ? AND status = 'SENT' "
        "AND report_code IS NULL AND channel <> 'push' AND created_at >= ? AND provider_message_id IS NOT NULL "
        "ORDER BY id LIMIT ?",
        (provider, since_ms, limit),
        _Awaiting,
    )
    return [(int(r.env_id), str(r.provider_message_id)) for r in rows]


def users_by_phone(conn: Connection, db: Database, *, env_id: int, phone_hashes: list[str]) -> list[str]:
    if not phone_hashes:
        return []
    among, params = db.any_of("phone_hmac", phone_hashes)
    rows = db.fetchall_as(
        conn,
        f"SELECT user_id FROM phone_index WHERE env_id = ? AND {among} ORDER BY user_id",
        (env_id, *params),
        _UserId,
    )
    return sorted({str(r.user_id) for r in rows})
