"""``magpie phone reindex``: numbers stored before the blind index existed become findable by 080 opt-outs.

Each test runs on SQLite and PostgreSQL against the app's own store, with the CLI as a separate
process (the data key read from the same data directory), as an operator would run it beside a
live server.
"""

from __future__ import annotations

import json
from typing import Any

from magpie.config import Settings
from magpie.store.crypto import Cipher
from tests.dispatch.test_messages import setup, user
from tests.sdk.batches import send, track_event
from tests.support import AppClient, Env, magpie_cli

OPT_OUT = {"providers": {"nhn": {"webhookSecret": "s3cret"}}}


def _reindex(settings: Settings, *args: str) -> dict[str, Any]:
    done = magpie_cli(
        "phone", "reindex", "--json", *args, data_dir=settings.data_dir, database_url=settings.database_url_override
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _opt_out(client: AppClient, env: Env, number: str) -> int:
    response = client.post(f"/v1/gateways/nhn/opt-outs/{env.name}?secret=s3cret", json={"recipientNo": number})
    assert response.status_code == 200, response.text
    return int(response.json().get("unsubscribed", 0))


def _sms_marketing(client: AppClient, env: Env, user_id: str) -> str:
    return str(client.user(env, user_id)["consents"]["sms"]["marketing"]["status"])


def _index_rows(client: AppClient, env: Env) -> list[tuple[str, str]]:
    db = client.app.db
    with db.transaction(write=False) as conn:
        rows = db.fetchall(
            conn, "SELECT user_id, phone_hmac FROM phone_index WHERE env_id = ? ORDER BY user_id", (env.id,)
        )
    return [(str(r[0]), str(r[1])) for r in rows]


def _forget_index(client: AppClient, env: Env) -> None:
    """The state a store upgraded past 0005_phone_channels starts in: numbers, and no index rows."""
    db = client.app.db
    with db.transaction() as conn:
        db.execute(conn, "DELETE FROM phone_index WHERE env_id = ?", (env.id,))


def test_phone_reindex_makes_numbers_from_before_the_index_opt_out(
    client: AppClient, env: Env, settings: Settings
) -> None:
    setup(client, env, OPT_OUT)
    user(client, env, "old", sms_marketing="SUBSCRIBED")  # 010-1111-2222
    user(client, env, "other", phone="010-9999-8888", sms_marketing="SUBSCRIBED")
    _forget_index(client, env)
    assert _opt_out(client, env, "01011112222") == 0  # not found: the reason for the command
    assert _sms_marketing(client, env, "old") == "SUBSCRIBED"

    result = _reindex(settings, "--env", env.name, "--batch", "1")
    assert (result["users"], result["added"], result["removed"], result["batches"]) == (2, 2, 0, 3), result
    assert [u for u, _ in _index_rows(client, env)] == ["old", "other"]

    assert _opt_out(client, env, "01011112222") == 1
    assert _sms_marketing(client, env, "old") == "UNSUBSCRIBED"
    assert _sms_marketing(client, env, "other") == "SUBSCRIBED"
    again = _reindex(settings, "--env", env.name)
    assert (again["added"], again["removed"]) == (0, 0), again
    assert _reindex(settings)["users"] >= 2  # every environment by default


def test_phone_reindex_replaces_a_stale_row_and_drops_one_of_a_user_without_a_number(
    client: AppClient, env: Env, settings: Settings
) -> None:
    setup(client, env, OPT_OUT)
    user(client, env, "moved", sms_marketing="SUBSCRIBED")
    user(client, env, "gone", phone="010-3333-4444", sms_marketing="SUBSCRIBED")
    user(client, env, "foreign", phone="010-5555-6666")
    good = dict(_index_rows(client, env))
    db = client.app.db
    with db.transaction() as conn:
        db.execute(conn, "UPDATE phone_index SET phone_hmac = ? WHERE user_id = 'moved'", ("0" * 64,))
        db.execute(conn, "UPDATE profiles SET phone_enc = NULL WHERE env_id = ? AND ident = 'gone'", (env.id,))
        # A number under another data key (a wrong MAGPIE_SECRET_KEY): counted, its row left alone.
        other_key = Cipher(bytes(32)).encrypt("+821055556666")
        db.execute(
            conn, "UPDATE profiles SET phone_enc = ? WHERE env_id = ? AND ident = 'foreign'", (other_key, env.id)
        )
    result = _reindex(settings)
    # At least: PostgreSQL's store is shared with other tests, whose numbers are under their own keys.
    assert result["added"] >= 1 and result["removed"] >= 2 and result["unreadable"] >= 1, result
    assert _index_rows(client, env) == [("foreign", good["foreign"]), ("moved", good["moved"])]
    assert _opt_out(client, env, "01033334444") == 0
    assert _opt_out(client, env, "01011112222") == 1


def test_phone_number_from_secured_properties_event_is_indexed(client: AppClient, env: Env) -> None:
    setup(client, env, OPT_OUT)
    user(client, env, "u1", phone=None, sms_marketing="SUBSCRIBED")
    secured = {"$set": {"$phone_number": "010-1234-5678"}}
    send(client, env, track_event("$secured_properties", user_id="u1", properties=secured))
    assert len(_index_rows(client, env)) == 1
    assert _opt_out(client, env, "01012345678") == 1
    assert _sms_marketing(client, env, "u1") == "UNSUBSCRIBED"
    send(client, env, track_event("$secured_properties", user_id="u1", properties={"$unset": {"$phone_number": "-"}}))
    assert _index_rows(client, env) == []
