"""One writer transaction: a cache of the profiles it touched and the changes to flush.

Profiles are read once per batch (locked ``FOR UPDATE`` on PostgreSQL, in a stable order,
so concurrent processes serialise per profile instead of losing updates), changed in memory
by the jobs in order, and written back once at the end. Each job's changes are journalled,
so a job that fails validation half-way is undone without touching the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from magpie.errors import InvalidApiKey
from magpie.store.db import ConcurrentCreation, Connection, Cursor, Database, Row

ProfileKey = tuple[int, str, str]

_decode = msgspec.json.decode
_encode = msgspec.json.encode

_COLUMNS = "env_id, kind, ident, properties, crm, phone_enc, linked_user, created_at, updated_at"


def dumps(value: Any) -> str:
    return _encode(value).decode()


# Rows travel to PostgreSQL as one JSON document: building it is one C call (msgspec), where
# array parameters are adapted element by element in Python.
_RECORD = "x(e int, k text, i text, p text, c text, h text, l text, ca bigint, ua bigint)"
_RECORD_KEYS = ("e", "k", "i", "p", "c", "h", "l", "ca", "ua")


def _records(rows: Sequence[Sequence[Any]]) -> str:
    """``(env_id, kind, ident, properties, crm, phone_enc, linked_user, created_at, updated_at)`` rows."""
    return dumps(
        [
            dict(zip(_RECORD_KEYS, (*r[:5], None if r[5] is None else bytes(r[5]).hex(), *r[6:]), strict=True))
            for r in rows
        ]
    )


class ProfileRow:
    """A user (kind ``u``) or device (kind ``d``) profile as stored.

    JSON columns are decoded on first use and re-encoded only when changed: most rows a
    batch touches (e.g. an already-linked device) are read for one field or not at all.
    """

    __slots__ = (
        "_crm",
        "_crm_raw",
        "_properties",
        "_props_raw",
        "created_at",
        "dirty",
        "env_id",
        "exists",
        "ident",
        "kind",
        "linked_user",
        "phone_enc",
        "updated_at",
    )

    def __init__(self, env_id: int, kind: str, ident: str, now_ms: int) -> None:
        self.env_id = env_id
        self.kind = kind
        self.ident = ident
        self._properties: dict[str, Any] | None = {}
        self._props_raw: str | None = "{}"
        self._crm: dict[str, Any] | None = {}
        self._crm_raw: str | None = "{}"
        self.phone_enc: bytes | None = None
        self.linked_user: str | None = None
        self.created_at = now_ms
        self.updated_at = now_ms
        self.exists = False
        self.dirty = False

    @classmethod
    def from_row(cls, row: Row) -> ProfileRow:
        self = cls(row[0], row[1], row[2], row[7])
        self._properties, self._props_raw = None, row[3]
        self._crm, self._crm_raw = None, row[4]
        self.phone_enc = bytes(row[5]) if row[5] is not None else None
        self.linked_user = row[6]
        self.updated_at = row[8]
        self.exists = True
        return self

    @property
    def properties(self) -> dict[str, Any]:
        if self._properties is None:
            self._properties = _decode(self._props_raw or "{}")
        return self._properties

    @properties.setter
    def properties(self, value: dict[str, Any]) -> None:
        self._properties, self._props_raw = value, None

    @property
    def crm(self) -> dict[str, Any]:
        if self._crm is None:
            self._crm = _decode(self._crm_raw or "{}")
        return self._crm

    @crm.setter
    def crm(self, value: dict[str, Any]) -> None:
        self._crm, self._crm_raw = value, None

    def encoded(self) -> tuple[str, str]:
        """The JSON columns, encoding only what changed since the row was read."""
        if self._props_raw is None:
            self._props_raw = dumps(self._properties)
        if self._crm_raw is None:
            self._crm_raw = dumps(self._crm)
        return self._props_raw, self._crm_raw

    @property
    def key(self) -> ProfileKey:
        return (self.env_id, self.kind, self.ident)


_MUTABLE = ("_properties", "_props_raw", "_crm", "_crm_raw", "phone_enc", "linked_user", "dirty")


class Tx:
    """The state of one writer transaction, handed to every job in the batch."""

    def __init__(self, *, db: Database, conn: Connection, secret: Any = None, now_ms: int | None = None) -> None:
        self.db = db
        self.conn = conn
        self.secret = secret
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self.profiles: dict[ProfileKey, ProfileRow] = {}
        self._keys: dict[str, int | None] = {}
        self._journal: list[tuple[ProfileRow, tuple[Any, ...]]] | None = None
        self.after_commit: list[Any] = []
        # Per-transaction lookups jobs share (e.g. campaign status), valid until commit.
        self.memo: dict[Any, Any] = {}

    # -- SQL pass-through ------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(self.conn, sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(self.conn, sql, rows)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self.db.fetchone(self.conn, sql, params)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.db.fetchall(self.conn, sql, params)

    # -- authentication, re-checked inside the transaction ---------------------------------

    def key_env(self, key_hash: str) -> int | None:
        """The environment of a live API key, checked once per batch (revocations bite at once)."""
        if key_hash not in self._keys:
            row = self.fetchone("SELECT env_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
            self._keys[key_hash] = None if row is None else int(row[0])
        return self._keys[key_hash]

    def check_key(self, key_hash: str, env_id: int) -> None:
        """Re-check a cached key inside the transaction; the writer then drops a revoked key from caches."""
        if self.key_env(key_hash) != env_id:
            raise InvalidApiKey()

    # -- profiles ---------------------------------------------------------------------------

    def prefetch(self, jobs: Iterable[object]) -> None:
        wanted: set[ProfileKey] = set()
        for job in jobs:
            keys = getattr(job, "profile_keys", None)
            if keys:
                wanted.update(keys)
        if wanted:
            self._load(sorted(wanted))

    def _load(self, keys: list[ProfileKey]) -> None:
        missing = [k for k in keys if k not in self.profiles]
        if not missing:
            return
        groups: dict[tuple[int, str], list[str]] = {}
        for env_id, kind, ident in missing:
            groups.setdefault((env_id, kind), []).append(ident)
        for (env_id, kind), idents in groups.items():
            for start in range(0, len(idents), 500):
                chunk = idents[start : start + 500]
                if self.db.is_sqlite:
                    marks = ",".join("?" * len(chunk))
                    rows = self.fetchall(
                        f"SELECT {_COLUMNS} FROM profiles WHERE env_id = ? AND kind = ? AND ident IN ({marks})",
                        (env_id, kind, *chunk),
                    )
                else:
                    # One primary-key probe per id, locked in the sorted order of the ids: the plan
                    # does not depend on table statistics (a young table has none), and concurrent
                    # batches take their locks in the same order.
                    rows = self.fetchall(
                        f"SELECT p.* FROM unnest(?::text[]) AS v(ident) CROSS JOIN LATERAL ("
                        f"SELECT {_COLUMNS} FROM profiles WHERE env_id = ? AND kind = ? AND ident = v.ident "
                        "FOR UPDATE) AS p",
                        (chunk, env_id, kind),
                    )
                for row in rows:
                    profile = ProfileRow.from_row(row)
                    self.profiles[profile.key] = profile
        for key in missing:
            if key not in self.profiles:
                self.profiles[key] = ProfileRow(key[0], key[1], key[2], self.now_ms)

    def profile(self, env_id: int, kind: str, ident: str) -> ProfileRow:
        key = (env_id, kind, ident)
        row = self.profiles.get(key)
        if row is None:
            self._load([key])
            row = self.profiles[key]
        return row

    def peek_profile(self, env_id: int, kind: str, ident: str) -> ProfileRow | None:
        """A profile if it exists, without creating or locking anything for it."""
        key = (env_id, kind, ident)
        row = self.profiles.get(key)
        if row is not None:
            return row if row.exists or row.dirty else None
        found = self.fetchone(f"SELECT {_COLUMNS} FROM profiles WHERE env_id = ? AND kind = ? AND ident = ?", key)
        if found is None:
            return None
        return ProfileRow.from_row(found)

    def update(self, row: ProfileRow, **changes: Any) -> None:
        """Change a cached profile; journalled so a failing job can be undone."""
        if self._journal is not None:
            self._journal.append((row, tuple(getattr(row, name) for name in _MUTABLE)))
        for name, value in changes.items():
            setattr(row, name, value)
        row.dirty = True

    def begin_job(self) -> None:
        self._journal = []

    def undo_job(self) -> None:
        journal = self._journal or []
        for row, state in reversed(journal):
            for name, value in zip(_MUTABLE, state, strict=True):
                setattr(row, name, value)
        self._journal = None

    def end_job(self) -> None:
        self._journal = None

    def flush(self) -> None:
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for row in self.profiles.values():
            if not row.dirty:
                continue
            props_json, crm_json = row.encoded()
            values = (props_json, crm_json, row.phone_enc, row.linked_user, self.now_ms)
            if row.exists:
                updates.append((*values, *row.key))
            else:
                inserts.append((*row.key, *values[:4], row.created_at, self.now_ms))
            row.exists = True
            row.dirty = False
            row.updated_at = self.now_ms
        if self.db.is_sqlite:
            self.executemany(f"INSERT INTO profiles ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", inserts)
            self.executemany(
                "UPDATE profiles SET properties = ?, crm = ?, phone_enc = ?, linked_user = ?, updated_at = ? "
                "WHERE env_id = ? AND kind = ? AND ident = ?",
                updates,
            )
            return
        if inserts:
            # New profiles are created here, optimistically: if another process created one of
            # them since we looked, ON CONFLICT skips it and the whole batch runs again, this
            # time reading (and locking) what the other process wrote. Nothing is overwritten.
            created = self.fetchall(
                f"INSERT INTO profiles ({_COLUMNS}) SELECT e, k, i, p, c, decode(h, 'hex'), l, ca, ua "
                f"FROM json_to_recordset(?::json) AS {_RECORD} ON CONFLICT DO NOTHING RETURNING ident",
                (_records(inserts),),
            )
            if len(created) != len(inserts):
                raise ConcurrentCreation(f"{len(inserts) - len(created)} profile(s) were created concurrently")
        if updates:
            self.execute(
                "UPDATE profiles AS t SET properties = x.p, crm = x.c, phone_enc = decode(x.h, 'hex'), "
                f"linked_user = x.l, updated_at = x.ua FROM json_to_recordset(?::json) AS {_RECORD} "
                "WHERE t.env_id = x.e AND t.kind = x.k AND t.ident = x.i",
                (_records([(*u[5:], *u[:4], 0, u[4]) for u in updates]),),
            )
