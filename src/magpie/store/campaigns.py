"""Campaigns (create or update by key) and static cohorts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import msgspec

from magpie.domain.campaigns import DEMO_CAMPAIGN, Campaign, check_for_environment, delivery_warnings, parse_campaign
from magpie.domain.environment import effective
from magpie.domain.schedules import check_broadcast
from magpie.errors import Conflict, InvalidRequest, NotFound
from magpie.store import broadcasts
from magpie.store.conversions import experiment_warnings
from magpie.store.db import Connection, Database

_decode = msgspec.json.decode
T = TypeVar("T")


def _now() -> int:
    return int(time.time() * 1000)


def apply_campaign(db: Database, *, env_id: int, raw: Any) -> tuple[Campaign, bool]:
    """Validate and store a campaign, creating it or replacing the one with the same key.

    Returns the campaign and whether it was created.
    """
    (result,) = apply_campaigns(db, env_id=env_id, raws=[raw])
    return result


class _EnvironmentRow(NamedTuple):
    settings: str
    timezone: str


def apply_campaigns(db: Database, *, env_id: int, raws: Sequence[Any]) -> list[tuple[Campaign, bool]]:
    """Validate and store several campaigns in one transaction: every one of them, or (on an error) none."""
    parsed = [parse_campaign(raw) for raw in raws]
    now = _now()
    results: list[tuple[Campaign, bool]] = []
    with db.transaction() as conn:
        env = db.fetchone_as(
            conn, "SELECT settings, timezone FROM environments WHERE id = ?", (env_id,), _EnvironmentRow
        )
        settings = effective(_decode(env.settings) if env is not None else {})
        for campaign in parsed:
            check_for_environment(campaign, settings)
            check_broadcast(
                channel=campaign.channel,
                provider=campaign.provider,
                schedule=campaign.schedule,
                settings=settings,
                timezone=env.timezone if env is not None else "Asia/Seoul",
                now_ms=now,
            )
        for campaign in parsed:
            results.append((campaign, _store(conn, db, env_id=env_id, campaign=campaign, now=now)))
    return results


def _store(conn: Connection, db: Database, *, env_id: int, campaign: Campaign, now: int) -> bool:
    """Insert or replace one campaign; True when it was created."""
    definition = msgspec.json.encode(campaign.to_json()).decode()
    existing = db.scalar(
        conn, "SELECT status FROM campaigns WHERE env_id = ? AND key = ? FOR UPDATE", (env_id, campaign.key)
    )
    if existing is not None:
        check_status_change(current=existing, key=campaign.key, to=campaign.status)
    if existing is None:
        db.execute(
            conn,
            "INSERT INTO campaigns (env_id, key, name, status, definition, channel, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (env_id, campaign.key, campaign.name, campaign.status, definition, campaign.channel, now, now),
        )
    else:
        db.execute(
            conn,
            "UPDATE campaigns SET name = ?, status = ?, definition = ?, channel = ?, updated_at = ? "
            "WHERE env_id = ? AND key = ?",
            (campaign.name, campaign.status, definition, campaign.channel, now, env_id, campaign.key),
        )
    return existing is None


def check_status_change(*, current: object, key: int, to: str | None = None) -> None:
    """ARCHIVED is final: an archived campaign is never made DRAFT, ACTIVE or PAUSED again."""
    if current == "ARCHIVED" and to != "ARCHIVED":
        raise Conflict(
            f"campaign {key} is ARCHIVED, which is final: it cannot be changed"
            + (f" to {to}" if to else "")
            + "; apply it under a new key instead"
        )


def check_delivery(db: Database, *, env_id: int, raw: Any) -> list[str]:
    """Validate a campaign and say why its pushes would fail in the environment (no settings for its provider)."""
    campaign = parse_campaign(raw)
    with db.transaction(write=False) as conn:
        row = db.fetchone(conn, "SELECT name, settings FROM environments WHERE id = ?", (env_id,))
        measured = experiment_warnings(conn, db, env_id=env_id, campaign=campaign)
    if row is None:
        raise NotFound(f"no environment with id {env_id}")
    environment, settings = row
    providers = _decode(settings).get("providers", {})
    warnings = delivery_warnings(provider=campaign.provider, configured=providers, environment=environment)
    return (
        warnings
        + measured
        + broadcasts.broadcast_warnings(_read(db), db, env_id=env_id, campaign=campaign, now_ms=_now())
    )


def _read(db: Database) -> Callable[[Callable[[Connection], T]], T]:
    def read(fn: Callable[[Connection], T]) -> T:
        with db.transaction(write=False) as conn:
            return fn(conn)

    return read


def archive_campaign(db: Database, *, env_id: int, key: int) -> Campaign:
    """Set a campaign's status to ARCHIVED: it no longer sends and is hidden from default listings."""
    with db.transaction() as conn:
        stored = db.scalar(
            conn, "SELECT definition FROM campaigns WHERE env_id = ? AND key = ? FOR UPDATE", (env_id, key)
        )
        if stored is None:
            raise NotFound(f"no campaign with key {key}")
        definition = _decode(stored)
        definition["status"] = "ARCHIVED"
        campaign = parse_campaign(definition)
        db.execute(
            conn,
            "UPDATE campaigns SET status = ?, definition = ?, updated_at = ? WHERE env_id = ? AND key = ?",
            ("ARCHIVED", msgspec.json.encode(campaign.to_json()).decode(), _now(), env_id, key),
        )
    return campaign


@dataclass(frozen=True, slots=True)
class CampaignRow:
    definition: dict[str, Any]  # as applied, normalised (``Campaign.to_json``)
    created_at: int
    updated_at: int


def _row(row: tuple[Any, ...]) -> CampaignRow:
    definition, created_at, updated_at = row
    return CampaignRow(_decode(definition), created_at, updated_at)


def list_campaigns(conn: Connection, db: Database, *, env_id: int) -> list[CampaignRow]:
    rows = db.fetchall(
        conn,
        "SELECT definition, created_at, updated_at FROM campaigns WHERE env_id = ? ORDER BY key",
        (env_id,),
    )
    return [_row(r) for r in rows]


def get_campaign(conn: Connection, db: Database, *, env_id: int, key: int) -> CampaignRow:
    row = db.fetchone(
        conn,
        "SELECT definition, created_at, updated_at FROM campaigns WHERE env_id = ? AND key = ?",
        (env_id, key),
    )
    if row is None:
        raise NotFound(f"no campaign with key {key}")
    return _row(row)


class _Cached(NamedTuple):
    updated_at: int
    campaign: Campaign


class CampaignCache:
    """Parsed campaigns (with compiled templates) per process, refreshed when the row changes."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], _Cached] = {}

    def load(self, conn: Connection, db: Database, *, env_id: int, key: int) -> Campaign | None:
        row = db.fetchone(
            conn, "SELECT definition, updated_at FROM campaigns WHERE env_id = ? AND key = ?", (env_id, key)
        )
        if row is None:
            return None
        definition, updated_at = row
        cached = self._cache.get((env_id, key))
        if cached is not None and cached.updated_at == updated_at:
            return cached.campaign
        campaign = parse_campaign(_decode(definition))
        self._cache[(env_id, key)] = _Cached(updated_at, campaign)
        return campaign


def bootstrap_demo(db: Database, *, env_id: int) -> int | None:
    """The demo campaign of a new store: key 1, ACTIVE, on the sandbox provider."""
    campaign, _ = apply_campaign(db, env_id=env_id, raw=DEMO_CAMPAIGN)
    return campaign.key


# -- static cohorts ---------------------------------------------------------------------------------

MAX_COHORT_MEMBERS = 1_000_000


def set_cohort(db: Database, *, env_id: int, name: str, members: Any) -> int:
    """Replace a static cohort's members (user ids or device ids)."""
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        raise InvalidRequest("a cohort name is 1 to 128 characters")
    if not isinstance(members, list) or not all(isinstance(m, str) and 0 < len(m) <= 256 for m in members):
        raise InvalidRequest("members must be a list of ids (non-empty strings of at most 256 characters)")
    if len(members) > MAX_COHORT_MEMBERS:
        raise InvalidRequest(f"a static cohort holds at most {MAX_COHORT_MEMBERS} ids")
    unique = sorted(set(members))
    with db.transaction() as conn:
        db.execute(conn, "DELETE FROM cohort_members WHERE env_id = ? AND cohort = ?", (env_id, name))
        db.executemany(
            conn,
            "INSERT INTO cohort_members (env_id, cohort, member) VALUES (?, ?, ?)",
            [(env_id, name, m) for m in unique],
        )
    return len(unique)


@dataclass(frozen=True, slots=True)
class CohortRow:
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class CohortView:
    name: str
    size: int
    members: list[str]  # the first ``limit``, in order


def cohort_view(conn: Connection, db: Database, *, env_id: int, name: str, limit: int = 1000) -> CohortView:
    count = db.scalar(conn, "SELECT COUNT(*) FROM cohort_members WHERE env_id = ? AND cohort = ?", (env_id, name))
    total = int(count) if count is not None else 0
    if total == 0:
        raise NotFound(f"no cohort named '{name}'")
    rows = db.fetchall(
        conn,
        "SELECT member FROM cohort_members WHERE env_id = ? AND cohort = ? ORDER BY member LIMIT ?",
        (env_id, name, limit),
    )
    return CohortView(name, total, [member for (member,) in rows])


def list_cohorts(conn: Connection, db: Database, *, env_id: int) -> list[CohortRow]:
    rows = db.fetchall(
        conn,
        "SELECT cohort, COUNT(*) FROM cohort_members WHERE env_id = ? GROUP BY cohort ORDER BY cohort",
        (env_id,),
    )
    return [CohortRow(cohort, int(count)) for cohort, count in rows]


def memberships(
    conn: Connection, db: Database, *, env_id: int, cohorts: set[str], ids: set[str]
) -> set[tuple[str, str]]:
    """Which of ``ids`` belong to which of ``cohorts``: a set of ``(cohort, id)``."""
    if not cohorts or not ids:
        return set()
    id_list, cohort_list = sorted(ids), sorted(cohorts)
    rows = db.fetchall(
        conn,
        "SELECT cohort, member FROM cohort_members "
        f"WHERE env_id = ? AND cohort IN ({','.join('?' * len(cohort_list))}) "
        f"AND member IN ({','.join('?' * len(id_list))})",
        (env_id, *cohort_list, *id_list),
    )
    return {(cohort, member) for cohort, member in rows}


def set_campaign_status(db: Database, *, env_id: int, key: int, status: str, actor: str) -> dict[str, Any]:
    """Pause or activate a campaign, recording who did it and when in the audit log."""
    if status not in ("ACTIVE", "PAUSED"):
        raise InvalidRequest("status must be ACTIVE or PAUSED")
    now = _now()
    with db.transaction() as conn:
        stored = db.scalar(
            conn, "SELECT definition FROM campaigns WHERE env_id = ? AND key = ? FOR UPDATE", (env_id, key)
        )
        if stored is None:
            raise NotFound(f"no campaign with key {key}")
        definition: dict[str, Any] = _decode(stored)
        check_status_change(current=definition.get("status"), key=key, to=status)
        definition["status"] = status
        db.execute(
            conn,
            "UPDATE campaigns SET status = ?, definition = ?, updated_at = ? WHERE env_id = ? AND key = ?",
            (status, msgspec.json.encode(definition).decode(), now, env_id, key),
        )
        db.execute(
            conn,
            "INSERT INTO audit_log (env_id, at, actor, action, target) VALUES (?, ?, ?, ?, ?)",
            (env_id, now, actor, f"status → {status}", f"campaign:{key}"),
        )
    definition["updatedAt"] = now
    return definition
