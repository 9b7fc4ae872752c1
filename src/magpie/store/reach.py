"""Who a campaign reaches on its channel: the reachable count, and the audience a page at a time.

Both read ``user_reach`` (migration ``0013_user_reach``): one narrow row per user with its consent
codes, whether it has a phone number and how many live push tokens its devices have, kept by the
database's triggers wherever those change. The count is one grouped scan of it, joined to the user
profiles only for the properties the audience reads and to the (small) sets of users in a cohort or
at a frequency cap; the rules then run once per group (``delivery.decide``), not once per user.
Audiences that name user or device ids are counted a page at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, NamedTuple, Protocol, TypeVar

import msgspec

from magpie.domain import consent, delivery
from magpie.domain.audience import KeyType, Recipient
from magpie.domain.campaigns import Campaign
from magpie.domain.delivery import Exclude, NightRule, Reason
from magpie.store import accounts
from magpie.store.db import Connection, Database
from magpie.store.transaction import dumps

_decode = msgspec.json.decode
# The reason a reachable count gives for users a frequency cap stops now (as the workers say it).
FREQUENCY_CAP: Final = "FREQUENCY_CAP"
# The consent codes of ``user_reach`` (0: not given).
_STATUSES: Final = {1: consent.SUBSCRIBED, 2: consent.UNSUBSCRIBED}
# The columns of ``user_reach`` a count groups by, in the order of ``ix_user_reach_facts``.
_CONSENT: Final = tuple(f"{c}_{p}" for c in ("push", "kakao", "sms") for p in ("marketing", "information"))
_FACTS: Final = (*_CONSENT, "phone", "tokens")
# A user: a user profile, or a user id devices are linked to.
_IS_USER: Final = "(r.profile = 1 OR r.devices > 0)"

_T = TypeVar("_T")


class Read(Protocol):
    """Runs a function on a reading connection (``Reader.read_here``)."""

    def __call__(self, fn: Callable[[Connection], _T], /) -> _T: ...


@dataclass(frozen=True, slots=True)
class Reach:
    """The reachable count of a campaign on its channel, and why the rest of its audience is not."""

    channel: str
    users: int  # every user of the environment
    audience: int  # users the conditions select
    reachable: int
    unreachable: dict[str, int]


@dataclass(slots=True)
class AudiencePage:
    """One keyset page of users: who is reachable on the campaign's channel, and why the rest are not."""

    reachable: list[str] = field(default_factory=list)
    unreachable: dict[str, int] = field(default_factory=dict)  # reason -> users (in the audience)
    outside: int = 0  # users the audience's conditions leave out
    scanned: int = 0
    last: str | None = None  # the greatest user id read: where the next page starts


# -- what the rules read of each user, in SQL -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reads:
    """What the campaign's rules read of a user beyond ``user_reach``."""

    names: tuple[str, ...]  # user properties
    cohorts: tuple[str, ...]
    ids: bool  # user or device ids: no two users are alike


def _reads(campaign: Campaign) -> _Reads:
    names: list[str] = []
    cohorts: list[str] = []
    ids = False
    for target in campaign.audience.targets:
        for condition in target.conditions:
            if condition.key_type is KeyType.USER_PROPERTY and condition.name is not None:
                if condition.name not in names:
                    names.append(condition.name)
            elif condition.key_type is KeyType.COHORT:
                cohorts.extend(str(v) for v in condition.values if str(v) not in cohorts)
            else:
                ids = True
    return _Reads(names=tuple(names), cohorts=tuple(cohorts), ids=ids)


def _values_sql(db: Database, names: Sequence[str]) -> str:
    """The audience's properties of a user as one JSON array text (``null`` where absent)."""
    if not names:
        return "'[]'"
    if db.is_sqlite:
        if any('"' in n or "\\" in n for n in names):
            return "COALESCE(p.properties, '{}')"  # names a JSON path cannot quote: the whole document
        parts = [f"COALESCE(p.properties -> '{_sqlite_path(n)}', 'null')" for n in names]
    else:
        parts = [f"COALESCE((p.properties::jsonb -> '{n.replace(chr(39), chr(39) * 2)}')::text, 'null')" for n in names]
    return "'[' || " + " || ',' || ".join(parts) + " || ']'"


def _sqlite_path(name: str) -> str:
    """A JSON path naming one key, quoted (a name may hold dots, not quotes or backslashes)."""
    return f'$."{name}"'.replace("'", "''")


def _capped_sql(caps: Sequence[Mapping[str, Any]], *, env_id: int, channel: str, now_ms: int) -> tuple[str, list[Any]]:
    """The users at one of ``caps`` now, as a query of one column ``u`` (each user once)."""
    parts: list[str] = []
    params: list[Any] = []
    for cap in caps:
        condition = "m.env_id = ? AND m.user_key LIKE ? AND m.sent_at > ?"
        params += [env_id, "u:%", now_ms - int(float(cap["windowHours"]) * 3_600_000)]
        if cap.get("channel") is not None:
            condition += " AND m.channel = ?"
            params.append(channel)
        if cap.get("tag") is not None:
            condition += " AND m.tags LIKE ?"
            params.append(f"%{dumps(cap['tag'])}%")
        parts.append(
            f"SELECT substr(m.user_key, 3) AS u FROM marketing_sends m WHERE {condition} "
            f"GROUP BY m.user_key HAVING COUNT(*) >= {int(cap['limit'])}"
        )
    return " UNION ".join(parts), params


def _cohort_sql(env_id: int, cohort: str) -> tuple[str, list[Any]]:
    """The users in ``cohort``: members by user id, and users a member device is linked to."""
    return (
        "SELECT member AS u FROM cohort_members WHERE env_id = ? AND cohort = ? UNION "
        "SELECT d.linked_user FROM cohort_members c JOIN profiles d ON d.env_id = c.env_id AND d.kind = 'd' "
        "AND d.ident = c.member WHERE c.env_id = ? AND c.cohort = ? AND d.linked_user IS NOT NULL",
        [env_id, cohort, env_id, cohort],
    )


@dataclass(frozen=True, slots=True)
class _Query:
    columns: str  # vals, marketing, information, token, phone, capped, cohorts
    varying: str  # the positions of the columns that are not constants (what a count groups by)
    joins: str
    params: list[Any]  # of the joins


def _query(
    db: Database,
    *,
    env_id: int,
    channel: str,
    reads: _Reads,
    caps: Sequence[Mapping[str, Any]],
    now_ms: int,
    cohorts_joined: bool,
) -> _Query:
    joins: list[str] = []
    params: list[Any] = []
    if reads.names:
        joins.append("LEFT JOIN profiles p ON p.env_id = r.env_id AND p.kind = 'u' AND p.ident = r.user_id")
    capped = "0"
    if caps:
        sql, cap_params = _capped_sql(caps, env_id=env_id, channel=channel, now_ms=now_ms)
        joins.append(f"LEFT JOIN ({sql}) c ON c.u = r.user_id")
        params += cap_params
        capped = "CASE WHEN c.u IS NULL THEN 0 ELSE 1 END"
    flags = "''"
    if cohorts_joined and reads.cohorts:
        marks = []
        for i, cohort in enumerate(reads.cohorts):
            sql, cohort_params = _cohort_sql(env_id, cohort)
            joins.append(f"LEFT JOIN ({sql}) k{i} ON k{i}.u = r.user_id")
            params += cohort_params
            marks.append(f"CASE WHEN k{i}.u IS NULL THEN '0' ELSE '1' END")
        flags = " || ".join(marks)
    token = "CASE WHEN r.tokens > 0 THEN 1 ELSE 0 END" if channel == "push" else "0"
    phone = "r.phone" if channel != "push" else "0"
    columns = (
        (_values_sql(db, reads.names), "vals"),
        (f"r.{channel}_marketing", "marketing"),
        (f"r.{channel}_information", "information"),
        (token, "token"),
        (phone, "phone"),
        (capped, "capped"),
        (flags, "cohorts"),
    )
    if db.is_sqlite:
        # SQLite groups by sorting, unless it groups by an index's columns (``ix_user_reach_facts``).
        varying = [f"r.{c}" for c in _FACTS]
        varying += [str(i + 1) for i, (sql, _) in enumerate(columns) if not sql.startswith(("r.", "CASE WHEN r."))]
    else:
        varying = [str(i + 1) for i, (sql, _) in enumerate(columns)]
    # Constants are left out: grouping by them costs a wider key for nothing.
    constants = {str(i + 1) for i, (sql, _) in enumerate(columns) if sql in ("0", "''", "'[]'")}
    varying = [v for v in varying if v not in constants]
    return _Query(
        columns=", ".join(f"{sql} AS {name}" for sql, name in columns),
        varying=", ".join(varying),
        joins=" ".join(joins),
        params=params,
    )


# -- the rules, once per kind of user ---------------------------------------------------------------------


class _Facts(NamedTuple):
    """What the rules read of a user (as the query gives it), without its ids."""

    vals: str
    marketing: int
    information: int
    token: int
    phone: int
    capped: int
    cohorts: str


class _Grouped(NamedTuple):
    vals: str
    marketing: int
    information: int
    token: int
    phone: int
    capped: int
    cohorts: str
    n: int


class _UserRow(NamedTuple):
    user_id: str
    vals: str
    marketing: int
    information: int
    token: int
    phone: int
    capped: int
    cohorts: str


class _Device(NamedTuple):
    ident: str
    linked_user: str


class _Member(NamedTuple):
    cohort: str
    member: str


# What the rules answer for a user: NOT_IN_AUDIENCE, another reason not to reach them, or None (reachable).
Verdict = Reason | str | None


class _Rules:
    """``delivery.decide`` for the campaign, remembered per kind of user when ids play no part."""

    def __init__(self, campaign: Campaign, reads: _Reads, now_ms: int) -> None:
        self.campaign = campaign
        self.reads = reads
        self.now_ms = now_ms
        self.night = NightRule()
        self._memo: dict[_Facts, Verdict] = {}

    def verdict(
        self,
        facts: _Facts,
        *,
        user_id: str | None = None,
        device_ids: tuple[str, ...] = (),
        in_cohort: Callable[[str], bool] | None = None,
    ) -> Verdict:
        if not self.reads.ids and in_cohort is None:
            found = self._memo.get(facts, self)
            if found is self:
                found = self._memo[facts] = self._decide(facts, user_id, device_ids, None)
            return found  # type: ignore[return-value]
        return self._decide(facts, user_id, device_ids, in_cohort)

    def _decide(
        self, facts: _Facts, user_id: str | None, device_ids: tuple[str, ...], in_cohort: Callable[[str], bool] | None
    ) -> Verdict:
        channel = self.campaign.channel
        values = _decode(facts.vals)
        if isinstance(values, dict):  # the whole document (``_values_sql``)
            values = [values.get(n) for n in self.reads.names]
        properties = {n: v for n, v in zip(self.reads.names, values, strict=True) if v is not None}
        statuses = {"marketing": facts.marketing, "information": facts.information}
        crm = {channel: {p: {"status": _STATUSES[code]} for p, code in statuses.items() if code in _STATUSES}}
        flags = dict(zip(self.reads.cohorts, facts.cohorts, strict=False))
        decision = delivery.decide(
            campaign=self.campaign,
            recipient=Recipient(user_id=user_id, device_ids=device_ids, properties=properties),
            crm=crm,
            has_push_token=bool(facts.token),
            has_phone=bool(facts.phone),
            in_cohort=in_cohort if in_cohort is not None else lambda name: flags.get(name) == "1",
            now_ms=self.now_ms,
            night=self.night,
        )
        if isinstance(decision, Exclude) and decision.reason != delivery.NIGHT_TIME_DROPPED:
            return decision.reason
        if facts.capped:
            return FREQUENCY_CAP
        return None  # sent now, held for the night, or dropped by it at send time: reachable either way


# -- the count -----------------------------------------------------------------------------------------------


def applicable_caps(campaign: Campaign, settings: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The frequency caps one more message of the campaign counts against (as the workers apply them)."""
    return [
        cap
        for cap in delivery.frequency_caps(campaign=campaign, settings=settings)
        if (cap.get("tag") is None or cap["tag"] in campaign.tags)
        and (cap.get("channel") is None or cap["channel"] == campaign.channel)
    ]


def reach(
    read: Read,
    db: Database,
    *,
    env_id: int,
    campaign: Campaign,
    now_ms: int,
    page_size: int = 5000,
    grouped: bool = True,
) -> Reach:
    """Count who the campaign would reach now: in one grouped query unless its audience names user or
    device ids (``grouped_reach``), else page by page (memory stays bounded)."""
    settings = read(lambda conn: accounts.environment_settings(conn, db, env_id=env_id))
    caps = applicable_caps(campaign, settings)
    if grouped:
        found = read(
            lambda conn: grouped_reach(conn, db=db, env_id=env_id, campaign=campaign, now_ms=now_ms, caps=caps)
        )
        if found is not None:
            return found
    after: str | None = None
    users = audience = reachable = 0
    unreachable: dict[str, int] = {}
    while True:
        page = read(
            partial(
                audience_page,
                db=db,
                env_id=env_id,
                campaign=campaign,
                after=after,
                limit=page_size,
                now_ms=now_ms,
                caps=caps,
            )
        )
        if not page.scanned:
            break
        users += page.scanned
        audience += page.scanned - page.outside
        reachable += len(page.reachable)
        _add(unreachable, page.unreachable.items())
        after = page.last
    return Reach(channel=campaign.channel, users=users, audience=audience, reachable=reachable, unreachable=unreachable)


def _add(counts: dict[str, int], more: Iterable[tuple[str, int]]) -> None:
    for reason, n in more:
        counts[reason] = counts.get(reason, 0) + n


def grouped_reach(
    conn: Connection,
    *,
    db: Database,
    env_id: int,
    campaign: Campaign,
    now_ms: int,
    caps: Sequence[Mapping[str, Any]] = (),
) -> Reach | None:
    """The reachable count of a campaign from one grouped scan of ``user_reach``, or None when its
    audience names user or device ids (then ``reach`` counts page by page)."""
    reads = _reads(campaign)
    if reads.ids:
        return None
    q = _query(db, env_id=env_id, channel=campaign.channel, reads=reads, caps=(), now_ms=now_ms, cohorts_joined=True)
    every = f"SELECT {q.columns}, COUNT(*) FROM user_reach r {q.joins} WHERE r.env_id = ? AND {_IS_USER} "
    every += f"GROUP BY {q.varying}"
    queries = [(every, (*q.params, env_id))]
    if caps:
        # The users at a cap are few (those sent to lately): grouped apart, they leave the reachable count.
        capped, cap_params = _capped_sql(caps, env_id=env_id, channel=campaign.channel, now_ms=now_ms)
        queries.append(
            (
                f"SELECT {q.columns}, COUNT(*) FROM ({capped}) c JOIN user_reach r ON r.env_id = ? "
                f"AND r.user_id = c.u {q.joins} WHERE {_IS_USER} GROUP BY {q.varying}",
                (*cap_params, env_id, *q.params),
            )
        )
    if not db.is_sqlite:
        # JIT would spend longer compiling this one-off aggregate than running it.
        db.begin(conn, write=False)
        db.execute(conn, "SET LOCAL jit = off")
    try:
        every_group, *capped_groups = (db.fetchall_as(conn, sql, params, _Grouped) for sql, params in queries)
    finally:
        if not db.is_sqlite:
            db.rollback(conn)
    rules = _Rules(campaign, reads, now_ms)
    users = audience = reachable = 0
    unreachable: dict[str, int] = {}
    for group in every_group:
        verdict = rules.verdict(_facts(group))
        n = int(group.n)
        users += n
        if verdict == delivery.NOT_IN_AUDIENCE:
            continue
        audience += n
        if verdict is None:
            reachable += n
        else:
            _add(unreachable, ((str(verdict), n),))
    for group in (g for groups in capped_groups for g in groups):
        if rules.verdict(_facts(group)) is None:
            reachable -= int(group.n)
            _add(unreachable, ((FREQUENCY_CAP, int(group.n)),))
    return Reach(channel=campaign.channel, users=users, audience=audience, reachable=reachable, unreachable=unreachable)


def _facts(group: _Grouped | _PageGroup | _UserRow) -> _Facts:
    return _Facts(group.vals, group.marketing, group.information, group.token, group.phone, group.capped, group.cohorts)


# -- the audience, a page at a time ---------------------------------------------------------------------


def audience_page(
    conn: Connection,
    *,
    db: Database,
    env_id: int,
    campaign: Campaign,
    after: str | None,
    limit: int,
    now_ms: int,
    caps: Sequence[Mapping[str, Any]] = (),
) -> AudiencePage:
    """Users after ``after`` (by user id), sorted by the campaign's rules as they stand at ``now_ms``.

    Reachable: in the audience, consented for the channel and purpose, with a live push token (push) or a
    phone number (Kakao, SMS), and (with ``caps``) at none of them. The night window is not a reason: the
    worker holds or drops at send time.
    """
    reads = _reads(campaign)
    q = _query(db, env_id=env_id, channel=campaign.channel, reads=reads, caps=caps, now_ms=now_ms, cohorts_joined=False)
    inner = (
        f"SELECT r.user_id, {q.columns} FROM user_reach r {q.joins} WHERE r.env_id = ? AND r.user_id > ? "
        f"AND {_IS_USER} ORDER BY r.user_id LIMIT ?"
    )
    params = (*q.params, env_id, after or "", limit)
    if not (reads.ids or reads.cohorts):
        return _page_by_kind(
            conn, db, campaign=campaign, reads=reads, inner=inner, params=params, after=after, now_ms=now_ms
        )
    rows = db.fetchall_as(conn, inner, params, _UserRow)
    if not rows:
        return AudiencePage(scanned=0, last=after)
    page = AudiencePage(scanned=len(rows), last=next(reversed(rows)).user_id)
    devices: dict[str, list[str]] = {}
    members: set[tuple[str, str]] = set()
    if reads.ids or reads.cohorts:
        # The page's devices: one range scan of the linked-user index.
        for device in db.fetchall_as(
            conn,
            "SELECT ident, linked_user FROM profiles WHERE env_id = ? AND kind = 'd' AND linked_user > ? "
            "AND linked_user <= ?",
            (env_id, after or "", page.last),
            _Device,
        ):
            devices.setdefault(device.linked_user, []).append(device.ident)
    if reads.cohorts:
        members = _members(conn, db, env_id=env_id, cohorts=reads.cohorts, rows=rows, devices=devices)
    rules = _Rules(campaign, reads, now_ms)
    for row in rows:
        facts = _facts(row)
        if reads.ids or reads.cohorts:
            device_ids = tuple(devices.get(row.user_id, ()))
            known = {row.user_id, *device_ids}
            verdict = rules.verdict(
                facts,
                user_id=row.user_id,
                device_ids=device_ids,
                in_cohort=lambda name, known=known: any((name, i) in members for i in known),  # type: ignore[misc]
            )
        else:
            verdict = rules.verdict(facts)
        if verdict == delivery.NOT_IN_AUDIENCE:
            page.outside += 1
        elif verdict is None:
            page.reachable.append(row.user_id)
        else:
            _add(page.unreachable, ((str(verdict), 1),))
    return page


class _PageGroup(NamedTuple):
    vals: str
    marketing: int
    information: int
    token: int
    phone: int
    capped: int
    cohorts: str
    users: str  # their ids, a JSON array
    n: int
    last: str  # the page's greatest user id


def _page_by_kind(
    conn: Connection,
    db: Database,
    *,
    campaign: Campaign,
    reads: _Reads,
    inner: str,
    params: Sequence[Any],
    after: str | None,
    now_ms: int,
) -> AudiencePage:
    """A page whose users the rules tell apart only by what they read of ``user_reach`` and properties: the
    page's users come grouped alike, each group's ids as one JSON array, and the rules run once a group."""
    ids = "json_group_array(user_id)" if db.is_sqlite else "json_agg(user_id)::text"
    groups = db.fetchall_as(
        conn,
        f"WITH page AS ({inner}) SELECT vals, marketing, information, token, phone, capped, cohorts, {ids}, "
        "COUNT(*), (SELECT MAX(user_id) FROM page) FROM page GROUP BY 1, 2, 3, 4, 5, 6, 7",
        params,
        _PageGroup,
    )
    page = AudiencePage(scanned=0, last=after)
    rules = _Rules(campaign, reads, now_ms)
    for group in groups:
        page.scanned += int(group.n)
        page.last = group.last
        verdict = rules.verdict(_facts(group))
        if verdict == delivery.NOT_IN_AUDIENCE:
            page.outside += int(group.n)
        elif verdict is None:
            page.reachable.extend(_decode(group.users))
        else:
            _add(page.unreachable, ((str(verdict), int(group.n)),))
    return page


def _members(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    cohorts: Sequence[str],
    rows: Sequence[_UserRow],
    devices: Mapping[str, list[str]],
) -> set[tuple[str, str]]:
    """``(cohort, member)`` pairs for the page's users and their devices."""
    everyone = sorted({*(r.user_id for r in rows), *(d for ds in devices.values() for d in ds)})
    marks = ",".join("?" * len(cohorts))
    members: set[tuple[str, str]] = set()
    for offset in range(0, len(everyone), 900):
        chunk = everyone[offset : offset + 900]
        members.update(
            db.fetchall_as(
                conn,
                f"SELECT cohort, member FROM cohort_members WHERE env_id = ? AND cohort IN ({marks}) "
                f"AND member IN ({','.join('?' * len(chunk))})",
                (env_id, *cohorts, *chunk),
                _Member,
            )
        )
    return members
