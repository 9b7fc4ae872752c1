"""Dispatches: trigger acceptance (the dispatch and its work item in one transaction), and dispatch reads.

The other half of a dispatch's life, claiming its work and recording each delivery, is
``magpie.store.deliveries``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from magpie.errors import CampaignNotFound, IdempotencyKeyReused, NotFound
from magpie.store.db import Connection, Database
from magpie.store.stats import add_count
from magpie.store.transaction import Tx
from magpie.store.writer import JobDefaults

_decode = msgspec.json.decode


class _CampaignState(NamedTuple):
    status: str
    channel: str


class _Earlier(NamedTuple):
    """A dispatch accepted before under the same idempotency key."""

    id: str
    campaign_key: int
    users: str


class _DispatchHead(NamedTuple):
    id: str
    exec_id: int
    campaign_key: int
    status: str
    requested: int
    created_at: int
    completed_at: int | None
    users: str
    channel: str


class RecipientOutcome(NamedTuple):
    """A recipient row as the dispatch view and the CSV export read it."""

    idx: int
    user_id: str | None
    device_id: str | None
    outcome: str | None
    reason: str | None
    updated_at: int


class _DeliveryDetail(NamedTuple):
    recipient_idx: int
    id: int
    device_id: str | None
    provider: str
    status: str
    provider_message_id: str | None
    error_code: str | None
    attempts: int
    updated_at: int
    kind: str | None
    size_bytes: int | None
    delivered_at: int | None
    report_code: str | None


class _InboxEntry(NamedTuple):
    id: int
    delivery_id: int
    token: str
    payload: str
    created_at: int


def new_dispatch_ids() -> tuple[str, int]:
    """A dispatch UUID and the 52-bit number Hackle's SDKs carry for it."""
    value = uuid.uuid4()
    return str(value), value.int >> 76


def _campaign_active(tx: Tx, env_id: int, key: int, channel: str) -> bool:
    memo_key = ("campaign-active", env_id, key, channel)
    found = tx.memo.get(memo_key)
    if found is None:
        row = tx.fetchone("SELECT status, channel FROM campaigns WHERE env_id = ? AND key = ?", (env_id, key))
        state = None if row is None else _CampaignState(*row)
        found = tx.memo[memo_key] = state is not None and state.status == "ACTIVE" and state.channel == channel
    return bool(found)


class AcceptTrigger(JobDefaults):
    """Write a dispatch and its work item in the same transaction (the transactional outbox)."""

    __slots__ = ("campaign_key", "channel", "env_id", "idempotency_key", "key_hash", "requested", "users")
    profile_keys = ()

    def __init__(
        self,
        *,
        key_hash: str | None,
        env_id: int,
        campaign_key: int,
        users: str,
        requested: int,
        idempotency_key: str | None,
        channel: str = "push",
    ) -> None:
        self.channel = channel
        self.key_hash = key_hash
        self.env_id = env_id
        self.campaign_key = campaign_key
        self.users = users
        self.requested = requested
        self.idempotency_key = idempotency_key

    def run(self, tx: Tx) -> tuple[str, bool]:
        """Returns ``(dispatch_id, created)``. ``key_hash`` None: triggered by an operator, not an API key."""
        if self.key_hash is not None:
            tx.check_key(self.key_hash, self.env_id)
        if self.idempotency_key is not None:
            row = tx.fetchone(
                "SELECT id, campaign_key, users FROM dispatches WHERE env_id = ? AND idempotency_key = ?",
                (self.env_id, self.idempotency_key),
            )
            if row is not None:
                earlier = _Earlier(*row)
                # Kept as long as the dispatch: a repeat answers the original, a different body is refused.
                if earlier.campaign_key != self.campaign_key or earlier.users != self.users:
                    raise IdempotencyKeyReused()
                return str(earlier.id), False
        if not _campaign_active(tx, self.env_id, self.campaign_key, self.channel):
            raise CampaignNotFound(channel=self.channel)
        dispatch_id, exec_id = new_dispatch_ids()
        tx.execute(
            "INSERT INTO dispatches (id, exec_id, env_id, campaign_key, status, users, requested, idempotency_key, "
            "created_at, channel) VALUES (?, ?, ?, ?, 'ACCEPTED', ?, ?, ?, ?, ?)",
            (
                dispatch_id,
                exec_id,
                self.env_id,
                self.campaign_key,
                self.users,
                self.requested,
                self.idempotency_key,
                tx.now_ms,
                self.channel,
            ),
        )
        tx.execute(
            "INSERT INTO work_items (env_id, dispatch_id, payload, available_at, attempts, done) "
            "VALUES (?, ?, '{}', ?, 0, 0)",
            (self.env_id, dispatch_id, tx.now_ms),
        )
        key = self.campaign_key
        add_count(tx, env_id=self.env_id, campaign_key=key, at_ms=tx.now_ms, metric="REQUESTED", n=self.requested)
        return dispatch_id, True


# -- reads ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    delivery_id: int
    device_id: str | None
    provider: str
    status: str
    provider_message_id: str | None
    error_code: str | None
    attempts: int
    updated_at: int
    # Kakao and SMS: the message type, its size in EUC-KR bytes, and the gateway's final report
    # (``delivered`` None while none came).
    type: str | None = None
    bytes: int | None = None
    delivered: bool | None = None
    delivered_at: int | None = None
    report_code: str | None = None


@dataclass(frozen=True, slots=True)
class RecipientRow:
    user_id: str | None
    device_id: str | None
    outcome: str
    reason: str | None
    deliveries: list[DeliveryRow]


@dataclass(frozen=True, slots=True)
class DispatchRow:
    dispatch_id: str
    execution_id: int
    channel: str
    campaign_key: int
    status: str
    requested: int
    created_at: int
    completed_at: int | None
    counts: dict[str, int]  # SENT, FAILED, EXCLUDED, PENDING (+ UNKNOWN for Kakao and SMS)
    excluded: dict[str, int]  # by reason
    failures: dict[str, int]  # FAILED recipients by reason
    recipients: list[RecipientRow] | None  # None when not asked for


def dispatch_view(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    dispatch_id: str,
    recipients: bool = True,
    channel: str | None = None,
) -> DispatchRow:
    """A dispatch: status, counts by outcome and reason, and each recipient's outcome and deliveries.

    ``channel`` narrows the lookup to dispatches of that channel (each channel's endpoint sees its own).
    """
    try:
        uuid.UUID(dispatch_id)
    except ValueError:
        raise NotFound(f"no dispatch {dispatch_id[:64]!r} in this environment") from None
    row = db.fetchone_as(
        conn,
        "SELECT id, exec_id, campaign_key, status, requested, created_at, completed_at, users, channel "
        "FROM dispatches WHERE id = ? AND env_id = ?",
        (dispatch_id, env_id),
        _DispatchHead,
    )
    if row is None or (channel is not None and row.channel != channel):
        raise NotFound(f"no {channel + ' ' if channel else ''}dispatch {dispatch_id} in this environment")
    outcome_rows = db.fetchall_as(
        conn,
        "SELECT idx, user_id, device_id, outcome, reason, updated_at FROM recipients "
        "WHERE dispatch_id = ? ORDER BY idx",
        (dispatch_id,),
        RecipientOutcome,
    )
    delivery_rows = db.fetchall_as(
        conn,
        "SELECT recipient_idx, id, device_id, provider, status, provider_message_id, error_code, attempts, updated_at, "
        "kind, size_bytes, delivered_at, report_code FROM deliveries WHERE dispatch_id = ? ORDER BY recipient_idx, id",
        (dispatch_id,),
        _DeliveryDetail,
    )
    users = _decode(row.users)
    counts = {"SENT": 0, "FAILED": 0, "EXCLUDED": 0, "PENDING": 0}
    if row.channel != "push":
        # A gateway that may have taken a message but would not say so leaves its recipient UNKNOWN.
        counts["UNKNOWN"] = 0
    excluded: dict[str, int] = {}
    failures: dict[str, int] = {}
    by_idx = {r.idx: r for r in outcome_rows}
    deliveries: dict[int, list[DeliveryRow]] = {}
    # Kakao and SMS deliveries show their type, size and the gateway's report; push deliveries have none.
    phone = row.channel != "push"
    for d in delivery_rows:
        reported = phone and d.report_code is not None
        common = DeliveryRow(
            delivery_id=d.id,
            device_id=d.device_id,
            provider=d.provider,
            status=d.status,
            provider_message_id=d.provider_message_id,
            error_code=d.error_code,
            attempts=d.attempts,
            updated_at=d.updated_at,
            type=d.kind if phone else None,
            bytes=d.size_bytes if phone else None,
            delivered=(d.delivered_at is not None) if reported else None,
            delivered_at=d.delivered_at if phone else None,
            report_code=d.report_code if phone else None,
        )
        deliveries.setdefault(d.recipient_idx, []).append(common)
    listed: list[RecipientRow] = []
    for idx, user in enumerate(users):
        outcome_row = by_idx.get(idx)
        outcome = outcome_row.outcome if outcome_row is not None and outcome_row.outcome else "PENDING"
        reason = outcome_row.reason if outcome_row is not None else None
        counts[outcome] += 1
        if outcome == "EXCLUDED" and reason:
            excluded[reason] = excluded.get(reason, 0) + 1
        elif outcome == "FAILED":
            failures[reason or "UNKNOWN"] = failures.get(reason or "UNKNOWN", 0) + 1
        if recipients:
            listed.append(
                RecipientRow(user.get("userId"), user.get("deviceId"), outcome, reason, deliveries.get(idx, []))
            )
    return DispatchRow(
        dispatch_id=row.id,
        execution_id=row.exec_id,
        channel=row.channel,
        campaign_key=row.campaign_key,
        status=row.status,
        requested=row.requested,
        created_at=row.created_at,
        completed_at=row.completed_at,
        counts=counts,
        excluded=excluded,
        failures=failures,
        recipients=listed if recipients else None,
    )


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    delivery_id: int
    token: str
    message: dict[str, Any]
    created_at: int


def inbox(conn: Connection, db: Database, *, env_id: int, limit: int = 50, after: int | None = None) -> list[InboxRow]:
    """The sandbox provider's messages, newest first; ``after`` pages on from an id."""
    sql = "SELECT id, delivery_id, token, payload, created_at FROM inbox WHERE env_id = ?"
    params: list[Any] = [env_id]
    if after is not None:
        sql += " AND id < ?"
        params.append(after)
    rows = db.fetchall_as(conn, sql + " ORDER BY id DESC LIMIT ?", (*params, limit), _InboxEntry)
    return [InboxRow(r.id, r.delivery_id, r.token, _decode(r.payload), r.created_at) for r in rows]
