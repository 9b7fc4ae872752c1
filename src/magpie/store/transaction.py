"""One writer transaction: a cache of the profiles it touched and the changes to flush.

Profiles are read once per batch (locked ``FOR UPDATE`` on PostgreSQL, in a stable order,
so concurrent processes serialise per profile instead of losing updates), changed in memory
by the jobs in order, and written back once at the end. Each job's changes are journalled,
so a job that fails validation half-way is undone without touching the others.

On PostgreSQL a batch costs two round trips whatever its size: ``open`` sends BEGIN, the
batch's API keys and its profiles (one statement for every kind) in one pipeline, and
``commit`` sends the new profiles, the changed ones and COMMIT in another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
import psycopg

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


def _records(rows: Sequence[Sequence[Any]]) -> str:
    """``(env_id, kind, ident, properties, crm, phone_enc, linked_user, created_at, updated_at)`` rows."""
    return dumps([_record(*r) for r in rows])


def _record(
    env_id: int,
    kind: str,
    ident: str,
    properties: str,
    crm: str,
    phone_enc: bytes | None,
    linked_user: str | None,
    created_at: int,
    updated_at: int,
) -> dict[str, Any]:
    """One row of ``_records`` under the names of ``_RECORD``."""
    phone = None if phone_enc is None else bytes(phone_enc).hex()
    return {
        "e": env_id,
        "k": kind,
        "i": ident,
        "p": properties,
        "c": crm,
        "h": phone,
        "l": linked_user,
        "ca": created_at,
        "ua": updated_at,
    }


# One primary-key probe per key, locked in the order of the (sorted) keys: the plan does not
# depend on table statistics (a young table has none), and concurrent batches lock alike.
# The row's ctid comes along: the batch holds the row's lock until it commits, so the update
# finds the row again by ctid, with no index descent and no join to plan.
_LOCK_PROFILES = (
    "SELECT p.* FROM json_to_recordset(?::json) AS v(e int, k text, i text) CROSS JOIN LATERAL ("
    f"SELECT {_COLUMNS}, ctid::text FROM profiles WHERE env_id = v.e AND kind = v.k AND ident = v.i "
    "FOR UPDATE) AS p"
)
_PG_LOCK_PROFILES = _LOCK_PROFILES.replace("?", "%s")
_PG_KEYS = "SELECT key_hash, env_id FROM api_keys WHERE key_hash = ANY(%s::text[]) AND revoked_at IS NULL"
_PG_INSERT = (
    f"INSERT INTO profiles ({_COLUMNS}) SELECT e, k, i, p, c, decode(h, 'hex'), l, ca, ua "
    f"FROM json_to_recordset(%s::json) AS {_RECORD}"
)
_PG_UPDATE = (
    "UPDATE profiles AS t SET properties = x.p, crm = x.c, phone_enc = decode(x.h, 'hex'), "
    "linked_user = x.l, updated_at = x.ua "
    "FROM json_to_recordset(%s::json) AS x(t tid, p text, c text, h text, l text, ua bigint) "
    "WHERE t.ctid = ANY(%s::tid[]) AND t.ctid = x.t"
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
        "ctid",
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
        self.ctid: str | None = None  # where PostgreSQL holds the locked row (a batch-local handle)

    @classmethod
    def from_row(cls, row: Row) -> ProfileRow:
        """A profile read as ``_COLUMNS``, followed by its ctid when PostgreSQL locked it."""
        env_id, kind, ident, properties, crm, phone_enc, linked_user, created_at, updated_at, *ctid = row
        self = cls(env_id, kind, ident, created_at)
        self._properties, self._props_raw = None, properties
        self._crm, self._crm_raw = None, crm
        self.phone_enc = bytes(phone_enc) if phone_enc is not None else None
        self.linked_user = linked_user
        self.updated_at = updated_at
        self.exists = True
        if ctid:
            (self.ctid,) = ctid
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
        # Writes the jobs left for commit time (e.g. aggregated counters), run after the profiles.
        self.before_commit: list[Callable[[], None]] = []

    # -- SQL pass-through ------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(self.conn, sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(self.conn, sql, rows)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self.db.fetchone(self.conn, sql, params)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.db.fetchall(self.conn, sql, params)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.scalar(self.conn, sql, params)

    # -- authentication, re-checked inside the transaction ---------------------------------

    def key_env(self, key_hash: str) -> int | None:
        """The environment of a live API key, checked once per batch (revocations bite at once)."""
        if key_hash not in self._keys:
            env_id = self.scalar("SELECT env_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
            self._keys[key_hash] = None if env_id is None else int(env_id)
        return self._keys[key_hash]

    def check_key(self, key_hash: str, env_id: int) -> None:
        """Re-check a cached key inside the transaction; the writer then drops a revoked key from caches."""
        if self.key_env(key_hash) != env_id:
            raise InvalidApiKey()

    # -- profiles ---------------------------------------------------------------------------

    def _pg(self) -> psycopg.Connection[Any]:
        """The connection as psycopg's: the PostgreSQL path pipelines and chooses what to prepare."""
        conn = self.conn
        assert isinstance(conn, psycopg.Connection)
        return conn

    def open(self, *, key_hashes: Iterable[str], profile_keys: Iterable[ProfileKey]) -> None:
        """Begin the transaction and read what the batch's jobs declare up front: API keys and profiles."""
        wanted = set(profile_keys)
        key_hashes = set(key_hashes)
        if self.db.is_sqlite:
            self.db.begin(self.conn)
            if key_hashes:
                self._fetch_keys(sorted(key_hashes))
            if wanted:
                self._load(sorted(wanted))
            return
        conn = self._pg()
        # One round trip: BEGIN, the keys and the profiles travel together.
        with conn.pipeline():
            self.db.begin(conn)
            keys_cursor = conn.execute(_PG_KEYS, (text_array(sorted(key_hashes)),)) if key_hashes else None
            profiles_cursor = None
            if wanted:
                ordered = sorted(wanted)  # every batch locks in the same order: no deadlocks between processes
                profiles_cursor = conn.execute(
                    _PG_LOCK_PROFILES,
                    (_keys_json(ordered),),
                )
            if keys_cursor is not None:
                self._remember_keys(key_hashes, keys_cursor.fetchall())
            if profiles_cursor is not None:
                self._remember_profiles(ordered, profiles_cursor.fetchall())

    def _fetch_keys(self, key_hashes: list[str]) -> None:
        marks = ",".join("?" * len(key_hashes))
        rows = self.fetchall(
            f"SELECT key_hash, env_id FROM api_keys WHERE key_hash IN ({marks}) AND revoked_at IS NULL", key_hashes
        )
        self._remember_keys(key_hashes, rows)

    def _remember_keys(self, key_hashes: Iterable[str], rows: list[Row]) -> None:
        live = {str(found): int(env_id) for found, env_id in rows}
        for key_hash in key_hashes:
            self._keys[key_hash] = live.get(key_hash)

    def _remember_profiles(self, keys: list[ProfileKey], rows: list[Row]) -> None:
        for row in rows:
            profile = ProfileRow.from_row(row)
            self.profiles[profile.key] = profile
        for key in keys:
            if key not in self.profiles:
                self.profiles[key] = ProfileRow(*key, self.now_ms)

    def _load(self, keys: list[ProfileKey]) -> None:
        missing = [k for k in keys if k not in self.profiles]
        if not missing:
            return
        if not self.db.is_sqlite:
            self._remember_profiles(
                missing,
                self.db.fetchall(
                    self.conn,
                    _LOCK_PROFILES,
                    (_keys_json(missing),),
                ),
            )
            return
        groups: dict[tuple[int, str], list[str]] = {}
        for env_id, kind, ident in missing:
            groups.setdefault((env_id, kind), []).append(ident)
        rows: list[Row] = []
        for (env_id, kind), idents in groups.items():
            for start in range(0, len(idents), 500):
                chunk = idents[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows.extend(
                    self.fetchall(
                        f"SELECT {_COLUMNS} FROM profiles WHERE env_id = ? AND kind = ? AND ident IN ({marks})",
                        (env_id, kind, *chunk),
                    )
                )
        self._remember_profiles(missing, rows)

    def profile(self, env_id: int, kind: str, ident: str) -> ProfileRow:
        key = (env_id, kind, ident)
        row = self.profiles.get(key)
        if row is None:
            self._load([key])
            row = self.profiles[key]
        return row

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

    def commit(self) -> None:
        """Write back every changed profile, run ``before_commit`` and commit: one round trip on PostgreSQL."""
        if self.db.is_sqlite:
            self.flush()
            self._before_commit()
            self.db.commit(self.conn)
            return
        try:
            with self._pg().pipeline():
                self.flush()
                self._before_commit()
                self.db.commit(self.conn)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != "profiles_pkey":
                raise
            # Another process created a profile this batch meant to create: the batch runs again,
            # this time reading (and locking) what the other process wrote. Nothing is overwritten.
            raise ConcurrentCreation("a profile was created concurrently") from exc

    def _before_commit(self) -> None:
        for write in self.before_commit:
            write()

    def flush(self) -> None:
        inserts: list[tuple[Any, ...]] = []
        updates: list[ProfileRow] = []
        for row in self.profiles.values():
            if not row.dirty:
                continue
            if row.exists:
                updates.append(row)
            else:
                inserts.append((*row.key, *row.encoded(), row.phone_enc, row.linked_user, row.created_at, self.now_ms))
            row.exists = True
            row.dirty = False
            row.updated_at = self.now_ms
        if self.db.is_sqlite:
            self.executemany(f"INSERT INTO profiles ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", inserts)
            self.executemany(
                "UPDATE profiles SET properties = ?, crm = ?, phone_enc = ?, linked_user = ?, updated_at = ? "
                "WHERE env_id = ? AND kind = ? AND ident = ?",
                [(*r.encoded(), r.phone_enc, r.linked_user, self.now_ms, *r.key) for r in updates],
            )
            return
        conn = self._pg()
        if inserts:
            # New profiles are created here, optimistically: if another process created one of
            # them since we looked, the primary key refuses it and ``commit`` runs the batch again.
            conn.execute(_PG_INSERT, (_records(inserts),))
        if updates:
            # Planned for each batch (not prepared), knowing how many rows it names: a plan cached
            # while the table was young would scan the whole table for ever, as nothing
            # invalidates it without ANALYZE.
            records = dumps([_update_record(r, self.now_ms) for r in updates])
            conn.execute(_PG_UPDATE, (records, text_array([r.ctid for r in updates])), prepare=False)


def _keys_json(keys: list[ProfileKey]) -> str:
    return dumps([{"e": e, "k": k, "i": i} for e, k, i in keys])


def text_array(items: list[Any]) -> str:
    """A PostgreSQL array literal: one text parameter, where a list would be adapted item by item."""
    return "{" + ",".join('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in items) + "}"


def _update_record(row: ProfileRow, now_ms: int) -> dict[str, Any]:
    props_json, crm_json = row.encoded()
    phone = None if row.phone_enc is None else bytes(row.phone_enc).hex()
    return {"t": row.ctid, "p": props_json, "c": crm_json, "h": phone, "l": row.linked_user, "ua": now_ms}
