"""What a broadcast needs to know of each user, in one narrow row: ``user_reach``.

One row per user (a user profile, or a user id devices were linked to): whether the user profile
exists, how many devices and live (``ACTIVE``) push tokens are linked to the user, whether a phone
number is stored, and the user's marketing and information consent on each channel as a code
(0 not given, 1 SUBSCRIBED, 2 UNSUBSCRIBED). A reachable count is then one grouped scan of this
table (``magpie.store.broadcasts``), and planning reads it a page at a time, instead of joining
devices to tokens and parsing consent JSON per user.

The rows are kept by triggers of the database on ``profiles`` and ``push_tokens``, so every path
that changes consent, a number, a device's link or a token keeps them exact, whichever process
writes; on PostgreSQL a token's change locks its device row (``FOR SHARE``), so that it and a
change of the device's link are never counted against different users. Existing stores are
back-filled here.

Revision ID: 0013_user_reach
Revises: 0011_conversion_counts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_user_reach"
down_revision = "0012_exposure_counts"
branch_labels = None
depends_on = None

CHANNELS = ("push", "kakao", "sms")
PURPOSES = ("marketing", "information")
CONSENT_COLUMNS = tuple(f"{c}_{p}" for c in CHANNELS for p in PURPOSES)
# What a reachable count groups users by.
FACTS = (*CONSENT_COLUMNS, "phone", "tokens")


def _codes(crm: str, *, sqlite: bool) -> list[str]:
    """The consent codes of a ``crm`` JSON document, in the order of CONSENT_COLUMNS."""
    codes = []
    for channel in CHANNELS:
        for purpose in PURPOSES:
            status = (
                f"json_extract({crm}, '$.{channel}.{purpose}.status')"
                if sqlite
                else f"({crm})::jsonb #>> '{{{channel},{purpose},status}}'"
            )
            codes.append(f"CASE {status} WHEN 'SUBSCRIBED' THEN 1 WHEN 'UNSUBSCRIBED' THEN 2 ELSE 0 END")
    return codes


_ALL = ", ".join(CONSENT_COLUMNS)
_SET_FROM_EXCLUDED = ", ".join(f"{c} = excluded.{c}" for c in CONSENT_COLUMNS)
_ZEROS = ", ".join(f"{c} = 0" for c in CONSENT_COLUMNS)


def _sqlite_live(device: str) -> str:
    return (
        f"(SELECT COUNT(*) FROM push_tokens t WHERE t.env_id = {device}.env_id AND t.device_id = {device}.ident "
        "AND t.status = 'ACTIVE')"
    )


def _sqlite_triggers() -> list[str]:
    new_codes = ", ".join(_codes("NEW.crm", sqlite=True))
    set_new = ", ".join(f"{c} = {v}" for c, v in zip(CONSENT_COLUMNS, _codes("NEW.crm", sqlite=True), strict=True))
    linked_of = "(SELECT linked_user FROM profiles WHERE env_id = {t}.env_id AND kind = 'd' AND ident = {t}.device_id)"
    return [
        # A user profile: its row, with its consent and number.
        "CREATE TRIGGER user_reach_user_insert AFTER INSERT ON profiles WHEN NEW.kind = 'u' BEGIN "
        f"INSERT INTO user_reach (env_id, user_id, profile, devices, tokens, phone, {_ALL}) "
        f"VALUES (NEW.env_id, NEW.ident, 1, 0, 0, NEW.phone_enc IS NOT NULL, {new_codes}) "
        f"ON CONFLICT (env_id, user_id) DO UPDATE SET profile = 1, phone = excluded.phone, {_SET_FROM_EXCLUDED}; END",
        "CREATE TRIGGER user_reach_user_update AFTER UPDATE OF crm, phone_enc ON profiles WHEN NEW.kind = 'u' "
        "AND (NEW.crm IS NOT OLD.crm OR NEW.phone_enc IS NOT OLD.phone_enc) BEGIN "
        f"UPDATE user_reach SET phone = NEW.phone_enc IS NOT NULL, {set_new} "
        "WHERE env_id = NEW.env_id AND user_id = NEW.ident; END",
        "CREATE TRIGGER user_reach_user_delete AFTER DELETE ON profiles WHEN OLD.kind = 'u' BEGIN "
        f"UPDATE user_reach SET profile = 0, phone = 0, {_ZEROS} "
        "WHERE env_id = OLD.env_id AND user_id = OLD.ident; END",
        # A device linked to a user: the user's row counts it and its live tokens.
        "CREATE TRIGGER user_reach_device_insert AFTER INSERT ON profiles WHEN NEW.kind = 'd' "
        "AND NEW.linked_user IS NOT NULL BEGIN "
        "INSERT INTO user_reach (env_id, user_id, profile, devices, tokens, phone) "
        f"VALUES (NEW.env_id, NEW.linked_user, 0, 1, {_sqlite_live('NEW')}, 0) ON CONFLICT (env_id, user_id) "
        "DO UPDATE SET devices = devices + 1, tokens = tokens + excluded.tokens; END",
        "CREATE TRIGGER user_reach_device_link AFTER UPDATE OF linked_user ON profiles WHEN NEW.kind = 'd' "
        "AND NEW.linked_user IS NOT OLD.linked_user BEGIN "
        f"UPDATE user_reach SET devices = devices - 1, tokens = tokens - {_sqlite_live('OLD')} "
        "WHERE env_id = OLD.env_id AND user_id = OLD.linked_user; "
        "INSERT INTO user_reach (env_id, user_id, profile, devices, tokens, phone) "
        f"SELECT NEW.env_id, NEW.linked_user, 0, 1, {_sqlite_live('NEW')}, 0 WHERE NEW.linked_user IS NOT NULL "
        "ON CONFLICT (env_id, user_id) DO UPDATE SET devices = devices + 1, tokens = tokens + excluded.tokens; END",
        "CREATE TRIGGER user_reach_device_delete AFTER DELETE ON profiles WHEN OLD.kind = 'd' "
        "AND OLD.linked_user IS NOT NULL BEGIN "
        f"UPDATE user_reach SET devices = devices - 1, tokens = tokens - {_sqlite_live('OLD')} "
        "WHERE env_id = OLD.env_id AND user_id = OLD.linked_user; END",
        # A live token counts for the user its device is linked to.
        "CREATE TRIGGER user_reach_token_insert AFTER INSERT ON push_tokens WHEN NEW.status = 'ACTIVE' BEGIN "
        "UPDATE user_reach SET tokens = tokens + 1 "
        f"WHERE env_id = NEW.env_id AND user_id = {linked_of.format(t='NEW')}; "
        "END",
        "CREATE TRIGGER user_reach_token_update AFTER UPDATE OF status, device_id ON push_tokens "
        "WHEN NEW.status IS NOT OLD.status OR NEW.device_id IS NOT OLD.device_id BEGIN "
        f"UPDATE user_reach SET tokens = tokens - 1 WHERE OLD.status = 'ACTIVE' AND env_id = OLD.env_id "
        f"AND user_id = {linked_of.format(t='OLD')}; "
        f"UPDATE user_reach SET tokens = tokens + 1 WHERE NEW.status = 'ACTIVE' AND env_id = NEW.env_id "
        f"AND user_id = {linked_of.format(t='NEW')}; END",
        "CREATE TRIGGER user_reach_token_delete AFTER DELETE ON push_tokens WHEN OLD.status = 'ACTIVE' BEGIN "
        "UPDATE user_reach SET tokens = tokens - 1 "
        f"WHERE env_id = OLD.env_id AND user_id = {linked_of.format(t='OLD')}; "
        "END",
    ]


_PG_LIVE = (
    "(SELECT COUNT(*) FROM push_tokens t WHERE t.env_id = {d}.env_id AND t.device_id = {d}.ident "
    "AND t.status = 'ACTIVE')"
)


def _pg_statements() -> list[str]:
    codes_added = ", ".join(_codes("a.crm", sqlite=False))
    set_new = ", ".join(f"{c} = {v}" for c, v in zip(CONSENT_COLUMNS, _codes("NEW.crm", sqlite=False), strict=True))
    # The user a token's device is linked to, the device row share-locked: a change of the device's link
    # waits for this transaction, and this one for the link's.
    linked_of = (
        "SELECT linked_user INTO linked FROM profiles WHERE env_id = {t}.env_id AND kind = 'd' "
        "AND ident = {t}.device_id FOR SHARE"
    )
    return [
        # New profiles, a statement at a time (the writer inserts a batch's profiles in one statement).
        "CREATE FUNCTION user_reach_profiles_added() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO user_reach (env_id, user_id, profile, devices, tokens, phone, {_ALL}) "
        f"SELECT a.env_id, a.ident, 1, 0, 0, CASE WHEN a.phone_enc IS NULL THEN 0 ELSE 1 END, {codes_added} "
        "FROM added a WHERE a.kind = 'u' "
        f"ON CONFLICT (env_id, user_id) DO UPDATE SET profile = 1, phone = excluded.phone, {_SET_FROM_EXCLUDED}; "
        "INSERT INTO user_reach (env_id, user_id, profile, devices, tokens, phone) "
        f"SELECT a.env_id, a.linked_user, 0, COUNT(*), SUM({_PG_LIVE.format(d='a')}), 0 FROM added a "
        "WHERE a.kind = 'd' AND a.linked_user IS NOT NULL GROUP BY a.env_id, a.linked_user "
        "ON CONFLICT (env_id, user_id) DO UPDATE SET devices = user_reach.devices + excluded.devices, "
        "tokens = user_reach.tokens + excluded.tokens; "
        "RETURN NULL; END $$",
        "CREATE TRIGGER user_reach_profiles_added AFTER INSERT ON profiles REFERENCING NEW TABLE AS added "
        "FOR EACH STATEMENT EXECUTE FUNCTION user_reach_profiles_added()",
        # A changed profile: a user's consent or number, a device's link.
        "CREATE FUNCTION user_reach_profile_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "DECLARE live integer; BEGIN "
        "IF TG_OP = 'DELETE' THEN "
        "  IF OLD.kind = 'u' THEN "
        f"    UPDATE user_reach SET profile = 0, phone = 0, {_ZEROS} "
        "    WHERE env_id = OLD.env_id AND user_id = OLD.ident; "
        "  ELSIF OLD.linked_user IS NOT NULL THEN "
        f"    UPDATE user_reach SET devices = devices - 1, tokens = tokens - {_PG_LIVE.format(d='OLD')} "
        "    WHERE env_id = OLD.env_id AND user_id = OLD.linked_user; "
        "  END IF; RETURN NULL; "
        "END IF; "
        "IF NEW.kind = 'u' THEN "
        f"  UPDATE user_reach SET phone = CASE WHEN NEW.phone_enc IS NULL THEN 0 ELSE 1 END, {set_new} "
        "  WHERE env_id = NEW.env_id AND user_id = NEW.ident; "
        "  RETURN NULL; "
        "END IF; "
        "IF OLD.linked_user IS NOT DISTINCT FROM NEW.linked_user THEN RETURN NULL; END IF; "
        f"live := {_PG_LIVE.format(d='NEW')}; "
        "IF OLD.linked_user IS NOT NULL THEN "
        "  UPDATE user_reach SET devices = devices - 1, tokens = tokens - live "
        "  WHERE env_id = OLD.env_id AND user_id = OLD.linked_user; "
        "END IF; "
        "IF NEW.linked_user IS NOT NULL THEN "
        "  INSERT INTO user_reach (env_id, user_id, profile, devices, tokens, phone) "
        "  VALUES (NEW.env_id, NEW.linked_user, 0, 1, live, 0) ON CONFLICT (env_id, user_id) "
        "  DO UPDATE SET devices = user_reach.devices + 1, tokens = user_reach.tokens + excluded.tokens; "
        "END IF; "
        "RETURN NULL; END $$",
        "CREATE TRIGGER user_reach_profile_changed AFTER UPDATE OF crm, phone_enc, linked_user ON profiles "
        "FOR EACH ROW WHEN (OLD.crm IS DISTINCT FROM NEW.crm OR OLD.phone_enc IS DISTINCT FROM NEW.phone_enc "
        "OR OLD.linked_user IS DISTINCT FROM NEW.linked_user) EXECUTE FUNCTION user_reach_profile_changed()",
        "CREATE TRIGGER user_reach_profile_deleted AFTER DELETE ON profiles "
        "FOR EACH ROW EXECUTE FUNCTION user_reach_profile_changed()",
        # Tokens: a live one counts for the user its device is linked to.
        "CREATE FUNCTION user_reach_token_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "DECLARE linked text; BEGIN "
        "IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'ACTIVE' THEN "
        f"  {linked_of.format(t='OLD')}; "
        "  UPDATE user_reach SET tokens = tokens - 1 WHERE env_id = OLD.env_id AND user_id = linked; "
        "END IF; "
        "IF TG_OP = 'UPDATE' AND NEW.status = 'ACTIVE' THEN "
        f"  {linked_of.format(t='NEW')}; "
        "  UPDATE user_reach SET tokens = tokens + 1 WHERE env_id = NEW.env_id AND user_id = linked; "
        "END IF; "
        "RETURN NULL; END $$",
        # New tokens, a statement at a time. The writer registers a token with its device row locked.
        "CREATE FUNCTION user_reach_tokens_added() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "UPDATE user_reach r SET tokens = r.tokens + x.n FROM (SELECT d.env_id, d.linked_user AS u, COUNT(*) AS n "
        "FROM added t JOIN profiles d ON d.env_id = t.env_id AND d.kind = 'd' AND d.ident = t.device_id "
        "WHERE t.status = 'ACTIVE' AND d.linked_user IS NOT NULL GROUP BY d.env_id, d.linked_user) x "
        "WHERE r.env_id = x.env_id AND r.user_id = x.u; "
        "RETURN NULL; END $$",
        "CREATE TRIGGER user_reach_tokens_added AFTER INSERT ON push_tokens REFERENCING NEW TABLE AS added "
        "FOR EACH STATEMENT EXECUTE FUNCTION user_reach_tokens_added()",
        "CREATE TRIGGER user_reach_token_changed AFTER UPDATE OF status, device_id ON push_tokens "
        "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.device_id IS DISTINCT FROM NEW.device_id) "
        "EXECUTE FUNCTION user_reach_token_changed()",
        "CREATE TRIGGER user_reach_token_deleted AFTER DELETE ON push_tokens "
        "FOR EACH ROW WHEN (OLD.status = 'ACTIVE') EXECUTE FUNCTION user_reach_token_changed()",
    ]


def _backfill(*, sqlite: bool) -> list[str]:
    phone = "phone_enc IS NOT NULL" if sqlite else "CASE WHEN phone_enc IS NULL THEN 0 ELSE 1 END"
    live = _sqlite_live("d") if sqlite else _PG_LIVE.format(d="d")
    return [
        f"INSERT INTO user_reach (env_id, user_id, profile, devices, tokens, phone, {_ALL}) "
        f"SELECT env_id, ident, 1, 0, 0, {phone}, {', '.join(_codes('crm', sqlite=sqlite))} "
        "FROM profiles WHERE kind = 'u'",
        "INSERT INTO user_reach (env_id, user_id, profile, devices, tokens, phone) "
        f"SELECT d.env_id, d.linked_user, 0, COUNT(*), SUM({live}), 0 FROM profiles d "
        "WHERE d.kind = 'd' AND d.linked_user IS NOT NULL GROUP BY d.env_id, d.linked_user "
        "ON CONFLICT (env_id, user_id) DO UPDATE SET devices = excluded.devices, tokens = excluded.tokens",
    ]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "user_reach",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("profile", sa.SmallInteger, nullable=False, server_default="0"),  # 1: a user profile exists
        sa.Column("devices", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tokens", sa.Integer, nullable=False, server_default="0"),  # ACTIVE tokens of those devices
        sa.Column("phone", sa.SmallInteger, nullable=False, server_default="0"),
        *(sa.Column(c, sa.SmallInteger, nullable=False, server_default="0") for c in CONSENT_COLUMNS),
        sqlite_with_rowid=False,
    )
    for statement in _backfill(sqlite=sqlite):
        op.execute(statement)
    if sqlite:
        # SQLite groups by sorting: grouped by this index's columns, a count reads the index in order instead.
        op.create_index("ix_user_reach_facts", "user_reach", ["env_id", *FACTS, "profile", "devices"])
    for statement in _sqlite_triggers() if sqlite else _pg_statements():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in (
            "user_insert",
            "user_update",
            "user_delete",
            "device_insert",
            "device_link",
            "device_delete",
            "token_insert",
            "token_update",
            "token_delete",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS user_reach_{name}")
    else:
        for trigger, table in (
            ("profiles_added", "profiles"),
            ("profile_changed", "profiles"),
            ("profile_deleted", "profiles"),
            ("tokens_added", "push_tokens"),
            ("token_changed", "push_tokens"),
            ("token_deleted", "push_tokens"),
        ):
            op.execute(f"DROP TRIGGER IF EXISTS user_reach_{trigger} ON {table}")
        for function in ("profiles_added", "profile_changed", "tokens_added", "token_changed"):
            op.execute(f"DROP FUNCTION IF EXISTS user_reach_{function}()")
    op.drop_index("ix_user_reach_facts", table_name="user_reach", if_exists=True)
    op.drop_table("user_reach")
