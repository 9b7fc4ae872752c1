"""Environments, API keys and admin tokens. Secrets are kept only as hashes."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, NamedTuple

import msgspec

from magpie.errors import Conflict, InvalidRequest, NotFound
from magpie.store.crypto import hash_secret, new_admin_token, new_api_key
from magpie.store.db import Connection, Database

# Matched whole (``fullmatch``): ``$`` would also match before a final newline ("nl\n").
_ENV_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _now() -> int:
    return int(time.time() * 1000)


class Environment(msgspec.Struct, frozen=True):
    id: int
    name: str
    timezone: str
    settings: dict[str, Any]
    created_at: int


def _environment(row: tuple[Any, ...]) -> Environment:
    env_id, name, timezone, settings, created_at = row
    return Environment(
        id=env_id, name=name, timezone=timezone, settings=msgspec.json.decode(settings), created_at=created_at
    )


_ENV_COLUMNS = "id, name, timezone, settings, created_at"


def create_environment(db: Database, *, name: str, timezone: str = "Asia/Seoul") -> Environment:
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
        raise InvalidRequest("environment names are 1-64 lowercase letters, digits, '-' or '_'")
    _check_timezone(timezone)
    now = _now()
    with db.transaction() as conn:
        if db.fetchone(conn, "SELECT id FROM environments WHERE name = ?", (name,)):
            raise Conflict(f"environment '{name}' already exists")
        row = db.fetchone(
            conn,
            f"INSERT INTO environments (name, timezone, settings, created_at, updated_at) "
            f"VALUES (?, ?, '{{}}', ?, ?) RETURNING {_ENV_COLUMNS}",
            (name, timezone, now, now),
        )
    assert row is not None
    return _environment(row)


def _check_timezone(timezone: object) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(timezone, str) or not 1 <= len(timezone) <= 64:
        raise InvalidRequest("timezone must be an IANA time zone name such as Asia/Seoul")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidRequest(f"unknown time zone '{timezone[:64]}'") from exc


def list_environments(db: Database) -> list[Environment]:
    with db.transaction(write=False) as conn:
        return environments(conn, db)


def environments(conn: Connection, db: Database) -> list[Environment]:
    """Every environment, oldest first, within a caller's transaction."""
    rows = db.fetchall(conn, f"SELECT {_ENV_COLUMNS} FROM environments ORDER BY id")
    return [_environment(r) for r in rows]


def _environment_where(db: Database, column: str, value: object, missing: str) -> Environment:
    with db.transaction(write=False) as conn:
        row = db.fetchone(conn, f"SELECT {_ENV_COLUMNS} FROM environments WHERE {column} = ?", (value,))
    if row is None:
        raise NotFound(missing)
    return _environment(row)


def get_environment(db: Database, name: str) -> Environment:
    return _environment_where(db, "name", name, f"no environment named '{name}'")


def update_environment_settings(
    db: Database, *, name: str, settings: dict[str, Any], timezone: str | None = None
) -> Environment:
    if timezone is not None:
        _check_timezone(timezone)
    with db.transaction() as conn:
        row = db.fetchone(
            conn,
            f"UPDATE environments SET settings = ?, timezone = COALESCE(?, timezone), updated_at = ? "
            f"WHERE name = ? RETURNING {_ENV_COLUMNS}",
            (msgspec.json.encode(settings).decode(), timezone, _now(), name),
        )
    if row is None:
        raise NotFound(f"no environment named '{name}'")
    return _environment(row)


class ApiKeyInfo(msgspec.Struct, frozen=True):
    prefix: str
    environment: str
    name: str
    created_at: int
    revoked_at: int | None


def create_api_key(db: Database, *, environment: str, name: str = "") -> tuple[str, ApiKeyInfo]:
    """Create a key; the plain key is returned here once and never stored."""
    key = new_api_key()
    now = _now()
    with db.transaction() as conn:
        env_id = db.scalar(conn, "SELECT id FROM environments WHERE name = ?", (environment,))
        if env_id is None:
            raise NotFound(f"no environment named '{environment}'")
        db.execute(
            conn,
            "INSERT INTO api_keys (key_hash, env_id, prefix, name, created_at) VALUES (?, ?, ?, ?, ?)",
            (hash_secret(key), env_id, key[:12], name, now),
        )
    return key, ApiKeyInfo(prefix=key[:12], environment=environment, name=name, created_at=now, revoked_at=None)


def list_api_keys(db: Database, *, environment: str | None = None) -> list[ApiKeyInfo]:
    sql = (
        "SELECT k.prefix, e.name, k.name, k.created_at, k.revoked_at FROM api_keys k "
        "JOIN environments e ON e.id = k.env_id"
    )
    params: tuple[Any, ...] = ()
    if environment is not None:
        sql += " WHERE e.name = ?"
        params = (environment,)
    with db.transaction(write=False) as conn:
        return db.fetchall_as(conn, sql + " ORDER BY k.created_at, k.prefix", params, ApiKeyInfo)


class _SecretRow(NamedTuple):
    secret_hash: str  # the ``key_hash`` or ``token_hash`` column
    prefix: str


def _revoke(db: Database, *, table: str, hash_column: str, secret_or_prefix: str, what: str) -> str:
    """Revoke one row of ``table`` by its whole secret or the prefix listings show; returns the prefix."""
    if len(secret_or_prefix) > 12:
        where, param = f"{hash_column} = ?", hash_secret(secret_or_prefix)
    else:
        where, param = "prefix = ?", secret_or_prefix
    with db.transaction() as conn:
        rows = db.fetchall_as(conn, f"SELECT {hash_column}, prefix FROM {table} WHERE {where}", (param,), _SecretRow)
        if not rows:
            raise NotFound(f"no {what} matches")
        if len(rows) > 1:
            raise Conflict(f"several {what}s share that prefix; pass the whole {what}")
        (found,) = rows
        db.execute(
            conn,
            f"UPDATE {table} SET revoked_at = COALESCE(revoked_at, ?) WHERE {hash_column} = ?",
            (_now(), found.secret_hash),
        )
    return str(found.prefix)


def revoke_api_key(db: Database, *, key_or_prefix: str) -> ApiKeyInfo:
    """Revoke by the full key or by the prefix that ``list`` shows."""
    prefix = _revoke(db, table="api_keys", hash_column="key_hash", secret_or_prefix=key_or_prefix, what="API key")
    return next(k for k in list_api_keys(db) if k.prefix == prefix)


def lookup_api_key(conn: Connection, db: Database, key: str) -> int | None:
    env_id = db.scalar(
        conn, "SELECT env_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (hash_secret(key),)
    )
    return None if env_id is None else int(env_id)


def create_admin_token(db: Database, *, name: str = "") -> str:
    token = new_admin_token()
    with db.transaction() as conn:
        db.execute(
            conn,
            "INSERT INTO admin_tokens (token_hash, prefix, name, created_at) VALUES (?, ?, ?, ?)",
            (hash_secret(token), token[:12], name, _now()),
        )
    return token


class AdminTokenInfo(msgspec.Struct, frozen=True):
    prefix: str
    name: str
    created_at: int
    revoked_at: int | None


def list_admin_tokens(db: Database) -> list[AdminTokenInfo]:
    with db.transaction(write=False) as conn:
        sql = "SELECT prefix, name, created_at, revoked_at FROM admin_tokens ORDER BY created_at"
        return db.fetchall_as(conn, sql, (), AdminTokenInfo)


def revoke_admin_token(db: Database, *, token_or_prefix: str) -> AdminTokenInfo:
    """Revoke by the whole token or by the prefix that ``list_admin_tokens`` shows."""
    prefix = _revoke(
        db, table="admin_tokens", hash_column="token_hash", secret_or_prefix=token_or_prefix, what="admin token"
    )
    return next(t for t in list_admin_tokens(db) if t.prefix == prefix)


def check_admin_token(conn: Connection, db: Database, token: str) -> bool:
    return live_admin_token(conn, db, token_hash=hash_secret(token)) is not None


def live_admin_token(conn: Connection, db: Database, *, token_hash: str) -> AdminTokenInfo | None:
    """The unrevoked admin token with this hash, or None."""
    return db.fetchone_as(
        conn,
        "SELECT prefix, name, created_at, revoked_at FROM admin_tokens WHERE token_hash = ? AND revoked_at IS NULL",
        (token_hash,),
        AdminTokenInfo,
    )


def is_empty(db: Database) -> bool:
    with db.transaction(write=False) as conn:
        return db.fetchone(conn, "SELECT 1 FROM environments LIMIT 1") is None


def env_id_by_name(conn: Connection, db: Database, name: str) -> int:
    env_id = db.scalar(conn, "SELECT id FROM environments WHERE name = ?", (name,))
    if env_id is None:
        raise NotFound(f"no environment named '{name}'")
    return int(env_id)


def environment_by_name(conn: Connection, db: Database, *, name: str) -> tuple[int, dict[str, Any]] | None:
    """``(id, stored settings)`` of the environment called ``name``, or None."""
    row = db.fetchone(conn, "SELECT id, settings FROM environments WHERE name = ?", (name,))
    if row is None:
        return None
    env_id, settings = row
    return int(env_id), msgspec.json.decode(settings)


def environment_settings(conn: Connection, db: Database, *, env_id: int) -> dict[str, Any]:
    """The stored settings of an environment (empty when it is gone)."""
    stored = db.scalar(conn, "SELECT settings FROM environments WHERE id = ?", (env_id,))
    settings: dict[str, Any] = msgspec.json.decode(stored) if stored is not None else {}
    return settings


# -- dashboard sessions and their forms -------------------------------------------------------------

_FORMS_KEPT_MS = 24 * 3600 * 1000  # a form sent twice within a day acts once


def start_session(db: Database, *, token_hash: str, seconds: int) -> str:
    """Record a new dashboard session of the admin token ``token_hash``; returns its id."""
    session_id = secrets.token_urlsafe(24)
    now = _now()
    with db.transaction() as conn:
        db.execute(conn, "DELETE FROM dashboard_sessions WHERE expires_at < ?", (now,))
        db.execute(
            conn,
            "INSERT INTO dashboard_sessions (id, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (session_id, token_hash, now, now + seconds * 1000),
        )
    return session_id


def session_live(conn: Connection, db: Database, *, session_id: str, token_hash: str) -> bool:
    """Whether the session is neither ended nor expired, and its admin token not revoked."""
    row = db.fetchone(
        conn,
        "SELECT 1 FROM dashboard_sessions s JOIN admin_tokens t ON t.token_hash = s.token_hash "
        "WHERE s.id = ? AND s.token_hash = ? AND s.ended_at IS NULL AND s.expires_at > ? AND t.revoked_at IS NULL",
        (session_id, token_hash, _now()),
    )
    return row is not None


def end_session(db: Database, *, session_id: str) -> None:
    """Sign a session out: every copy of its cookie stops working at once."""
    with db.transaction() as conn:
        db.execute(
            conn, "UPDATE dashboard_sessions SET ended_at = COALESCE(ended_at, ?) WHERE id = ?", (_now(), session_id)
        )


def claim_form(db: Database, *, session_id: str, form_key: str) -> str | None:
    """Record the first use of a form; ``None`` then, else where its first use led (``""``: still running)."""
    now = _now()
    with db.transaction() as conn:
        db.execute(conn, "DELETE FROM dashboard_forms WHERE used_at < ?", (now - _FORMS_KEPT_MS,))
        fresh = db.fetchone(
            conn,
            "INSERT INTO dashboard_forms (form_key, session_id, used_at) VALUES (?, ?, ?) "
            "ON CONFLICT (form_key) DO NOTHING RETURNING form_key",
            (form_key, session_id, now),
        )
        if fresh is not None:
            return None
        location = db.scalar(conn, "SELECT location FROM dashboard_forms WHERE form_key = ?", (form_key,))
    return str(location or "")


def finish_form(db: Database, *, form_key: str, location: str | None, payload: str | None) -> None:
    """Where a form's first use led, and what that page shows (once); ``location`` None: forget the use."""
    with db.transaction() as conn:
        if location is None:
            db.execute(conn, "DELETE FROM dashboard_forms WHERE form_key = ?", (form_key,))
        else:
            db.execute(
                conn,
                "UPDATE dashboard_forms SET location = ?, payload = ? WHERE form_key = ?",
                (location, payload, form_key),
            )


def take_form_payload(db: Database, *, session_id: str, form_key: str) -> str | None:
    """What a form's result page shows, for the session that sent it, once: it is gone after this."""
    with db.transaction() as conn:
        payload = db.scalar(
            conn,
            "SELECT payload FROM dashboard_forms WHERE form_key = ? AND session_id = ? FOR UPDATE",
            (form_key, session_id),
        )
        if payload is None:
            return None
        db.execute(conn, "UPDATE dashboard_forms SET payload = NULL WHERE form_key = ?", (form_key,))
    return str(payload)
